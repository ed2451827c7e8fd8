"""What the auditor pages show: session search, a ticket's timeline with per-record integrity,
a session's details and recordings, and the log's checkpoint.

Reading goes through the domains' services (sessions, evidence queries, gateway replay), so
the same rules and the same audit records apply as on the JSON API. Only the search form's
technician list is read here directly: a read-only lookup no domain service offers. Devices
are typed with suggestions from ``GET /api/v1/device-names``; providers come from the
provider registry.

Per-record integrity on the timeline combines three checks, each of which fails a record
(red) on its own: its recomputed leaf hash, its link to the record before it in the ticket's
chain (sequence and previous hash), and its inclusion proof in the latest signed checkpoint
(O(log n) stored subtree hashes per record, checked against the signed root; a record after
that checkpoint is shown as not yet covered). The whole-log verification (every record, every
chain, the tree against every checkpoint) is not run per view: the page shows the last one
(``broker.evidence.verification``: on a schedule, or asked for with the page's button), and a
record it named as the first bad one is red too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from audit.checkpoint import SignedCheckpoint
from audit.errors import VerificationError
from audit.merkle import inclusion_ranges, verify_inclusion
from audit.proofs import range_hashes
from audit.records import ZERO_HASH, Record, record_leaf_hash
from audit.verify import VerifyReport
from broker.auth.models import User
from broker.auth.principal import Principal
from broker.devices.models import GroupMember
from broker.devices.service import known_providers
from broker.errors import NotFound, ValidationFailed
from broker.evidence import queries, verification
from broker.evidence.events import EventType, event_named, event_words
from broker.evidence.models import AuditVerification
from broker.evidence.service import audit_log_of, record_event
from broker.gateway import playback, replay
from broker.gateway.recording import RecordingSummary
from broker.sessions import service as sessions
from broker.sessions.repository import SessionFilter, SessionRecord
from broker.sessions.states import SessionState
from broker.tickets.models import Ticket

PAGE_SIZE = 25
TICKET_SESSIONS = 200


# --- search -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchForm:
    """The search form as typed (strings), echoed back into the form."""

    ticket: str = ""
    technician: str = ""
    device: str = ""
    provider: str = ""
    state: str = ""
    since: str = ""
    until: str = ""
    page: int = 1
    event: str = ""  # an event type of the catalogue (auditors and admins)

    def query(self, page: int) -> str:
        from urllib.parse import urlencode

        values = {k: v for k, v in self.__dict__.items() if k != "page" and v}
        return urlencode({**values, "page": page})


@dataclass(frozen=True)
class SearchResult:
    records: list[SessionRecord]
    page: int
    has_next: bool


@dataclass(frozen=True)
class Choices:
    technicians: list[tuple[str, str]]
    providers: list[str]
    states: list[str] = field(default_factory=lambda: [s.value for s in SessionState])
    # (name, words) of every catalogue event, by its words; empty for whoever may not
    # search by event (supervisors: the log's headers are audit content to them)
    events: list[tuple[str, str]] = field(default_factory=list)


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: give a date as YYYY-MM-DD") from exc


def to_filter(form: SearchForm) -> SessionFilter:
    """The form as a session filter; the date range is inclusive of both days (UTC)."""
    system: str | None = None
    external_id: str | None = None
    typed = form.ticket.strip() or None
    if typed is not None and ":" in typed:  # system:id names one ticket exactly
        system, _, external_id = typed.partition(":")
        system, external_id = system.strip() or None, external_id.strip() or None
        typed = None
    state = None
    if form.state:
        try:
            state = SessionState(form.state)
        except ValueError as exc:
            raise ValidationFailed(f"state: {form.state!r} is not a session state") from exc
    since, until = _day(form.since, "from"), _day(form.until, "to")
    if since is not None and until is not None and until < since:
        raise ValidationFailed("to: the end of the range is before its start")
    if form.page < 1:
        raise ValidationFailed("page: pages start at 1")
    event = event_named(form.event) if form.event else None
    if form.event and event is None:
        raise ValidationFailed(f"event: {form.event!r} is not an event type of the catalogue")
    return SessionFilter(
        system=system,
        external_id=external_id,
        ticket_text=typed,  # any part of the ticket's id or subject
        technician_id=form.technician or None,
        device=form.device.strip() or None,
        provider=form.provider or None,
        state=state,
        since=datetime.combine(since, datetime.min.time(), UTC) if since else None,
        until=datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
        if until
        else None,
        event_type=event,
    )


async def search(db: AsyncSession, principal: Principal, form: SearchForm) -> SearchResult:
    filters = to_filter(form)
    offset = (form.page - 1) * PAGE_SIZE
    found = await sessions.list_sessions(db, principal, filters, limit=PAGE_SIZE + 1, offset=offset)
    return SearchResult(found[:PAGE_SIZE], form.page, len(found) > PAGE_SIZE)


async def choices(
    db: AsyncSession, member_id: str | None = None, *, events: bool = False
) -> Choices:
    """The search form's lists; ``member_id`` (a supervisor) narrows technicians and devices
    to that user's device groups, as the search itself is narrowed (devices are not listed:
    the field is typed, with suggestions from ``GET /api/v1/device-names``, thousands of
    options read on every page were the alternative); ``events`` adds the
    catalogue's event types, as words."""
    tech_q = select(User.id, User.display_name).where(User.role == "technician")
    if member_id is not None:
        groups = select(GroupMember.group_id).where(GroupMember.user_id == member_id)
        members = select(GroupMember.user_id).where(GroupMember.group_id.in_(groups))
        tech_q = tech_q.where(User.id.in_(members))
    techs = await db.execute(tech_q.order_by(User.display_name))
    return Choices(
        technicians=[(str(i), str(n)) for i, n in techs],
        # The providers the broker drives (its registry), not a DISTINCT over every session.
        providers=known_providers(),
        events=sorted(((e.value, event_words(e)) for e in EventType), key=lambda e: e[1])
        if events
        else [],
    )


