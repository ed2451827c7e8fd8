"""Request → consent → approval: the sequence that spans sessions, consent and the gateway.

The sessions domain moves sessions; the consent domain keeps consent requests and their
receipts; neither calls the other. This module puts them in order, cause before effect:

- a request: the session is asked for (``session.requested``, ``session.awaiting_consent``),
  then its consent request opened (``consent.requested``); an unattended one is decided by
  the group's policy (``consent.decided``) and then approved (``session.approved``); where
  the group's policy asks a second person, the request waits (``session.awaiting_approval``)
  and the end user is asked only after ``approval.granted`` (``approval.denied``: denied);
- the end user's decision on the consent page or API: ``consent.decided`` (the receipt,
  with the approval's end), then ``session.approved`` or ``session.denied``;
- the device's signed decision (the built-in agent): ``consent.receipt``, then the move;
- the end user's other actions on their link: look a code up (too many wrong ones make
  entering the code wait, ``consent.code_paused``; never the session), view, revoke, rate.

The provider's access follows the approval's commit (``broker.flows.lifecycle``), so
``provider.prepared`` comes after both. A flow that returns what the provider's answer
changes (a request approved unattended, an approval on the consent page) commits the
approval itself, so the answer is in what it returns; the device's decision is committed by
the gateway, which attaches waiting technician sockets in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.consent import service as consent
from broker.consent.models import ConsentRequest
from broker.consent.service import ConsentView, IssuedConsent
from broker.db.aftercommit import commit
from broker.db.base import utcnow
from broker.devices.models import Device
from broker.errors import NotFound, ValidationFailed
from broker.evidence.service import Actor
from broker.flows import comments
from broker.gateway import service as gateway
from broker.gateway.models import AgentKey
from broker.providers import offers
from broker.sessions import oversight
from broker.sessions import service as sessions
from broker.sessions.repository import SessionRecord
from broker.sessions.schemas import SessionCreate
from broker.sessions.states import SessionState

S = SessionState


def approved_until(now: datetime, record: SessionRecord) -> datetime:
    """An approval runs for the requested duration from the moment it is given."""
    return now + timedelta(minutes=record.session.duration_minutes)


async def create_session(
    db: AsyncSession, principal: Principal, req: SessionCreate
) -> tuple[SessionRecord, IssuedConsent | None]:
    """Request a session and open its consent request; an unattended request (where the
    group allows it) is decided by policy and approved at once, its provider asked before
    this returns. Where the group's policy asks a second person first, the session waits
    in ``awaiting_approval`` and no consent request exists yet (None)."""
    record = await sessions.request_session(db, principal, req, offered=offers.offered)
    if record.session.state == S.awaiting_approval:
        return record, None
    return record, await _ask_end_user(db, record)


async def second_approval(
    db: AsyncSession, principal: Principal, session_id: str, *, approve: bool, reason: str | None
) -> tuple[SessionRecord, IssuedConsent | None]:
    """A second person approves (the end user is asked now: the consent request opens, or
    the unattended policy decides) or denies a request waiting in ``awaiting_approval``."""
    record, _ = await sessions.load(db, session_id)
    until = await sessions.consent_deadline(db, record)
    await oversight.decide_approval(
        db, principal, record, approve=approve, reason=reason, consent_expires_at=until
    )
    if not approve:
        return record, None
    issued = await _ask_end_user(db, record)
    if not record.session.unattended:
        await consent.keep_for_technician(db, issued)
    return record, issued


async def approval_preview(
    db: AsyncSession, principal: Principal, session_id: str
) -> SessionRecord:
    """The request as a second person sees it before deciding: what the end user will be
    shown (``broker.consent`` builds the same facts from the same record)."""
    record, _ = await sessions.load(db, session_id)
    await oversight.may_approve(db, principal, record)
    return record


async def _ask_end_user(db: AsyncSession, record: SessionRecord) -> IssuedConsent:
    """Open the consent request of a session awaiting consent; an unattended one is decided
    by the group's policy and approved at once, its provider asked before this returns."""
    deadline = record.session.deadline_at
    assert deadline is not None  # awaiting consent always has its expiry
    issued = await consent.open_request(db, record, expires_at=deadline)
    if record.session.unattended:
        now = utcnow()
        until = approved_until(now, record)
        await consent.record_policy_decision(db, issued.request, record, until=until)
        digest = consent.receipt_digest(issued.request, record, valid_until=until)
        await sessions.approve(
            db,
            record,
            actor=consent.UNATTENDED_ACTOR,
            data={"decided_by": consent.UNATTENDED, "receipt_digest": digest},
            until=until,
            now=now,
        )
        await commit(db)  # the provider answers after the approval commits, before we return
    return issued


async def lookup_code(db: AsyncSession, code: str, *, ip: str) -> str:
    """Exchange a consent code for its link token; a wrong code is refused (and kept on
    record), and one that pauses entering a request's code is sealed in the session's ticket.
    Guessing never ends the session: anyone who overheard the lookup could otherwise cancel
    it."""
    found = await consent.lookup_code(db, code, ip=ip)
    if isinstance(found, str):
        return found
    if found.paused is not None:
        record, _ = await sessions.load(db, found.paused.session_id)
        await consent.record_pause(db, found.paused, record, ip=ip)
    raise NotFound(consent.UNIFORM_CODE_ERROR, keep_changes=True)


