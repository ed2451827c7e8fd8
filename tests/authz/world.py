"""The world the authorization matrix runs in: one app per database, every principal, and
the resources each cell acts on.

Built once per test module and database (building users costs an argon2 hash each), so a
cell that changes state asks for fresh resources of its own (``Cell.fresh_*``) instead of
touching the shared ones; what a cell opens it closes again (``Cell.cleanups``).

Principals (the matrix columns; each has its own HTTP client and client address, so the
throttles of one never count against another):

- ``admin`` · ``technician`` · ``other-technician`` (in no device group, owns no session) ·
  ``colleague`` (a technician in the technician's group: sees the devices, owns no session) ·
  ``auditor``: bearer tokens carrying all of their role's scopes
- ``supervisor``: a bearer token of a supervisor, member of the technician's group: sees the
  live queue, reads, watches, ends and revokes sessions there (with a reason); changes nothing
  else
- ``admin-cookie``: a browser session (cookie) that sends the CSRF token on unsafe methods;
  ``admin-cookie-no-csrf``: the same kind of browser, without the CSRF token
- ``end-user``: holds only a consent link token (and its short code); on the consent API
  that token is the credential, everywhere else it is sent as a bearer and must be refused
- ``admin-one-time-password``: an admin's browser (with CSRF) logged in with a one-time
  password: refused everywhere but ``/auth/me``, ``/auth/password`` and ``/auth/logout``
- ``anonymous``: no credentials at all
- ``admin-revoked-token``: an admin's token, revoked; ``disabled-admin``: an unrevoked token
  of an admin whose account is disabled: both treated like no credentials at all
- ``admin-tickets-read`` · ``tech-tickets-read``: an admin's and a technician's token
  created with the single scope ``tickets:read``
- ``tech-all-scopes``: a technician's token created with every scope there is: the role
  caps it, so it must get exactly what ``technician`` gets
- ``system-a`` · ``system-b``: ticket-system tokens; the world's tickets belong to system A
  (``helpdesk``), one ticket belongs to system B; system A also holds the signing secret of
  its inbound webhook
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select, update

from broker.auth.models import ApiToken, User
from broker.auth.permissions import Scope
from broker.auth.secrets import token_hash
from broker.connectors import signing
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup, GroupMember
from broker.sessions import service as sessions_service
from tests.factories import bearer, login, make_device, make_group, make_token, make_user

SYSTEM_A = "helpdesk"
SYSTEM_B = "otherdesk"
HOOK_SYSTEM = "hookdesk"  # system A's inbound webhook, configured with HOOK_SECRET
HOOK_SECRET = "authz-inbound-hook-secret-0123456789"
TICKET_ID = "HD-4711"
END_USER_NAME = "Erika Mustermann"

PRINCIPALS = (
    "admin",
    "admin-cookie",
    "admin-cookie-no-csrf",
    "admin-one-time-password",
    "technician",
    "other-technician",
    "colleague",
    "auditor",
    "supervisor",
    "end-user",
    "anonymous",
    "admin-revoked-token",
    "disabled-admin",
    "admin-tickets-read",
    "tech-tickets-read",
    "tech-all-scopes",
    "system-a",
    "system-b",
)
ONE_TIME = "admin-one-time-password"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Caller:
    """One principal: its own client, and what it sends to authenticate."""

    name: str
    client: httpx.AsyncClient
    token: str | None = None  # bearer secret (for end-user: the consent link token)
    csrf: str | None = None  # cookie principals that send the CSRF token
    user: User | None = None
    password: str | None = None

    def headers(self, method: str) -> dict[str, str]:
        headers = bearer(self.token) if self.token else {}
        if self.csrf and method in UNSAFE:
            headers["X-CSRF-Token"] = self.csrf
        return headers


@dataclass
class Consent:
    session_id: str
    token: str
    code: str


@dataclass
class World:
    app: Any
    callers: dict[str, Caller]
    users: dict[str, User]
    group: DeviceGroup  # technician's and colleague's group (other-technician is not a member)
    spare_group: DeviceGroup  # membership changes happen here
    device: Device  # in ``group``
    session_id: str  # the technician's approved session on the world ticket, with a recording
    consent: Consent  # the end user's request (awaiting consent)
    login_account: tuple[str, str]  # username and password anyone may log in with
    opened: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def client(self, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://broker.test")
        self.opened.append(client.aclose)
        return client

    @property
    def tech(self) -> Caller:
        return self.callers["technician"]

    @property
    def tech_id(self) -> str:
        return self.users["technician"].id

    @property
    def admin(self) -> Caller:
        return self.callers["admin"]

    async def aclose(self) -> None:
        for close in reversed(self.opened):
            await close()


async def build_world(app: Any) -> World:
    tech, _ = await make_user(app, "technician", username="tech-own")
    other, _ = await make_user(app, "technician", username="tech-other")
    admin, admin_pw = await make_user(app, "admin", username="admin-main")
    auditor, _ = await make_user(app, "auditor", username="auditor-main")
    colleague, _ = await make_user(app, "technician", username="tech-colleague")
    supervisor, _ = await make_user(app, "supervisor", username="supervisor-main")
    group = await make_group(app, [tech, colleague, supervisor], name="authz-group")
    spare = await make_group(app, [], name="authz-spare")
    device = await make_device(app, group, name="pc-authz")
    world = World(
        app=app,
        callers={},
        users={
            "technician": tech,
            "other-technician": other,
            "colleague": colleague,
            "admin": admin,
            "auditor": auditor,
            "supervisor": supervisor,
        },
        group=group,
        spare_group=spare,
        device=device,
        session_id="",
        consent=Consent("", "", ""),
        login_account=("", ""),
    )
    login_user, login_password = await make_user(app, "technician", username="tech-login")
    world.login_account = (login_user.username, login_password)
    tokens = {
        "admin": await make_token(app, admin),
        "technician": await make_token(app, tech),
        "other-technician": await make_token(app, other),
        "colleague": await make_token(app, colleague),
        "auditor": await make_token(app, auditor),
        "supervisor": await make_token(app, supervisor),
        "admin-tickets-read": await make_token(app, admin, scopes=["tickets:read"]),
        "tech-tickets-read": await make_token(app, tech, scopes=["tickets:read"]),
        # every scope there is; the technician's role must cap it at the technician's grants
        "tech-all-scopes": await make_token(app, tech, scopes=sorted(s.value for s in Scope)),
        "admin-revoked-token": await revoked_token(app, admin),
        "disabled-admin": await disabled_token(app),
        "system-a": await make_token(app, None, system=SYSTEM_A),
        "system-b": await make_token(app, None, system=SYSTEM_B),
    }
    for index, name in enumerate(PRINCIPALS):
        caller = Caller(name, world.client(f"198.51.100.{20 + index}"), token=tokens.get(name))
        world.callers[name] = caller
    world.callers["admin-cookie"].csrf = await login(
        world.callers["admin-cookie"].client, "admin-main", admin_pw
    )
    await login(world.callers["admin-cookie-no-csrf"].client, "admin-main", admin_pw)
    one_time = await admin_browser(world, "198.51.100.19", csrf=True, one_time=True)
    one_time.name = "admin-one-time-password"
    world.callers[one_time.name] = one_time

    # A ticket of system B, which system A's token must never see.
    other_ticket = await world.admin.client.post(
        "/api/v1/tickets",
        json={"system": SYSTEM_B, "external_id": "OD-1", "subject": "VPN", "requester": "Max"},
        headers=world.admin.headers("POST"),
    )
    assert other_ticket.status_code == 201, other_ticket.text

    # The shared session: approved, with a sealed terminal recording.
    shared = await open_consent(world)
    await decide(world, shared.token)
    world.session_id = shared.session_id
    await record_terminal(world, shared.session_id)
    world.consent = await open_consent(world)
    world.callers["end-user"].token = world.consent.token
    return world


async def admin_browser(world: World, ip: str, *, csrf: bool, one_time: bool) -> Caller:
    """A browser logged in as a new admin; ``one_time``: with a one-time password, which
    admits only ``/auth/me``, ``/auth/password`` and ``/auth/logout`` until it is changed."""
    password = secrets.token_urlsafe(12)
    user, _ = await make_user(world.app, "admin", password=password)
    if one_time:
        async with world.app.state.sessionmaker() as db:
            await db.execute(
                update(User).where(User.id == user.id).values(must_change_password=True)
            )
            await db.commit()
    client = world.client(ip)
    token = await login(client, user.username, password)
    caller = Caller("admin-browser", client, csrf=token if csrf else None)
    caller.user, caller.password = user, password
    return caller


async def revoked_token(app: Any, owner: User) -> str:
    """A token of ``owner`` with all of the role's scopes, revoked."""
    secret = await make_token(app, owner)
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == token_hash(secret))
            .values(revoked_at=utcnow())
        )
        await db.commit()
    return secret