# --- ticket timeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineRow:
    position: int
    seq: int
    event_type: str
    occurred_at: datetime
    problems: list[str]
    payload: dict[str, Any] | None
    erased: bool
    # The inclusion proof (audit path) in the view's checkpoint; None: not yet covered.
    proof: list[bytes] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def proof_hex(self) -> list[str]:
        return [node.hex() for node in self.proof or []]

    @property
    def session_id(self) -> str | None:
        data = (self.payload or {}).get("data")
        value = data.get("session_id") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    @property
    def actor(self) -> str:
        who = (self.payload or {}).get("actor")
        if not isinstance(who, dict):
            return ""
        name, role = who.get("name") or who.get("kind") or "", who.get("role")
        return f"{name} ({role})" if role else str(name)


@dataclass(frozen=True)
class TimelineView:
    system: str
    external_id: str
    rows: list[TimelineRow]
    # The latest signed checkpoint the proofs lead to (None: nothing signed yet).
    checkpoint: SignedCheckpoint | None
    # The last finished whole-log verification (None: none yet), and whether one runs now.
    last_verification: AuditVerification | None
    verifying: bool
    sessions: list[SessionRecord]
    # The ticket's own dual-control switch, and whether replay/plaintext need two auditors
    # (the switch, or a session on a device of a dual-control group).
    own_dual_control: bool = False
    dual_control: bool = False

    @property
    def log_ok(self) -> bool:
        """The last whole-log verification passed (or none has finished yet)."""
        last = self.last_verification
        return last is None or bool(last.ok)

    @property
    def intact(self) -> bool:
        return self.log_ok and all(row.ok for row in self.rows)

    @property
    def covered(self) -> int:
        return sum(1 for row in self.rows if row.proof is not None)


def _record_problems(
    log_id: str, raw: list[Record], last: AuditVerification | None
) -> dict[int, list[str]]:
    problems: dict[int, list[str]] = {}
    prev, last_seq = ZERO_HASH, 0
    for rec in raw:
        found = problems.setdefault(rec.position, [])
        if rec.stream_seq != last_seq + 1:
            found.append(f"out of sequence: #{rec.stream_seq} follows #{last_seq}")
        if rec.prev_hash != prev:
            found.append("does not link to the ticket's previous record")
        if record_leaf_hash(log_id, rec) != rec.leaf_hash:
            found.append("altered: its content no longer matches its hash")
        if last is not None and not last.ok and last.position == rec.position:
            found.append(f"whole-log verification: {last.verdict}")
        prev, last_seq = rec.leaf_hash, rec.stream_seq
    return problems


