"""The end user's consent: open a request, find it by code or link, decide, record receipts.

The end user has no account: the link token (or the code, exchanged for the token) is the
credential. Codes are short, so guessing is throttled per client and per code with a
growing back-off (429 + ``Retry-After``, see :mod:`broker.consent.throttle`). Guessing never
ends the session nor locks the link: the wait is on entering the code, and the technician's
page shows it (:func:`guessing`). Tokens are 256-bit and need no throttle. A decision is a
compare-and-set on the request (single use); the session's own compare-and-set follows in
``broker.flows.approval``, so of two racing approvals exactly one wins.

Consent knows a session only as the :class:`SessionRecord` it is handed: loading sessions,
approving, failing, revoking and rating them is the flows' business, above both domains.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit.canonical import canonical_json
from broker.auth.secrets import constant_equal
from broker.backoff import wait_after
from broker.consent import throttle
from broker.consent.codes import (
    format_code,
    history_token,
    link_digest,
    link_token,
    new_lookup,
    new_secret,
    secret_digest,
    split_code,
    split_history_token,
)
from broker.consent.models import ConsentRequest
from broker.consent.repository import ConsentRepository
from broker.context import settings_of
from broker.db.base import new_id, utcnow
from broker.devices.service import get_group
from broker.errors import Conflict, Gone, NotFound, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event, sealed_data
from broker.logging import bind_ids
from broker.metrics import CONSENT_DECISIONS
from broker.providers.offers import recording_of
from broker.sessions.repository import SessionRecord
from broker.sessions.states import SessionState

S = SessionState
UNIFORM_CODE_ERROR = "this code is not valid or no longer pending; check it and try again"
BAD_LINK = "this consent link is not valid"
BAD_HISTORY_LINK = "this history link is not valid"
OLD_HISTORY_LINK = (
    "this history link has expired: your organisation keeps it for {days} day(s) after the "
    "request; ask your support team for the history"
)
LOOKUP_TRIES = 25
# An unattended session: the device group's policy decides instead of a person.
UNATTENDED = "policy:unattended"
UNATTENDED_ACTOR = Actor(kind="policy", name=UNATTENDED)


@dataclass(frozen=True)
class IssuedConsent:
    """What the technician hands to the end user; shown once, never stored in the clear."""

    request: ConsentRequest
    code: str | None
    token: str
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class CodeRejected:
    """A wrong code, charged to the client and the code; ``paused`` when that wrong code made
    entering the code wait (the flow seals that in the session's ticket)."""

    paused: ConsentRequest | None


@dataclass(frozen=True)
class Guessing:
    """Wrong codes entered for a pending request, for the technician's page."""

    wrong_codes: int
    paused_until: datetime | None


@dataclass(frozen=True)
class ConsentView:
    request: ConsentRequest
    record: SessionRecord
    questions: list[dict[str, Any]]
    # This session's file transfers as sealed (``session.file_transfer``), oldest first.
    transfers: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)


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
        # No look first: the unique index answers whether the code is taken (one statement
        # fewer per request; a taken code is rare and costs a retry).
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
            # A savepoint: the code may be taken (by a live request, or a concurrent one).
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


def _handoff_key(db: AsyncSession) -> bytes:
    secret = _key(db).encode()
    return hashlib.sha256(b"supportbroker/consent-handoff/v1\x00" + secret).digest()


async def keep_for_technician(db: AsyncSession, issued: IssuedConsent) -> None:
    """Keep a second approval's code (encrypted) for the requesting technician's page.

    A request that needs no second approval shows its code once, to the technician who made
    it. After a second approval the code is made while the approver is at the keyboard, and
    the technician who must read it to the end user would otherwise never see it.
    """
    if issued.code is None:
        return
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_handoff_key(db)).encrypt(
        nonce, issued.code.encode(), issued.request.id.encode()
    )
    issued.request.handoff_box = nonce + sealed
    await db.flush()


async def handoff(db: AsyncSession, session_id: str) -> dict[str, str] | None:
    """The kept code and link of the session's undecided consent request, if any."""
    row = await db.scalar(
        select(ConsentRequest).where(
            ConsentRequest.session_id == session_id, ConsentRequest.decision.is_(None)
        )
    )
    if row is None or row.handoff_box is None:
        return None
    box = row.handoff_box
    try:
        code = AESGCM(_handoff_key(db)).decrypt(box[:12], box[12:], row.id.encode()).decode()
    except InvalidTag:  # the broker's secret changed since: the code is lost, as before
        return None
    token = link_token(_key(db), row.id)
    return {"code": code, "url": f"{settings_of(db).base_url}/consent/{token}"}


