"""The policy that gates a session request, before anything is locked or written.

Reason present and long enough, device inside the technician's groups, the provider the
device is reached through and the capabilities it can give (a 422 otherwise, not audited:
a malformed request, not a policy), unattended only where the group allows it, and the
ticket as its system sees it: it must exist and be open (and, where the system's config
asks, be assigned to the technician, or to nobody in person and to one of their groups).
Every other refusal is audited as ``policy.denied`` with the rule that refused (``ticket_closed``,
``ticket_not_assigned``, ``ticket_unknown``, ``ticket_unverified`` for the ticket) and
committed although the request fails, so an auditor sees attempts as well as sessions.
The concurrency limit is checked by the caller under the technician's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.auth.service import get_user
from broker.connectors import service as connectors
from broker.connectors.base import TicketInfo
from broker.context import settings_of
from broker.devices.models import Device, DeviceGroup
from broker.devices.service import get_device_for, get_group, list_groups
from broker.errors import ConnectorError, NotFound, PolicyDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.sessions.schemas import SessionCreate
from broker.sessions.states import Capability

# What a provider can give, by provider name (the providers' own declaration, handed in by
# the flow: the sessions domain stands below the providers and does not import them).
Offered = Callable[[str], Collection[str]]


@dataclass(frozen=True)
class Admitted:
    """A request that passed the gate, with what the checks looked up on the way."""

    reason: str
    device: Device
    provider: str
    group: DeviceGroup
    ticket: TicketInfo


async def record_denial(
    db: AsyncSession, principal: Principal, ref: str, rule: str, message: str, **data: Any
) -> None:
    await record_event(
        db,
        EventType.policy_denied,
        ticket=ref,
        actor=principal.actor(),
        data={"rule": rule, "detail": message, **data},
    )


async def deny(
    db: AsyncSession, principal: Principal, ref: str, rule: str, message: str, **data: Any
) -> NoReturn:
    await record_denial(db, principal, ref, rule, message, **data)
    raise PolicyDenied(message, keep_changes=True)


def _require_offered(provider: str, asked: set[str], gives: Collection[str]) -> None:
    """A 422 naming what the provider offers, for capabilities it cannot give."""
    order = list(Capability)
    missing = [c.value for c in order if c.value in asked - set(gives)]
    if missing:
        offered = ", ".join(c.value for c in order if c.value in gives)
        raise ValidationFailed(
            f"capabilities: provider {provider!r} cannot give {', '.join(missing)}; "
            f"it offers {offered or 'nothing'}"
        )


async def check_request(
    db: AsyncSession, principal: Principal, req: SessionCreate, ref: str, *, offered: Offered
) -> Admitted:
    settings = settings_of(db)
    if req.duration_minutes > settings.max_session_minutes:
        raise ValidationFailed(
            f"duration_minutes: at most {settings.max_session_minutes} minutes are allowed"
        )
    reason = req.reason.strip()
    if not reason:
        await deny(db, principal, ref, "reason_required", "a reason is required: say why")
    if len(reason) < settings.reason_min_length:
        await deny(
            db,
            principal,
            ref,
            "reason_too_short",
            f"the reason must be at least {settings.reason_min_length} characters",
        )
    try:
        device = await get_device_for(db, principal, req.device_id)
    except PolicyDenied as exc:
        await deny(db, principal, ref, "device_outside_groups", exc.detail, device=req.device_id)
    if device.retired_at is not None:
        await deny(
            db,
            principal,
            ref,
            "device_retired",
            f"device {device.name!r} is retired; it takes no new sessions",
            device=device.id,
        )
    provider = req.provider or device.provider
    if provider != device.provider:
        raise ValidationFailed(
            f"device {device.name!r} is reached through provider {device.provider!r}, "
            f"not {provider!r}"
        )
    _require_offered(provider, {c.value for c in req.capabilities}, offered(provider))
    group = await get_group(db, device.group_id)
    if req.unattended and not group.unattended_allowed:
        await deny(
            db,
            principal,
            ref,
            "unattended_not_allowed",
            f"device group {group.name!r} does not allow unattended access",
            device=device.id,
        )
    await check_device_rights(db, principal, req, ref, device)
    info = await check_ticket(db, principal, req, ref)
    return Admitted(reason, device, provider, group, info)


async def check_device_rights(
    db: AsyncSession, principal: Principal, req: SessionCreate, ref: str, device: Device
) -> None:
    """Refuse rights the device said it cannot give (its agent's words: no display,
    Wayland, macOS, ...), so the technician learns why before the user is asked."""
    missing = sorted(c.value for c in req.capabilities if c.value in device.unavailable)
    if missing:
        why = "; ".join(f"{c}: {device.unavailable[c]}" for c in missing)
        await deny(
            db,
            principal,
            ref,
            "capability_unavailable",
            f"device {device.name!r} cannot give {', '.join(missing)} ({why})",
            device=device.id,
        )


async def technician_identity(
    db: AsyncSession, principal: Principal
) -> tuple[list[str], list[str]]:
    """The names a help desk may know the technician by (login, display name, e-mail) and
    the names of their device groups: what ``require_assignee``/``accept_group`` compare."""
    user = await get_user(db, principal.user_id or "")
    names = [n for n in (user.username, user.display_name, user.email) if n]
    return names, [g.name for g in await list_groups(db, principal)]


async def check_ticket(
    db: AsyncSession, principal: Principal, req: SessionCreate, ref: str
) -> TicketInfo:
    """The ticket as its system sees it (standalone: as typed, closed if a webhook said so).

    The connector is asked with ``require_open=False`` and the open check is made here, so
    the audit names the rule that refused (closed, or assigned to someone else).
    """
    names, groups = await technician_identity(db, principal)
    try:
        info = await connectors.lookup_for_session(
            db,
            req.ticket.system,
            req.ticket.external_id,
            technician=names,
            technician_groups=groups,
            require_open=False,
        )
    except PolicyDenied as exc:
        await deny(db, principal, ref, "ticket_not_assigned", exc.detail)
    except NotFound as exc:
        await record_denial(db, principal, ref, "ticket_unknown", exc.detail)
        raise NotFound(exc.detail, keep_changes=True) from exc
    except ConnectorError as exc:
        # The system could not be asked: refuse rather than connect on an unchecked ticket.
        await record_denial(db, principal, ref, "ticket_unverified", exc.detail)
        raise ConnectorError(exc.detail, keep_changes=True) from exc
    if not info.is_open:
        state = info.raw_state or info.state
        await deny(db, principal, ref, "ticket_closed", f"ticket {ref} is {state}; reopen it first")
    return info