async def ticket_timeline(
    db: AsyncSession, principal: Principal, system: str, external_id: str
) -> TimelineView:
    """Every event of the ticket in order with its integrity; the view itself is audited."""
    stream = f"{system}:{external_id}"
    log = audit_log_of(db)
    conn = await db.connection()
    raw = await log.records(conn, stream=stream)  # read before the view itself is recorded
    found = await queries.timeline(db, principal, stream)  # NotFound if none; audits the view
    last = await verification.last_finished(db)
    running = await verification.last_started(db)
    problems = _record_problems(log.log_id, raw, last)
    checkpoint = await log.latest_checkpoint(conn)
    paths: dict[int, list[bytes]] = {}
    if checkpoint is not None:
        covered = [rec for rec in raw if rec.position < checkpoint.size]  # the rest: not yet
        # Every covered record's audit path in one read of the stored subtrees (two
        # statements), not two statements per record.
        plans = [inclusion_ranges(rec.position, checkpoint.size) for rec in covered]
        hashes = iter(await range_hashes(conn, [r for plan in plans for r in plan]))
        for rec, plan in zip(covered, plans, strict=True):
            path = [next(hashes) for _ in plan]
            paths[rec.position] = path
            try:  # the record as stored now, not its stored hash: an edit fails the proof
                leaf = record_leaf_hash(log.log_id, rec)
                verify_inclusion(leaf, rec.position, checkpoint.size, path, checkpoint.root)
            except VerificationError as exc:
                problems.setdefault(rec.position, []).append(
                    f"not in the signed checkpoint at size {checkpoint.size}: {exc}"
                )
    if found.problem and not found.records:
        # The payloads did not decrypt: name the record the decryption stopped at.
        try:
            await log.read_stream(await db.connection(), stream)
        except VerificationError as exc:
            if exc.position is not None:
                problems.setdefault(exc.position, []).append(f"does not decrypt: {exc}")
    decrypted = {r.position: r for r in found.records}
    rows = []
    for rec in raw:
        read = decrypted.get(rec.position)
        rows.append(
            TimelineRow(
                position=rec.position,
                seq=rec.stream_seq,
                event_type=rec.event_type,
                occurred_at=rec.occurred_at,
                problems=problems.get(rec.position, []),
                payload=read.payload if read is not None else None,
                erased=read.erased if read is not None else False,
                proof=paths.get(rec.position),
            )
        )
    filters = SessionFilter(system=system, external_id=external_id)
    found_sessions = await sessions.list_sessions(
        db, principal, filters, limit=TICKET_SESSIONS, offset=0
    )
    own = await db.scalar(
        select(Ticket.dual_control).where(
            Ticket.system == system, Ticket.external_id == external_id
        )
    )
    return TimelineView(
        system,
        external_id,
        rows,
        checkpoint,
        last,
        running is not None and running.finished_at is None,
        found_sessions,
        own_dual_control=bool(own),
        dual_control=await playback.ticket_needs_two(db, stream),
    )


# --- session detail, replay, checkpoint -----------------------------------------------------


@dataclass(frozen=True)
class SessionDetail:
    record: SessionRecord
    recordings: list[RecordingSummary]


async def session_detail(db: AsyncSession, principal: Principal, session_id: str) -> SessionDetail:
    record = await sessions.get_session(db, principal, session_id)
    found = await replay.recordings_of(db, principal, session_id)
    return SessionDetail(record, found)


@dataclass(frozen=True)
class CheckpointView:
    origin: str
    size: int
    root_hex: str
    text: str
    signatures: list[str]
    public_key: str
    fingerprint: str
    published_ok: bool
    published_detail: str
    # No checkpoint has been copied outside the database yet: neither OK nor a problem, and
    # the page says only that (never "OK" beside "nothing published yet").
    nothing_published: bool = False


async def checkpoint_view(db: AsyncSession) -> CheckpointView | None:
    log = audit_log_of(db)
    # Checkpoints come on a cadence: the page signs one now if records are not yet covered,
    # so an auditor always sees a head covering everything sealed so far.
    latest = await queries.current_checkpoint(db)
    if latest is None:
        return None
    status = await queries.compare_with_published(db)
    nothing = log.publisher is None or log.publisher.latest() is None
    text, _, signed = latest.note.partition("\n\n")
    return CheckpointView(
        origin=latest.origin,
        size=latest.size,
        root_hex=latest.root.hex(),
        text=text,
        signatures=[line for line in signed.splitlines() if line.strip()],
        public_key=log.signer.verifier.encode(),
        fingerprint=log.signer.verifier.fingerprint,
        published_ok=status.ok,
        published_detail=status.detail,
        nothing_published=nothing,
    )


async def verify_now(db: AsyncSession) -> VerifyReport:
    return await queries.verify_all(db)


async def ask_verification(
    db: AsyncSession, principal: Principal, runs: verification.Verifications, stream: str
) -> None:
    """Start a whole-log verification in the background now (or join the one running); the
    request is sealed on the ticket whose page asked, committed before the run starts."""
    heads = schema.stream_heads.c
    known = await db.scalar(select(heads.last_seq).where(heads.stream == stream))
    if known is None:
        raise NotFound(f"the audit log has no events for {stream}")
    await record_event(
        db,
        EventType.audit_verification_requested,
        ticket=stream,
        actor=principal.actor(),
        data={"already_running": runs.running()},
    )
    await db.commit()
    runs.start("request", principal.name)
