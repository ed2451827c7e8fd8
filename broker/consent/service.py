"""The end user's consent: open a request, find it by code, show it, decide, revoke, rate.

The end user has no account: the link token (or the code, exchanged for the token) is the
credential. Codes are short, so guessing is throttled per client and per code (see
:mod:`broker.consent.throttle`); tokens are 256-bit and need no throttle. A decision is a
compare-and-set on the request (single use) followed by the session's own compare-and-set,
so of two racing approvals exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.secrets import constant_equal
from broker.consent import throttle
from broker.consent.codes import (
    format_code,
    link_digest,
    link_token,
    new_lookup,
    new_secret,
    secret_digest,
    split_code,
)
from broker.consent.models import ConsentRequest
from broker.consent.repository import ConsentRepository
from broker.context import settings_of
from broker.db.base import new_id, utcnow
from broker.devices.service import get_group
from broker.errors import Conflict, NotFound, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.logging import bind_ids
from broker.metrics import CONSENT_DECISIONS
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord
from broker.sessions.states import SessionState

S = SessionState
UNIFORM_CODE_ERROR = "this code is not valid or no longer pending; check it and try again"
BAD_LINK = "this consent link is not valid"
LOOKUP_TRIES = 25


@dataclass(frozen=True)
class IssuedConsent:
    """What the technician hands to the end user; shown once, never stored in the clear."""

    request: ConsentRequest
    code: str | None
    token: str
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class ConsentView:
    request: ConsentRequest
    record: SessionRecord
    questions: list[dict[str, Any]]


def _key(db: AsyncSession) -> str:
    return settings_of(db).secret_key.get_secret_value()


def end_user(name: str | None, ip: str | None) -> Actor:
    return Actor(kind="end_user", name=name, ip=ip)


async def open_request(
    db: AsyncSession, record: SessionRecord, *, expires_at: datetime
) -> IssuedConsent:
    """Create the consent request of a session awaiting consent."""
    key, repo, now = _key(db), ConsentRepository(db), utcnow()
    secret = new_secret()
    for _ in range(LOOKUP_TRIES):
        lookup = new_lookup()
        await repo.release_stale_lookup(lookup, now)
        if await repo.by_lookup(lookup) is not None:
            continue
        request_id = new_id()
        token = link_token(key, request_id)
        request = ConsentRequest(
            id=request_id,
            session_id=record.session.id,
            lookup=lookup,
            secret_hash=secret_digest(key, request_id, secret),
            token_hash=link_digest(token),
            expires_at=expires_at,
            attempts=0,
        )
        try:
            # A savepoint: a concurrent request may take the same lookup between check and insert.
            async with db.begin_nested():
                db.add(request)
        except IntegrityError:
            continue
        break
    else:
        raise Conflict("no free consent code right now; try again in a moment")
    await record_event(
        db,
        EventType.consent_requested,
        ticket=record.ticket.ref,
        actor=Actor(kind="system", name="supportbroker"),
        data={
            "session_id": record.session.id,
            "consent_request_id": request.id,
            "expires_at": expires_at.isoformat(),
        },
    )
    return IssuedConsent(
        request=request,
        code=format_code(lookup, secret),
        token=token,
        url=f"{settings_of(db).base_url}/consent/{token}",
        expires_at=expires_at,
    )


async def record_policy_decision(
    db: AsyncSession, request: ConsentRequest, record: SessionRecord
) -> None:
    """An unattended session: the group's policy decides instead of a person (recorded so)."""
    values = {
        "decision": "approve",
        "decided_by": sessions.UNATTENDED,
        "decided_at": utcnow(),
    }
    if not await ConsentRepository(db).decide(request.id, values):
        raise Conflict(f"consent request {request.id} was already decided")
    await db.refresh(request)
    await record_event(
        db,
        EventType.consent_decided,
        ticket=record.ticket.ref,
        actor=sessions.UNATTENDED_ACTOR,
        data=receipt(request, record),
    )
    CONSENT_DECISIONS.labels(decision="unattended").inc()


async def lookup_code(db: AsyncSession, code: str, *, ip: str) -> str:
    """Exchange a code for the link token, charging wrong codes to the client and the code.

    A locked client is refused before the code is even looked at, so the right code does not
    help once the limit is reached. Unknown lookup and wrong secret fail the same way.
    """
    settings, key, now = settings_of(db), _key(db), utcnow()
    gate = await throttle.gate(db, ip, now)
    parts = split_code(code)
    repo = ConsentRepository(db)
    request = await repo.by_lookup(parts[0]) if parts else None
    # Hash even without a candidate so both failures take the same time.
    digest = secret_digest(key, request.id if request else "-", parts[1] if parts else "-")
    if (
        request is not None
        and request.locked_at is None
        and request.decision is None
        and constant_equal(digest, request.secret_hash)
    ):
        return link_token(key, request.id)
    failures = await throttle.charge(db, gate, now, ip=ip)
    data: dict[str, Any] = {"client_failures": failures}
    if request is not None:
        request.attempts += 1
        data["consent_request_id"] = request.id
        if request.attempts >= settings.consent_max_attempts:
            await _lock(db, request, now, ip=ip)
    await record_event(
        db, EventType.consent_code_rejected, ticket=None, actor=end_user(None, ip), data=data
    )
    raise NotFound(UNIFORM_CODE_ERROR, keep_changes=True)


