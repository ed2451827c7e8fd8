"""The device inventory pages: admins list, add, rename, move and retire devices; technicians
see their groups' devices read-only.

- ``/ui/devices``: search (name, provider id, asset tag, owner), filters (group, provider,
  online, retired) and paging; each row shows the agent's presence from the gateway;
- ``/ui/devices/{id}``: provider, asset tag, owner, agent version, online / last seen, and
  the most recent sessions (a technician sees their own among them).

The pages call the same services and flows as the ``/api/v1/devices`` API, so the same rules
and audit events apply; every form is a POST with ``csrf_token``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.devices import service as devices
from broker.devices.repository import DeviceFilter
from broker.devices.schemas import DeviceCreate, DeviceUpdate
from broker.errors import BrokerError
from broker.flows import devices as inventory
from broker.ui.admin import invalid
from broker.ui.common import is_admin, is_technician
from broker.ui.kit import page, page_user, refused

router = APIRouter(include_in_schema=False)
BASE = "/ui/devices"
PAGE_SIZE = 25
EDITABLE = ("name", "group_id", "asset_tag", "owner_name", "owner_contact")


def _may_see(principal: Principal) -> bool:
    return is_admin(principal) or is_technician(principal)


def _filters(request: Request) -> tuple[DeviceFilter, dict[str, str], int]:
    """The list's filters from the query string (unknown values are ignored, not refused:
    it is a page, and the form only offers the known ones)."""
    q = request.query_params
    shown = {k: q.get(k, "").strip()[:200] for k in ("q", "group", "provider", "online", "retired")}
    online = {"yes": True, "no": False}.get(shown["online"])
    retired = {"yes": True, "any": None}.get(shown["retired"], False)
    page_no = int(q["page"]) if q.get("page", "").isdigit() and int(q["page"]) > 0 else 1
    found = DeviceFilter(
        q=shown["q"] or None,
        group_id=shown["group"] or None,
        provider=shown["provider"] or None,
        online=online,
        retired=retired,
    )
    return found, shown, page_no


async def _list_page(
    request: Request, db: DbSession, who: Principal, status: int = 200, **extra: Any
) -> HTMLResponse:
    filters, shown, page_no = _filters(request)
    items, total = await inventory.inventory(
        db, who, filters, limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE
    )
    pages = max(1, -(-total // PAGE_SIZE))
    keep = {k: v for k, v in shown.items() if v}

    def link(n: int) -> str:
        return BASE + "?" + urlencode({**keep, "page": n})

    return page(
        request,
        "devices/list.html",
        status,
        title="Devices",
        items=items,
        total=total,
        shown=shown,
        page_no=page_no,
        pages=pages,
        prev_link=link(page_no - 1) if page_no > 1 else None,
        next_link=link(page_no + 1) if page_no < pages else None,
        groups=await devices.list_groups(db, who),
        providers=devices.known_providers(),
        can_edit=is_admin(who),
        **extra,
    )


@router.get(BASE, response_model=None)
async def device_list(
    request: Request, who: Annotated[Principal, page_user(_may_see)], db: DbSession
) -> Response:
    return await _list_page(request, db, who)


def _fields(form: FormData, names: tuple[str, ...]) -> dict[str, Any]:
    """Form text as the schemas expect it: an empty optional field is a cleared one."""
    return {n: (str(form.get(n, "")).strip() or None) for n in names if n in form}


@router.post(BASE, response_model=None)
async def device_add(
    request: Request, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    form = await request.form()
    names = ("name", "group_id", "provider", "provider_device_id", *EDITABLE[2:])
    try:
        body = DeviceCreate.model_validate(
            {k: v for k, v in _fields(form, names).items() if v is not None}
        )
        device = await devices.create_device(db, actor=who.actor(), **body.model_dump())
    except ValidationError as exc:
        return await _list_page(request, db, who, 422, error=invalid(exc))
    except BrokerError as exc:
        if not exc.keep_changes:
            await db.rollback()
        return await _list_page(request, db, who, 409 if exc.code == "conflict" else 422,
                                error=exc.detail)  # fmt: skip
    return RedirectResponse(f"{BASE}/{device.id}", status_code=303)


async def _device_page(
    request: Request, db: DbSession, who: Principal, device_id: str, status: int = 200,
    **extra: Any,
) -> HTMLResponse:  # fmt: skip
    listed, recent = await inventory.device_view(db, who, device_id)
    return page(
        request,
        "devices/device.html",
        status,
        title=f"Device {listed.device.name}",
        x=listed,
        recent=recent,
        groups=await devices.list_groups(db, who),
        can_edit=is_admin(who),
        **extra,
    )


@router.get(BASE + "/{device_id}", response_model=None)
async def device_detail(
    request: Request, device_id: str, who: Annotated[Principal, page_user(_may_see)], db: DbSession
) -> Response:
    return await _device_page(request, db, who, device_id[:36])


@router.post(BASE + "/{device_id}", response_model=None)
async def device_update(
    request: Request, device_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    """Rename, move to another group, or change asset tag and owner."""
    form = await request.form()
    try:
        body = DeviceUpdate.model_validate(_fields(form, EDITABLE))
        changes = body.model_dump(include=body.model_fields_set)
        await devices.update_device(
            db, actor=who.actor(), device_id=device_id[:36], changes=changes
        )
    except ValidationError as exc:
        return await _device_page(request, db, who, device_id[:36], 422, error=invalid(exc))
    except BrokerError as exc:
        return await refused(request, db, exc)
    return RedirectResponse(f"{BASE}/{device_id[:36]}", status_code=303)


@router.post(BASE + "/{device_id}/retire", response_model=None)
async def device_retire(
    request: Request, device_id: str, who: Annotated[Principal, page_user(is_admin)], db: DbSession
) -> Response:
    await inventory.retire_device(db, actor=who.actor(), device_id=device_id[:36])
    return RedirectResponse(f"{BASE}/{device_id[:36]}", status_code=303)