async def disabled_token(app: Any) -> str:
    """A valid token (all scopes) of an admin whose account has since been disabled."""
    user, _ = await make_user(app, "admin", username="admin-disabled")
    secret = await make_token(app, user)
    async with app.state.sessionmaker() as db:
        await db.execute(update(User).where(User.id == user.id).values(is_active=False))
        await db.commit()
    return secret


async def open_consent(world: World, external_id: str = TICKET_ID) -> Consent:
    """A session of the technician awaiting consent, on a ticket of system A."""
    response = await world.tech.client.post(
        "/api/v1/sessions",
        json={
            "ticket": {"system": SYSTEM_A, "external_id": external_id, "subject": "Printer"},
            "device_id": world.device.id,
            "reason": "Printer driver keeps crashing after the update",
            "capabilities": ["view", "control"],
            "duration_minutes": 30,
        },
        headers=world.tech.headers("POST"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    token = body["consent"]["url"].rsplit("/", 1)[1]
    return Consent(body["id"], token, body["consent"]["code"])


async def decide(world: World, token: str, decision: str = "approve") -> None:
    response = await world.callers["end-user"].client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": decision, "name": END_USER_NAME}
    )
    assert response.status_code == 200, response.text


async def record_terminal(world: World, session_id: str) -> None:
    """A short sealed recording of the session's terminal, written the way the gateway does."""
    gateway = world.app.state.gateway
    async with world.app.state.sessionmaker() as db:
        record, _ = await sessions_service.load(db, session_id)
    recorder = await gateway.open_recorder(record)
    await recorder.output(b"$ lpstat -p\r\nprinter hp-4 is idle\r\n")
    await recorder.close("session ended")


def signed_webhook(secret: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "ticket.updated", "ticket": {"id": "HOOK-1"}}).encode()
    headers = signing.signed_headers(
        secret, body, delivery_id=secrets.token_hex(8), event_type="ticket.updated"
    )
    return body, headers