async def record_policy_decision(
    db: AsyncSession, request: ConsentRequest, record: SessionRecord, *, until: datetime
) -> None:
    """An unattended session: the group's policy decides instead of a person (recorded so),
    approving until ``until``."""
    values = {
        "decision": "approve",
        "decided_by": UNATTENDED,
        "decided_at": utcnow(),
    }
    if not await ConsentRepository(db).decide(request.id, values):
        raise Conflict(f"consent request {request.id} was already decided")
    await db.refresh(request)
    await record_event(
        db,
        EventType.consent_decided,
        ticket=record.ticket.ref,
        actor=UNATTENDED_ACTOR,
        data=receipt(request, record, valid_until=until),
    )
    CONSENT_DECISIONS.labels(decision="unattended").inc()


async def lookup_code(db: AsyncSession, code: str, *, ip: str) -> str | CodeRejected:
    """Exchange a code for the link token, charging wrong codes to the client and the code.

    A waiting client, or a code whose entry is paused, is refused (RateLimited) before the
    secret is looked at, so the right code does not help an attacker during the wait; the
    link keeps working. Unknown lookup and wrong secret fail the same way: the caller answers
    :data:`UNIFORM_CODE_ERROR` for both (``consent.code_rejected`` is written).
    """
    settings, key, now = settings_of(db), _key(db), utcnow()
    gate = await throttle.gate(db, ip, now)
    parts = split_code(code)
    repo = ConsentRepository(db)
    request = await repo.by_lookup(parts[0]) if parts else None
    if request is not None and request.paused_until is not None and request.paused_until > now:
        # Every source waits for this code: the guesses at one secret stay a handful
        # however many addresses an attacker has (the end user waits too, or uses the link).
        why = "this code was entered wrongly too often; use the link, or wait"
        await throttle.refuse(db, ip, request.paused_until, now, why)
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
    paused = None
    if request is not None:
        request.attempts += 1
        data["consent_request_id"] = request.id
        wait = wait_after(
            request.attempts,
            free=settings.consent_max_attempts,
            base=timedelta(seconds=settings.consent_backoff_seconds),
        )
        if wait:
            request.paused_until = now + wait
            paused = request
        await db.flush()
    await record_event(
        db, EventType.consent_code_rejected, ticket=None, actor=end_user(None, ip), data=data
    )
    return CodeRejected(paused)


async def record_pause(
    db: AsyncSession, request: ConsentRequest, record: SessionRecord, *, ip: str
) -> None:
    """Seal that wrong secrets paused entering ``request``'s code (in its ticket's stream)."""
    assert request.paused_until is not None  # only a paused request is passed
    await record_event(
        db,
        EventType.consent_code_paused,
        ticket=record.ticket.ref,
        actor=end_user(None, ip),
        data={
            "consent_request_id": request.id,
            "session_id": request.session_id,
            "attempts": request.attempts,
            "paused_until": request.paused_until.isoformat(),
        },
    )


async def guessing(db: AsyncSession, session_id: str) -> Guessing | None:
    """Wrong codes entered for the session's consent request, if any (the technician sees
    that someone is guessing, and until when the code waits)."""
    request = await ConsentRepository(db).by_session(session_id)
    if request is None or request.attempts == 0:
        return None
    paused = request.paused_until
    return Guessing(
        wrong_codes=request.attempts,
        paused_until=paused if paused is not None and paused > utcnow() else None,
    )


async def by_token(db: AsyncSession, token: str) -> ConsentRequest:
    """The consent request a link token opens (NotFound for any other token)."""
    request = await ConsentRepository(db).by_token_hash(link_digest(token))
    if request is None:
        raise NotFound(BAD_LINK)
    return request


def history_link(db: AsyncSession, request: ConsentRequest) -> str:
    """The path of the history of the device ``request`` was for (from its consent page)."""
    return f"/history/{history_token(_key(db), request.id)}"


def history_expires_at(db: AsyncSession, request: ConsentRequest) -> datetime:
    """A history link lives ``consent_link_retention_days`` after its request was opened."""
    return request.created_at + timedelta(days=settings_of(db).consent_link_retention_days)