async def _opened(db: AsyncSession, token: str) -> tuple[ConsentRequest, SessionRecord, bool]:
    request = await consent.by_token(db, token)
    record, moved = await sessions.load(db, request.session_id)
    return request, record, moved


async def view(db: AsyncSession, token: str) -> ConsentView:
    request, record, _ = await _opened(db, token)
    return await consent.view(db, request, record)


async def decide(
    db: AsyncSession,
    token: str,
    *,
    approve: bool,
    name: str,
    answers: dict[str, str],
    ip: str,
    user_agent: str | None,
    granted: list[str] | None = None,
) -> ConsentView:
    """The end user approves or denies: the receipt first, then the session's move; an
    approval is committed and its provider asked before this returns. ``granted``: the
    rights the end user left ticked (None: all requested); the session gets only those,
    the receipt states only those, and none left is a denial."""
    request, record, moved = await _opened(db, token)
    decidable = request.decision is None and request.locked_at is None
    if (
        approve
        and granted is not None
        and decidable
        and S(record.session.state) is S.awaiting_consent
    ):
        approve = await _grant(db, record, set(granted), moved=moved)
    now = utcnow()
    until = approved_until(now, record)
    current = await consent.decide(
        db,
        request,
        record,
        approve=approve,
        name=name,
        answers=answers,
        ip=ip,
        user_agent=user_agent,
        until=until,
        moved=moved,
    )
    actor = consent.end_user(name, ip)
    # The digest of the receipt just sealed (consent.decided), carried by the move so the
    # ticket's comment and session.approved/denied name the evidence they follow from.
    digest = consent.receipt_digest(request, record, valid_until=until if approve else None)
    if approve:
        data = {"decided_by": name, "receipt_digest": digest}
        await sessions.approve(
            db, record, actor=actor, data=data, until=until, now=now, answers=answers
        )
        await commit(db)
    else:
        await sessions.deny(db, record, actor=actor, name=name, data={"receipt_digest": digest})
    return current


async def _grant(
    db: AsyncSession, record: SessionRecord, granted: set[str], *, moved: bool
) -> bool:
    """Narrow an approval to ``granted``; False (a denial) when nothing is left."""
    requested = set(record.session.capabilities)
    extra = sorted(granted - requested)
    if extra:
        raise ValidationFailed(
            f"capabilities: not requested, so not yours to grant: {', '.join(extra)}",
            keep_changes=moved,
        )
    if "control" in granted and "view" in requested and "view" not in granted:
        raise ValidationFailed(
            "capabilities: using mouse and keyboard needs seeing the screen too",
            keep_changes=moved,
        )
    if not granted:
        return False  # nothing left: a denial of the request as asked
    await sessions.narrow_capabilities(db, record, granted)
    return True


async def device_decision(
    db: AsyncSession,
    *,
    device: Device,
    key: AgentKey,
    receipt: dict[str, Any],
    signature: str,
    ip: str | None,
) -> SessionRecord:
    """The device's agent signed the end user's decision: seal the receipt, then move the
    session, with only the rights the receipt states. The caller (the gateway) commits."""
    signed = await gateway.seal_receipt(
        db, device=device, key=key, receipt=receipt, signature=signature, ip=ip
    )
    record, actor = signed.record, signed.actor
    digest = consent.signed_receipt_digest(receipt)  # the receipt the device signed
    approved = signed.approved
    stated = receipt.get("capabilities")
    if approved and isinstance(stated, list) and set(stated) != set(record.session.capabilities):
        # The person unticked rights in the device's dialog: the session gets what the
        # signed receipt states, checked as on the web page (none left is a denial).
        approved = await _grant(db, record, {str(c) for c in stated}, moved=False)
    if approved:
        now = utcnow()
        data = {
            "decided_by": signed.decided_by,
            "via": "agent",
            "receipt": True,
            "receipt_digest": digest,
        }
        until = approved_until(now, record)
        await sessions.approve(db, record, actor=actor, data=data, until=until, now=now)
    else:
        name = f"{signed.decided_by} ({receipt.get('why', 'declined')})"
        await sessions.deny(db, record, actor=actor, name=name, data={"receipt_digest": digest})
    return record


async def revoke(db: AsyncSession, token: str, *, name: str | None, ip: str) -> ConsentView:
    """The end user ends an approved or active session from their consent link."""
    request, record, moved = await _opened(db, token)
    who = name or request.decided_by or "the end user"
    actor = consent.end_user(who, ip)
    await sessions.revoke_by_end_user(db, record, actor=actor, name=who, keep=moved)
    return await consent.view(db, request, record)


async def rate(
    db: AsyncSession, token: str, *, score: int, comment: str | None, ip: str
) -> ConsentView:
    request, record, _ = await _opened(db, token)
    actor: Actor = consent.end_user(request.decided_by, ip)
    await sessions.rate_session(db, record, actor=actor, score=score, comment=comment)
    await comments.rated(db, record)
    return await consent.view(db, request, record)
