"""The control channel of each agent link, and the poller that tells agents about sessions.

Agents → broker: hello, consent_decision (signed receipt), granted / unattended_refused (the
answer to a grant from elsewhere), end_session, file_transfer.
Broker → agents: welcome/refused, consent_request, consent_result (whether the device's own
answer was taken, and if not how the request was settled), unattended, approved_remotely
(with who approved), consent_closed (a request the device shows was denied, expired or
withdrawn elsewhere), session_ended (with why). The poller reads session state from the
database, so a decision taken by any replica or by the web consent page reaches the agent
that holds the device, and its prompt closes saying what happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.aftercommit import commit, run_committed
from broker.db.base import utcnow
from broker.devices.service import note_agent_version
from broker.errors import BrokerError
from broker.flows import approval
from broker.gateway import access, receipts, service
from broker.gateway.link import CONTROL, HELLO_TIMEOUT, AgentLink, Hub
from broker.gateway.repository import Outcome, open_sessions, outcomes
from broker.sessions import service as sessions
from broker.sessions.states import SessionState

if TYPE_CHECKING:
    from broker.devices.models import Device, DeviceGroup
    from broker.gateway.models import AgentKey

log = structlog.get_logger("broker.gateway")
# A deadline is applied a moment after it passes (the database's clock and ours may differ
# by a little; an early read would find it not yet due and sleep again).
DEADLINE_GRACE_SECONDS = 0.05
T = TypeVar("T")
# The poller wakes on every committed session change (:mod:`broker.gateway.signals`); this
# period only catches what another broker process committed.
S = SessionState


async def in_tx(
    link: AgentLink,
    work: Callable[[AsyncSession], Awaitable[T]],
    committed: Callable[[], None] | None = None,
) -> T:
    """One transaction; refusals flagged keep_changes still commit their audit record.
    ``committed`` runs right after the commit, before the work that waited for it (the
    provider's grant: :mod:`broker.db.aftercommit`)."""
    async with link.gateway.maker() as db:
        try:
            result = await work(db)
        except BrokerError as exc:
            await (commit(db) if exc.keep_changes else db.rollback())
            raise
        await db.commit()
        if committed is not None:
            committed()
        await run_committed(db)
        return result


async def handle_link(link: AgentLink) -> None:
    writer, reader, _ = await link.conn.open_session(subsystem=CONTROL, encoding=None)
    link.writer = writer
    hello = json.loads(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT))
    if "token" in hello:
        await _enroll(link, hello)
        return
    # A few identifications at a time: after a restart thousands of agents dial at once,
    # and a queue here is better than timeouts in the database pool (agents would redial).
    async with link.gateway.db_gate:
        _key, device, group = await in_tx(link, lambda db: _identify(db, link, hello))
    link.device_id = device.id
    link.record_input = group.record_input
    old = link.gateway.links.get(device.id)
    if old is not None:
        old.conn.close()
    link.gateway.links[device.id] = link
    link.gateway.presence.mark(device.id, link.gateway.node, link.ip)
    link.send(
        {
            "type": "welcome",
            "device_id": device.id,
            "device_name": device.name,
            "policy": service.policy_of(group),
            # Where a request can be answered without the agent's terminal (the code page):
            # an agent run as a service says so instead of answering by itself.
            "consent_page": f"{link.gateway.settings.base_url}/consent",
        }
    )
    link.ready.set()
    link.gateway.signals.bump()  # the poller tells this device about its open sessions now
    log.info("gateway.agent_connected", device_id=device.id)
    while line := await reader.readline():
        try:
            await _dispatch(link, json.loads(line))
        except BrokerError as exc:
            log.warning(
                "gateway.agent_message_refused",
                device_id=device.id,
                error=exc.code,
                detail=exc.detail,
            )
            link.send({"type": "error", "detail": exc.detail})


async def _identify(
    db: AsyncSession, link: AgentLink, hello: dict[str, Any]
) -> tuple[AgentKey, Device, DeviceGroup]:
    """The link's device, with the rights its agent says it cannot give noted on it."""
    key, device, group = await service.identify(db, link.fingerprint)
    service.note_unavailable(device, hello.get("unavailable"))
    note_agent_version(device, hello.get("version"))
    return key, device, group


async def _enroll(link: AgentLink, hello: dict[str, Any]) -> None:
    async def work(db: AsyncSession) -> dict[str, Any]:
        device, group = await service.enroll(
            db,
            token=str(hello["token"]),
            public_key=link.public_key,
            fingerprint=link.fingerprint,
            hostname=str(hello.get("hostname", ""))[:200],
            ip=link.ip,
        )
        service.note_unavailable(device, hello.get("unavailable"))
        note_agent_version(device, hello.get("version"))
        return {
            "type": "welcome",
            "device_id": device.id,
            "device_name": device.name,
            "policy": service.policy_of(group),
        }

    try:
        welcome = await in_tx(link, work)
    except BrokerError as exc:
        link.send({"type": "refused", "detail": exc.detail})
        await asyncio.sleep(0.2)  # let the refusal reach the agent before we hang up
        return
    link.send(welcome)
    await asyncio.sleep(0.2)


