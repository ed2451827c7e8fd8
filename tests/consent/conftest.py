"""Fixtures for the consent tests; the page router is mounted if the app does not yet."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def pages(app: Any) -> Any:
    from starlette.routing import NoMatchFound

    try:
        app.url_path_for("enter_code")
    except NoMatchFound:
        from broker.consent.pages import router

        app.include_router(router)
    return app
