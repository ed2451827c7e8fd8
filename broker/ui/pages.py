"""All of the login, technician and admin pages in one router (include at the root).

The auditor and report pages (``broker.ui.auditor``, ``broker.ui.reports``) are included
separately; they share the layout (``web/templates/base.html``) and the login page.
"""

from __future__ import annotations

from fastapi import APIRouter

from broker.ui import (
    account,
    admin,
    admin_groups,
    approvals,
    console,
    devices,
    experts,
    login,
    oversight,
    sso,
)
from broker.ui.common import assets

router = APIRouter(include_in_schema=False)
for part in (
    assets,
    login.router,
    sso.router,
    account.router,
    console.router,
    experts.router,
    oversight.router,
    approvals.router,
    admin.router,
    admin_groups.router,
    devices.router,
):
    router.include_router(part)