async def _dispatch(link: AgentLink, msg: dict[str, Any]) -> None:
    kind = msg.get("type")
    device_id = link.device_id
    if kind == "consent_decision":
        receipt, signature = dict(msg.get("receipt") or {}), str(msg.get("signature", ""))
        session_id = str(receipt.get("session_id"))
        approving = receipt.get("decision") == "approve"
        claims: list[access.Claim] = []

        async def apply(db: AsyncSession) -> None:
            key, device, _ = await service.identify(db, link.fingerprint)
            await approval.device_decision(
                db, device=device, key=key, receipt=receipt, signature=signature, ip=link.ip
            )
            if approving:  # this replica serves it; the technician's waiting sockets
                # start in this same commit
                await sessions.serve_from(db, session_id, link.gateway.node)
                claims.extend(await access.attach_waiting(db, link.gateway.waiting, session_id))

        if approving:  # before the commit, so the poller never mistakes it for a web approval
            link.tracked.add(session_id)
            link.confirm(session_id)  # the agent granted it before it signed the approval
        link.prompted.discard(session_id)  # answered: the result below tells the agent
        try:
            # The technician's sockets go on as soon as the approval commits.
            await in_tx(link, apply, committed=lambda: access.deliver(claims))
        except BrokerError as exc:
            access.release(waiter for waiter, _ in claims)
            link.tracked.discard(session_id)
            await _answer_refused(link, session_id, exc)
            return
        except BaseException:
            access.release(waiter for waiter, _ in claims)
            raise
        link.send(
            {
                "type": "consent_result",
                "session_id": session_id,
                "accepted": True,
                "state": "approved" if approving else "denied",
            }
        )
    elif kind == "end_session":
        session_id, who = str(msg.get("session_id")), str(msg.get("by", "end user"))[:100]

        async def end(db: AsyncSession) -> None:
            _, device, _ = await service.identify(db, link.fingerprint)
            await service.end_from_device(db, device, session_id, who, link.ip)

        await in_tx(link, end)
        await _close_session(link, session_id, "revoked by the end user")
    elif kind == "granted":  # the agent holds a grant we pushed: its channels may open now
        link.confirm(str(msg.get("session_id")))
    elif kind == "unattended_refused":
        link.confirm(
            str(msg.get("session_id")), "the device's agent does not allow unattended sessions"
        )
    elif kind == "file_transfer" and (
        link.take_report(msg) or str(msg.get("name", "")).endswith(".sbpart")
    ):
        pass  # a transfer through the broker (its staging files too): the broker seals it
    elif kind == "file_transfer":

        async def transfer(db: AsyncSession) -> None:
            _, device, _ = await service.identify(db, link.fingerprint)
            await service.record_file_transfer(db, device, msg)

        await in_tx(link, transfer)
    else:
        log.info("gateway.agent_message_ignored", device_id=device_id, kind=str(kind)[:40])


async def _answer_refused(link: AgentLink, session_id: str, exc: BrokerError) -> None:
    """The device's answer was not taken (mostly: the request was settled elsewhere first).
    The agent is told how it was settled, so it never reports its own answer as what
    happened."""
    log.warning(
        "gateway.consent_answer_refused",
        device_id=link.device_id,
        session_id=session_id,
        error=exc.code,
        detail=exc.detail,
    )
    async with link.gateway.maker() as db:
        found = (await outcomes(db, [session_id])).get(session_id)
    msg: dict[str, Any] = {
        "type": "consent_result",
        "session_id": session_id,
        "accepted": False,
        "detail": exc.detail,
    }
    if found is not None:
        msg.update(state=found.state, outcome=describe(found))
    link.send(msg)


def describe(outcome: Outcome) -> str:
    """How a request was settled, in the words the agent shows the person at the device."""
    state, reason, by = S(outcome.state), outcome.end_reason, outcome.ended_by
    web = outcome.web_decision is not None
    if state in (S.approved, S.active, S.ended):
        who = outcome.web_decided_by if web else None
        return f"approved on the web by {who}" if who else "approved elsewhere"
    if state is S.denied:
        return f"denied on the web by {outcome.web_decided_by}" if web else f"denied by {by}"
    if state is S.expired:
        return "expired: nobody answered in time"
    if state is S.revoked:
        return f"withdrawn ({reason})" if reason else "withdrawn"
    if state is S.failed:
        return f"stopped ({reason})" if reason else "stopped"
    return f"{state}"