async def _lock(db: AsyncSession, request: ConsentRequest, now: datetime, *, ip: str) -> None:
    """Too many wrong secrets for one code: the request is dead; the technician asks again."""
    request.locked_at = now
    request.lookup = None
    await db.flush()
    record, _ = await sessions.load(db, request.session_id)
    await record_event(
        db,
        EventType.consent_locked,
        ticket=record.ticket.ref,
        actor=end_user(None, ip),
        data={
            "consent_request_id": request.id,
            "session_id": request.session_id,
            "attempts": request.attempts,
        },
    )
    if record.session.state == S.awaiting_consent:
        why = f"consent code locked after {request.attempts} wrong attempts; request again"
        await sessions.fail_session(db, record, actor=end_user(None, ip), why=why)


async def _open(db: AsyncSession, token: str) -> tuple[ConsentRequest, SessionRecord, bool]:
    request = await ConsentRepository(db).by_token_hash(link_digest(token))
    if request is None:
        raise NotFound(BAD_LINK)
    record, moved = await sessions.load(db, request.session_id)
    bind_ids(session_id=record.session.id, ticket=record.ticket.ref)
    return request, record, moved


async def _view(db: AsyncSession, request: ConsentRequest, record: SessionRecord) -> ConsentView:
    group = await get_group(db, record.device.group_id)
    return ConsentView(request=request, record=record, questions=list(group.questions))


async def view(db: AsyncSession, token: str) -> ConsentView:
    request, record, _ = await _open(db, token)
    return await _view(db, request, record)


async def decide(
    db: AsyncSession,
    token: str,
    *,
    approve: bool,
    name: str,
    answers: dict[str, str],
    ip: str,
    user_agent: str | None,
) -> ConsentView:
    request, record, moved = await _open(db, token)
    state = S(record.session.state)
    if request.locked_at is not None:
        raise Conflict(
            "this consent request is locked; ask the technician to request again",
            keep_changes=moved,
        )
    if request.decision is not None:
        raise Conflict(f"this request was already decided ({request.decision})", keep_changes=moved)
    if state is not S.awaiting_consent:
        raise Conflict(f"this request is {state}; it can no longer be decided", keep_changes=moved)
    current = await _view(db, request, record)
    known = {str(q.get("id")) for q in current.questions}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise ValidationFailed(
            f"answers: unknown question(s) {', '.join(unknown)}", keep_changes=moved
        )
    now = utcnow()
    decision = "approve" if approve else "deny"
    values = {
        "decision": decision,
        "decided_by": name,
        "decided_from": ip,
        "decided_at": now,
        "user_agent": (user_agent or "")[:300] or None,
    }
    if not await ConsentRepository(db).decide(request.id, values):
        raise Conflict("this request was already decided", keep_changes=moved)
    await db.refresh(request)
    actor = end_user(name, ip)
    if approve:
        await sessions.approve(db, record, actor=actor, data={"decided_by": name}, answers=answers)
    else:
        await sessions.deny(db, record, actor=actor, name=name)
    await record_event(
        db,
        EventType.consent_decided,
        ticket=record.ticket.ref,
        actor=actor,
        data=receipt(request, record),
    )
    CONSENT_DECISIONS.labels(decision=decision).inc()
    return current


def receipt(request: ConsentRequest, record: SessionRecord) -> dict[str, Any]:
    """Who decided, from where, what exactly, and until when: the consent's evidence."""
    s = record.session
    return {
        "consent_request_id": request.id,
        "session_id": s.id,
        "decision": request.decision,
        "decided_by": request.decided_by,
        "decided_from": request.decided_from,
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "user_agent": request.user_agent,
        "ticket": record.ticket.ref,
        "ticket_subject": record.ticket.subject,
        "technician": {"id": record.technician.id, "name": record.technician.display_name},
        "device": {"id": record.device.id, "name": record.device.name},
        "reason": s.reason,
        "capabilities": list(s.capabilities),
        "duration_minutes": s.duration_minutes,
        "unattended": s.unattended,
        "recorded": True,
        "valid_until": s.deadline_at.isoformat()
        if s.deadline_at and s.state == S.approved
        else None,
    }


async def revoke(db: AsyncSession, token: str, *, name: str | None, ip: str) -> ConsentView:
    """The end user ends an approved or active session from the consent page."""
    request, record, moved = await _open(db, token)
    who = name or request.decided_by or "the end user"
    await sessions.revoke_by_end_user(db, record, actor=end_user(who, ip), name=who, keep=moved)
    return await _view(db, request, record)


async def rate(
    db: AsyncSession, token: str, *, score: int, comment: str | None, ip: str
) -> ConsentView:
    request, record, _ = await _open(db, token)
    actor = end_user(request.decided_by, ip)
    await sessions.rate_session(db, record, actor=actor, score=score, comment=comment)
    return await _view(db, request, record)
