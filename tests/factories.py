"""Async factories for test data, writing through the app's own database session.

They create rows the way the services do (audited where the service audits), so tests
start from realistic state without going through HTTP for every precondition.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any

import httpx

from broker.auth.models import ApiToken, User
from broker.auth.permissions import grants_for
from broker.auth.secrets import new_token, token_hash
from broker.auth.service import create_user
from broker.devices.models import Device, DeviceGroup, GroupMember

# argon2id at its cheapest, which only the test environment accepts: the suite hashes
# thousands of passwords (~70 ms each at the production cost). The production cost is
# exercised by tests/auth/test_password_cost.py and by every test that starts `serve`.
CHEAP_PASSWORD_HASH: dict[str, Any] = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 64,
    "password_hash_parallelism": 1,
}


def cheap_password_env() -> dict[str, str]:
    """:data:`CHEAP_PASSWORD_HASH` as the environment a ``supportbroker`` command reads."""
    return {f"SUPPORTBROKER_{name.upper()}": str(v) for name, v in CHEAP_PASSWORD_HASH.items()}


# Each test user's password, by user id: page tests log in through the login form with it.
PASSWORDS: dict[str, str] = {}


async def make_user(
    app: Any, role: str = "technician", username: str | None = None, password: str | None = None
) -> tuple[User, str]:
    password = password or secrets.token_urlsafe(12)
    username = username or f"{role}-{secrets.token_hex(3)}"
    async with app.state.sessionmaker() as db:
        user = await create_user(
            db, username=username, display_name=username.title(), role=role, password=password
        )
        await db.commit()
    PASSWORDS[user.id] = password
    return user, password


async def make_token(
    app: Any,
    user: User | None = None,
    scopes: list[str] | None = None,
    system: str | None = None,
) -> str:
    """A bearer token for ``user`` (all of their role's scopes unless given) or a ticket system."""
    secret = new_token("sbt")
    role = user.role if user else "integration"
    async with app.state.sessionmaker() as db:
        db.add(
            ApiToken(
                name=f"test-{secrets.token_hex(2)}",
                token_hash=token_hash(secret),
                prefix=secret[:10],
                owner_id=user.id if user else None,
                system=system,
                scopes=scopes if scopes is not None else sorted(grants_for(role)),
            )
        )
        await db.commit()
    return secret


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Log ``client`` in through the API; returns the CSRF token to send on writes."""
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


async def make_group(app: Any, members: list[User] = (), **policy: Any) -> DeviceGroup:  # type: ignore[assignment]
    async with app.state.sessionmaker() as db:
        group = DeviceGroup(name=policy.pop("name", f"group-{secrets.token_hex(3)}"), **policy)
        db.add(group)
        await db.flush()
        for member in members:
            db.add(GroupMember(group_id=group.id, user_id=member.id))
        await db.commit()
    return group


async def make_device(app: Any, group: DeviceGroup, **fields: Any) -> Device:
    values: dict[str, Any] = {
        "name": f"pc-{secrets.token_hex(3)}",
        "provider": "null",
        "provider_device_id": secrets.token_hex(8),
        "owner_name": "Erika Mustermann",
        "owner_contact": "erika@example.test",
    }
    values.update(fields)
    async with app.state.sessionmaker() as db:
        device = Device(group_id=group.id, **values)
        db.add(device)
        await db.commit()
    return device


# --- sessions and consent -------------------------------------------------------------


class Desk:
    """A technician with a bearer token, a device group they serve and a device in it."""

    def __init__(self, tech: User, token: str, group: DeviceGroup, device: Device) -> None:
        self.tech, self.token, self.group, self.device = tech, token, group, device

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_desk(app: Any, **group_policy: Any) -> Desk:
    tech, _ = await make_user(app, "technician")
    token = await make_token(app, tech)
    group = await make_group(app, [tech], **group_policy)
    device = await make_device(app, group)
    return Desk(tech, token, group, device)


def session_body(device: Device, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": {"system": "helpdesk", "external_id": "HD-4711", "subject": "Printer offline"},
        "device_id": device.id,
        "reason": "Printer driver keeps crashing after the update",
        "capabilities": ["view", "control"],
        "duration_minutes": 30,
    }
    body.update(overrides)
    return body


async def request_session(
    client: httpx.AsyncClient, desk: Desk, **overrides: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/sessions", json=session_body(desk.device, **overrides), headers=desk.headers
    )


async def open_session(client: httpx.AsyncClient, desk: Desk, **overrides: Any) -> dict[str, Any]:
    """A session awaiting consent (201 asserted); its JSON includes ``consent``."""
    response = await request_session(client, desk, **overrides)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def consent_token(created: dict[str, Any]) -> str:
    url: str = created["consent"]["url"]
    return url.rsplit("/", 1)[1]


async def update_session_row(app: Any, session_id: str, **values: Any) -> None:
    """Change a session row directly (move time, put it into a state for a test)."""
    from sqlalchemy import update

    from broker.sessions.models import RemoteSession

    async with app.state.sessionmaker() as db:
        await db.execute(
            update(RemoteSession).where(RemoteSession.id == session_id).values(**values)
        )
        await db.commit()


async def audit_events(app: Any, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event_type, payload)`` of every event in ``stream``, oldest first."""
    async with app.state.sessionmaker() as db:
        conn = await db.connection()
        events = await app.state.audit_log.read_stream(conn, stream)
    return [(e.event_type, e.payload) for e in events]


async def while_verification_is_held(
    app: Any, monkeypatch: Any, request: Awaitable[httpx.Response]
) -> httpx.Response:
    """Send ``request`` (one that verifies the whole log), hold its verification as a long
    one would be held, and require another writer to get through meanwhile; the response.

    Without the request's transaction ended first, the writer waits on SQLite's write lock
    until the 30 s busy timeout, so the 20 s limit here fails the test.
    """
    from audit.store import AuditLog

    started, release = asyncio.Event(), asyncio.Event()
    verify_log = AuditLog.verify_log

    async def held(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        started.set()
        await release.wait()
        return await verify_log(self, *args, **kwargs)

    monkeypatch.setattr(AuditLog, "verify_log", held)
    verifying = asyncio.ensure_future(request)
    try:
        await asyncio.wait_for(started.wait(), 60)
        user, _ = await asyncio.wait_for(make_user(app, "technician"), 20)
        assert user.id
    finally:
        release.set()
        response = await verifying
    return response