async def by_history_token(db: AsyncSession, token: str) -> ConsentRequest:
    """The consent request a history link was made from: NotFound for any token we did not
    make (one answer, whatever part is wrong), Gone once its retention ran out."""
    parts = split_history_token(token)
    # Compare even without a candidate, so a malformed and a forged token cost the same.
    expected = history_token(_key(db), parts[0] if parts else "-")
    if parts is None or not constant_equal(expected, token):
        raise NotFound(BAD_HISTORY_LINK)
    request = await ConsentRepository(db).get(parts[0])
    if request is None:  # the request was deleted with its session
        raise NotFound(BAD_HISTORY_LINK)
    if history_expires_at(db, request) <= utcnow():
        days = settings_of(db).consent_link_retention_days
        raise Gone(OLD_HISTORY_LINK.format(days=days))
    return request


async def view(db: AsyncSession, request: ConsentRequest, record: SessionRecord) -> ConsentView:
    """What the end user is shown: the request, its session and the group's questions."""
    bind_ids(session_id=record.session.id, ticket=record.ticket.ref)
    group = await get_group(db, record.device.group_id)
    # The end user sees every file moved to or from their computer, read from the sealed
    # events themselves: what this page shows is what the auditor will find.
    sealed = await sealed_data(db, record.ticket.ref, EventType.session_file_transfer)
    transfers = [(at, d) for at, d in sealed if d.get("session_id") == record.session.id]
    return ConsentView(
        request=request, record=record, questions=list(group.questions), transfers=transfers
    )


async def decide(
    db: AsyncSession,
    request: ConsentRequest,
    record: SessionRecord,
    *,
    approve: bool,
    name: str,
    answers: dict[str, str],
    ip: str,
    user_agent: str | None,
    until: datetime,
    moved: bool,
) -> ConsentView:
    """The end user's decision on ``request``: checked, taken once (compare-and-set) and
    sealed as ``consent.decided`` with its receipt, approving until ``until``. ``moved``: the
    session's deadline was applied on reading it (a refusal keeps that change)."""
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
    current = await view(db, request, record)
    known = {str(q.get("id")) for q in current.questions}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise ValidationFailed(
            f"answers: unknown question(s) {', '.join(unknown)}", keep_changes=moved
        )
    decision = "approve" if approve else "deny"
    values = {
        "decision": decision,
        "decided_by": name,
        "decided_from": ip,
        "decided_at": utcnow(),
        "user_agent": (user_agent or "")[:300] or None,
    }
    if not await ConsentRepository(db).decide(request.id, values):
        raise Conflict("this request was already decided", keep_changes=moved)
    await db.refresh(request)
    await record_event(
        db,
        EventType.consent_decided,
        ticket=record.ticket.ref,
        actor=end_user(name, ip),
        data=receipt(request, record, valid_until=until if approve else None),
    )
    CONSENT_DECISIONS.labels(decision=decision).inc()
    return current


def receipt_digest(
    request: ConsentRequest, record: SessionRecord, *, valid_until: datetime | None
) -> str:
    """SHA-256 of the receipt's canonical JSON (RFC 8785), as sealed in ``consent.decided``:
    the ticket's comment names it, and anyone holding the bundle can recompute it."""
    return signed_receipt_digest(receipt(request, record, valid_until=valid_until))


def signed_receipt_digest(value: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(value))).hexdigest()


def receipt(
    request: ConsentRequest, record: SessionRecord, *, valid_until: datetime | None
) -> dict[str, Any]:
    """Who decided, from where, what exactly, and until when: the consent's evidence. It is
    sealed before the approval it causes, so ``valid_until`` is the approval's end to be."""
    s = record.session
    recording = recording_of(s.provider, s.capabilities)
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
        "recorded": recording.recorded,  # what the end user was told, per provider
        "recording": {"content": recording.content, "events_only": recording.events_only},
        "valid_until": valid_until.isoformat() if valid_until else None,
    }


async def forget_decisions(db: AsyncSession, session_ids: list[str]) -> None:
    """Erasure: drop who decided the sessions' consent (the typed name), from where and with
    which browser; the decision and its time stay (the sealed receipt is crypto-shredded)."""
    if session_ids:
        await db.execute(
            update(ConsentRequest)
            .where(ConsentRequest.session_id.in_(session_ids))
            .values(decided_by=None, decided_from=None, user_agent=None)
            .execution_options(synchronize_session="fetch")
        )