@dataclass
class Cell:
    """What one cell of the matrix acts as, and the fresh resources it asked for."""

    world: World
    principal: str
    method: str
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    caller_override: Caller | None = None

    @property
    def caller(self) -> Caller:
        return self.caller_override or self.world.callers[self.principal]

    @property
    def app(self) -> Any:
        return self.world.app

    async def fresh_consent(self, state: str = "awaiting_consent") -> Consent:
        """A new session of the technician in ``state``; closed again after the cell."""
        world = self.world
        consent = await open_consent(world)
        # Keep the technician under the concurrency limit: revoke what is still open.
        await self.revoke_later(consent.session_id)
        if state in ("approved", "active", "ended"):
            await decide(world, consent.token)
        if state in ("active", "ended"):
            started = await world.tech.client.post(
                f"/api/v1/sessions/{consent.session_id}/start", headers=world.tech.headers("POST")
            )
            assert started.status_code == 200, started.text
        if state == "ended":
            ended = await world.tech.client.post(
                f"/api/v1/sessions/{consent.session_id}/end", headers=world.tech.headers("POST")
            )
            assert ended.status_code == 200, ended.text
        return consent

    async def fresh_pending_approval(self) -> str:
        """A new request of the technician waiting for a second approval: the world group's
        policy asks for one while the request is made, and is switched off again."""
        world = self.world

        async def policy(on: bool) -> None:
            async with self.app.state.sessionmaker() as db:
                await db.execute(
                    update(DeviceGroup)
                    .where(DeviceGroup.id == world.group.id)
                    .values(approval_required=on)
                )
                await db.commit()

        await policy(True)
        try:
            response = await world.tech.client.post(
                "/api/v1/sessions",
                json={
                    "ticket": {"system": SYSTEM_A, "external_id": TICKET_ID, "subject": "VPN"},
                    "device_id": world.device.id,
                    "reason": "Bank transfer module needs a config change",
                    "capabilities": ["view"],
                    "duration_minutes": 30,
                },
                headers=world.tech.headers("POST"),
            )
        finally:
            await policy(False)
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "awaiting_approval", response.text
        session_id: str = response.json()["id"]
        await self.revoke_later(session_id)
        return session_id

    async def fresh_session(self, state: str) -> str:
        return (await self.fresh_consent(state)).session_id

    async def fresh_user(self, role: str = "technician") -> User:
        user, _ = await make_user(self.app, role)
        return user

    async def fresh_member(self) -> str:
        """The id of a new technician just added to the spare group."""
        user = await self.fresh_user()
        async with self.app.state.sessionmaker() as db:
            db.add(GroupMember(group_id=self.world.spare_group.id, user_id=user.id))
            await db.commit()
        return user.id

    async def fresh_playback_request(self) -> str:
        """A pending replay request of the world's session, asked by a second auditor (so the
        world's auditor is the different auditor who may decide it)."""
        other = await self.fresh_user("auditor")
        token = await make_token(self.app, other)
        client = self.world.client("198.51.100.90")
        response = await client.post(
            "/api/v1/audit/playback-requests",
            json={"session_id": self.world.session_id, "reason": "matrix second auditor"},
            headers=bearer(token),
        )
        assert response.status_code == 201, response.text
        request_id: str = response.json()["id"]
        return request_id

    async def revoke_later(self, session_id: str) -> None:
        async def _close() -> None:
            await self.world.admin.client.post(
                f"/api/v1/sessions/{session_id}/revoke",
                json={"reason": "authz matrix clean-up"},
                headers=self.world.admin.headers("POST"),
            )

        self.cleanups.append(_close)

    async def fresh_device(self) -> Device:
        return await make_device(self.app, self.world.group)

    async def fresh_token(self) -> str:
        """The id of a new token (of the auditor) that nobody has revoked yet."""
        secret = await make_token(self.app, self.world.users["auditor"], scopes=["audit:read"])
        async with self.app.state.sessionmaker() as db:
            row = await db.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(secret)))
        assert row is not None
        return str(row.id)

    async def fresh_ticket_with_events(self) -> str:
        """The external id of a new ticket of system A whose audit stream has events."""
        external_id = f"HD-{secrets.token_hex(4)}"
        response = await self.world.admin.client.post(
            "/api/v1/tickets",
            json={
                "system": SYSTEM_A,
                "external_id": external_id,
                "subject": "Laptop fan",
                "requester": END_USER_NAME,
            },
            headers=self.world.admin.headers("POST"),
        )
        assert response.status_code == 201, response.text
        return external_id

    def own_client(self) -> Caller:
        """The caller's credentials (cookies too) on a client of its own, so that what the
        response sets (a login's cookie) stays out of the shared principal's jar."""
        shared = self.world.callers[self.principal]
        client = self.world.client("198.51.100.91")
        client.cookies = httpx.Cookies(shared.client.cookies)
        self.caller_override = Caller(self.principal, client, token=shared.token, csrf=shared.csrf)
        return self.caller_override

    async def fresh_browser(self) -> Caller:
        """A newly logged-in admin browser of the cell's kind (for cells that end or change
        their own login)."""
        caller = await admin_browser(
            self.world,
            "198.51.100.90",
            csrf=self.principal != "admin-cookie-no-csrf",
            one_time=self.principal == "admin-one-time-password",
        )
        caller.name = self.principal
        self.caller_override = caller
        return caller