def _ended(outcome: Outcome | None) -> str:
    """Why a running session ended, for the device and the technician's terminal."""
    if outcome is None or not outcome.end_reason:
        return "ended in the broker"
    by = f" — by {outcome.ended_by}" if outcome.ended_by else ""
    return f"{outcome.end_reason}{by}"


async def _close_session(link: AgentLink, session_id: str, reason: str) -> None:
    link.tracked.discard(session_id)
    link.forget(session_id)
    link.desktops.close(session_id, reason)
    relay = link.relays.pop(session_id, None)
    if relay is not None:
        await relay.close(reason)


class Poller:
    """Pushes consent requests and approvals to agents and withdraws ended sessions, as soon
    as a change to a session commits (this replica's at once, other replicas' through
    LISTEN/NOTIFY on PostgreSQL; ``signal_fallback_seconds`` is the slow fallback)."""

    def __init__(self, gateway: Hub) -> None:
        self.gateway = gateway

    async def run(self) -> None:
        signals = self.gateway.signals
        while True:
            seen = signals.version  # a change during once() runs it again at once
            wait = self.gateway.settings.resolved_signal_fallback_seconds
            try:
                upcoming = await self.once()
            except Exception as exc:  # keep polling; the failure is logged, not swallowed
                log.error("gateway.poll_failed", exc_info=exc)
                upcoming = None
            if upcoming is not None:  # a deadline is no notice: wake for it, not the fallback
                left = (upcoming - utcnow()).total_seconds()
                wait = min(wait, max(left, DEADLINE_GRACE_SECONDS))
            await signals.wait_after(seen, wait)

    async def once(self) -> datetime | None:
        """Push what changed to the agents; the nearest deadline still to come, if any."""
        links = dict(self.gateway.links)
        if not links:
            return None
        now = utcnow()
        async with self.gateway.maker() as db:
            rows = await open_sessions(db, links.keys())
            due = [r[0] for r in rows if r[4] is not None and r[4] <= now]
            later = [r[4] for r in rows if r[4] is not None and r[4] > now]
            for session_id in due:  # apply run-out deadlines so they reach the agent now
                await sessions.load(db, session_id)
            if due:
                await commit(db)
                rows = await open_sessions(db, links.keys())
            open_by_device: dict[str, set[str]] = {}
            for session_id, device_id, state, unattended, _ in rows:
                open_by_device.setdefault(device_id, set()).add(session_id)
                link = links[device_id]
                await self._push(db, link, session_id, S(state), unattended)
            gone = {
                device_id: (link.tracked | link.prompted) - open_by_device.get(device_id, set())
                for device_id, link in links.items()
            }
            settled = await outcomes(db, set().union(*gone.values()))
            await db.rollback()
        for device_id, link in links.items():
            link.watch(busy=device_id in open_by_device)
            for session_id in gone[device_id]:
                found = settled.get(session_id)
                if session_id in link.prompted:  # its prompt is still up: close it
                    link.prompted.discard(session_id)
                    link.send(
                        {
                            "type": "consent_closed",
                            "session_id": session_id,
                            "state": found.state if found else "unknown",
                            "outcome": describe(found) if found else "withdrawn",
                        }
                    )
                if session_id in link.tracked:
                    why = _ended(found)
                    link.send({"type": "session_ended", "session_id": session_id, "reason": why})
                    await _close_session(link, session_id, why)
        return min(later, default=None)

    async def _push(
        self, db: AsyncSession, link: AgentLink, session_id: str, state: S, unattended: bool
    ) -> None:
        if (session_id, state) in link.pushed:
            return
        if state is S.awaiting_consent:
            record, _ = await sessions.load(db, session_id)
            link.send(receipts.consent_request(record))
            link.prompted.add(session_id)
        elif session_id not in link.tracked:
            if not await self._serve(db, session_id):
                # Another replica's link held it: it ended with that link, or is failed by
                # the replica that takes over (broker.replicas.takeover). Never adopted.
                link.pushed.add((session_id, state))
                return
            record, _ = await sessions.load(db, session_id)
            s = record.session
            kind = "unattended" if unattended else "approved_remotely"
            found = (await outcomes(db, [session_id])).get(session_id)
            link.send(
                {
                    "type": kind,
                    "session_id": s.id,
                    "capabilities": list(s.capabilities),
                    "technician": record.technician.display_name,
                    "ticket": record.ticket.ref,
                    "duration_minutes": s.duration_minutes,
                    "outcome": describe(found) if found else "approved elsewhere",
                }
            )
            link.tracked.add(session_id)
            link.prompted.discard(session_id)  # the agent's prompt closes on this message
        link.pushed.add((session_id, state))

    async def _serve(self, db: AsyncSession, session_id: str) -> bool:
        """Claim the session for this replica; committed before its agent is given the
        grant (the poll's other reads are rolled back at its end)."""
        claimed = await sessions.serve_from(db, session_id, self.gateway.node)
        await commit(db)
        return claimed
