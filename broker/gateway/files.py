"""File transfer through the broker, checked and hashed by the broker (docs/FILES.md).

The technician never talks SFTP to the device: the broker opens the SFTP subsystem on the
agent's SSH link itself, after its own checks (the session's technician, the ``files`` right,
a path inside the group's allowed folders, the group's size limit). It hashes every byte it
relays (SHA-256) and compares its hash with the one the device's agent reports when the file
closes; the agent hashes what is on its disk, so a file that changed during the transfer, or
bytes lost on the way, show as a mismatch. Each attempt, whole or failed, is sealed as
``session.file_transfer`` with both hashes in the ticket's chain.

Uploads land under a staging name (``.NAME.ID.sbpart``, created exclusively) and are renamed
only when both hashes agree: a failure removes the staging file, and the agent removes one
left behind when its SFTP session ends (a dropped link), so nothing half-written stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.db.aftercommit import transaction
from broker.devices.service import get_group
from broker.errors import BrokerError, NotFound, PolicyDenied, ProviderError, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.gateway import access
from broker.gateway.kept import keep_piece
from broker.gateway.link import AgentLink
from broker.sessions import service as sessions
from broker.sessions.states import SessionState

log = structlog.get_logger("broker.gateway.files")

STAGING_SUFFIX = ".sbpart"  # the agent removes staging files of this name left behind
CHUNK = 1 << 20  # bytes per read from the device
BATCH = 4 << 20  # bytes per write to the device: asyncssh splits it into parallel requests
REPORT_SECONDS = 10.0  # how long the device may take to hash a closed file and report it
EXCLUSIVE = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
LOST = "the device's agent disconnected during the transfer"


@dataclass(frozen=True)
class Plan:
    """What the broker's checks allowed: whose transfer, on which session, where, how much."""

    session_id: str
    device_id: str
    actor: Actor
    roots: tuple[str, ...]
    limit: int
    keep: bool = False  # the group keeps the file itself (broker.gateway.kept)


@dataclass
class Outcome:
    """One transfer as sealed: both hashes, and why it failed if it did."""

    transfer_id: str
    direction: str
    path: str
    size: int = 0
    sha256: str = ""  # the broker's own hash of the bytes it relayed
    device_sha256: str = ""  # what the device's agent reported for the file on its disk
    ok: bool = False
    why: str = ""
    kept: int | None = None  # pieces of the file sealed for auditors (None: not kept)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "transfer_id": self.transfer_id,
            "direction": self.direction,
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "device_sha256": self.device_sha256,
            "outcome": "ok" if self.ok else "failed",
        }
        if self.why:
            data["why"] = self.why
        if self.kept is not None:
            data["kept"] = self.kept
        return data


@dataclass
class Outcomes:
    """The sealed outcome of this process's recent transfers, for the client that streamed a
    download and asks afterwards whether it may keep it (bounded: the oldest go first)."""

    keep: int = 500
    _items: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)

    def expect(self, session_id: str, transfer_id: str) -> None:
        while len(self._items) >= self.keep:
            self._items.pop(next(iter(self._items)))
        self._items[f"{session_id}/{transfer_id}"] = asyncio.get_running_loop().create_future()

    def settle(self, session_id: str, outcome: Outcome) -> None:
        found = self._items.get(f"{session_id}/{outcome.transfer_id}")
        if found is not None and not found.done():
            found.set_result(outcome)

    async def wait(self, session_id: str, transfer_id: str, seconds: float) -> Outcome:
        found = self._items.get(f"{session_id}/{transfer_id}")
        if found is None:
            raise NotFound(f"no transfer {transfer_id} on this broker")
        try:
            return await asyncio.wait_for(asyncio.shield(found), seconds)
        except TimeoutError as exc:
            raise ProviderError(f"transfer {transfer_id} is still running") from exc


async def plan(db: AsyncSession, principal: Principal, session_id: str, default: int) -> Plan:
    """Only the session's technician moves files, on a session approved for ``files``; its
    first use starts an approved session, as the terminal's first attach does."""
    record = await access.authorize(db, principal, session_id, "control")
    if "files" not in record.session.capabilities:
        raise PolicyDenied("the session was not approved for files")
    if record.session.state == SessionState.approved:
        await access.attach(db, principal, record, "control")
    group = await get_group(db, record.device.group_id)
    return Plan(
        session_id=session_id,
        device_id=record.device.id,
        actor=principal.actor(),
        roots=tuple(posixpath.normpath(p) for p in group.allowed_paths),
        limit=group.max_file_bytes or default,
        keep=group.keep_files,
    )


def confine(path: str, roots: Sequence[str]) -> str:
    """``path`` if it names something inside an allowed folder; refused otherwise.

    The broker checks the words (absolute, no ``..``, under a root); the agent then checks
    the same path with symlinks resolved on the device, which the broker cannot see."""
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        raise ValidationFailed("path: an absolute path on the device (starting with /)")
    if ".." in path.split("/"):
        raise PolicyDenied(f"{path}: '..' is not allowed in a path")
    clean = posixpath.normpath(path)
    for root in roots:
        if clean == root or clean.startswith(root.rstrip("/") + "/"):
            return clean
    raise PolicyDenied(f"{clean} is outside the folders allowed for this device's group")


def _foreign(exc: BaseException) -> BrokerError:
    """An SFTP or connection error as one of ours (the first matching row says which)."""
    if isinstance(exc, BrokerError):
        return exc
    reason = str(getattr(exc, "reason", exc))
    table: list[tuple[type[BaseException], Callable[[], BrokerError]]] = [
        (asyncssh.SFTPPermissionDenied, lambda: PolicyDenied(f"refused by the device: {reason}")),
        (asyncssh.SFTPNoSuchFile, lambda: NotFound(f"not on the device: {reason}")),
        (asyncssh.SFTPConnectionLost, lambda: ProviderError(LOST)),
        (asyncssh.ConnectionLost, lambda: ProviderError(LOST)),
        (asyncssh.SFTPError, lambda: ProviderError(f"the device: {reason}")),
        (
            asyncssh.ChannelOpenError,
            lambda: PolicyDenied(f"the device's agent refused the files channel: {reason}"),
        ),
    ]
    for kind, make in table:
        if isinstance(exc, kind):
            return make()
    return ProviderError(f"{LOST} ({reason})")


SFTP_ERRORS = (asyncssh.Error, asyncssh.SFTPError, OSError, BrokenPipeError)


async def seal(maker: async_sessionmaker[AsyncSession], plan: Plan, outcome: Outcome) -> None:
    """``session.file_transfer`` in the ticket's chain; a whole one is also written back to
    the ticket (name, size, the broker's SHA-256)."""
    async with transaction(maker) as db:
        record, _ = await sessions.load(db, plan.session_id)
        data = {"session_id": plan.session_id, **outcome.as_dict()}
        await record_event(
            db, EventType.session_file_transfer, ticket=record.ticket.ref, actor=plan.actor,
            data=data,
        )  # fmt: skip
        if outcome.ok:
            facts = {"name": outcome.name, "size": outcome.size, "sha256": outcome.sha256,
                     "direction": outcome.direction}  # fmt: skip
            await connectors.file_transferred(
                db, record.ticket, session_id=plan.session_id, facts=facts
            )
    log.info("gateway.file_transfer", session_id=plan.session_id, **outcome.as_dict())


def _compare(outcome: Outcome, report: dict[str, Any]) -> None:
    outcome.device_sha256 = str(report.get("sha256", ""))[:64]
    reported = report.get("size")
    if outcome.device_sha256 != outcome.sha256 or reported != outcome.size:
        raise ProviderError(
            f"hash mismatch: the broker relayed {outcome.size} bytes with SHA-256 "
            f"{outcome.sha256}, the device has {reported} bytes with {outcome.device_sha256} "
            "(the file changed during the transfer or bytes were lost)"
        )


async def _keep(
    maker: async_sessionmaker[AsyncSession], plan: Plan, outcome: Outcome, data: bytes
) -> None:
    """Seal a piece of the file when the group keeps files (before it moves on)."""
    if outcome.kept is None:
        return
    await keep_piece(maker, plan.session_id, plan.actor, outcome.transfer_id, outcome.kept, data)
    outcome.kept += 1


async def _report(found: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(found, REPORT_SECONDS)
    except TimeoutError as exc:
        raise ProviderError("the device did not report its hash of the file in time") from exc


def _sftp(link: AgentLink, plan: Plan) -> Any:
    """The SFTP subsystem on the agent's link, for this session (the agent checks its grant)."""
    return link.conn.start_sftp_client(env={"SB_SESSION": plan.session_id})


async def listing(link: AgentLink, plan: Plan, path: str | None) -> dict[str, Any]:
    """The allowed folders (no ``path``), or one folder's entries."""
    if path is None:
        return {"path": None, "folders": list(plan.roots), "limit": plan.limit}
    folder = confine(path, plan.roots)
    try:
        async with _sftp(link, plan) as sftp:
            names = await sftp.readdir(folder)
    except SFTP_ERRORS as exc:
        raise _foreign(exc) from exc
    entries = [
        {
            "name": n.filename if isinstance(n.filename, str) else n.filename.decode(),
            "dir": n.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY,
            "size": n.attrs.size,
        }
        for n in names
        if n.filename not in (".", "..", b".", b"..")
    ]
    entries.sort(key=lambda e: (not e["dir"], str(e["name"])))
    return {"path": folder, "entries": entries, "limit": plan.limit}


async def upload(
    maker: async_sessionmaker[AsyncSession],
    link: AgentLink,
    plan: Plan,
    path: str,
    body: AsyncIterator[bytes],
    declared: int | None,
) -> Outcome:
    """Stream ``body`` to ``path`` on the device; sealed whatever happens."""
    outcome = Outcome(uuid.uuid4().hex, "upload", path, kept=0 if plan.keep else None)
    try:
        await _upload(maker, link, plan, outcome, body, declared)
    except (BrokerError, *SFTP_ERRORS) as exc:
        error = _foreign(exc)
        outcome.why = error.detail
        await seal(maker, plan, outcome)
        raise error from exc
    outcome.ok = True
    await seal(maker, plan, outcome)
    return outcome


async def _upload(
    maker: async_sessionmaker[AsyncSession],
    link: AgentLink,
    plan: Plan,
    outcome: Outcome,
    body: AsyncIterator[bytes],
    size: int | None,
) -> None:
    target = outcome.path = confine(outcome.path, plan.roots)
    name = posixpath.basename(target)
    if not name or name.endswith(STAGING_SUFFIX):
        raise ValidationFailed(f"path: {name!r} cannot be a file's name")
    if size is not None and size > plan.limit:
        raise PolicyDenied(f"{size} bytes is over this group's limit of {plan.limit} bytes")
    staging = f"{posixpath.dirname(target)}/.{name}.{outcome.transfer_id[:12]}{STAGING_SUFFIX}"
    key = (plan.session_id, "upload", posixpath.basename(staging))
    reported = link.expect_report(key)
    try:
        async with _sftp(link, plan) as sftp:
            try:
                sha = hashlib.sha256()
                async with sftp.open(staging, EXCLUSIVE, encoding=None) as fh:
                    pending = bytearray()
                    async for chunk in body:
                        outcome.size += len(chunk)
                        if outcome.size > plan.limit:
                            raise PolicyDenied(
                                f"over this group's limit of {plan.limit} bytes; stopped"
                            )
                        sha.update(chunk)
                        pending += chunk
                        if len(pending) >= BATCH:
                            await _keep(maker, plan, outcome, bytes(pending))
                            await fh.write(bytes(pending))
                            pending.clear()
                    if pending:
                        await _keep(maker, plan, outcome, bytes(pending))
                        await fh.write(bytes(pending))
                outcome.sha256 = sha.hexdigest()
                _compare(outcome, await _report(reported))
                await sftp.posix_rename(staging, target)
            except BaseException:
                outcome.sha256 = outcome.sha256 or sha.hexdigest()
                with contextlib.suppress(*SFTP_ERRORS):
                    await sftp.remove(staging)  # the agent also does, if the link is gone
                raise
    finally:
        link.unexpect(key)


@dataclass
class Download:
    """A download whose bytes are being streamed: sealed once the last byte is relayed."""

    maker: async_sessionmaker[AsyncSession]
    link: AgentLink
    plan: Plan
    outcome: Outcome
    size: int
    stack: contextlib.AsyncExitStack
    handle: Any
    reported: asyncio.Future[dict[str, Any]]
    key: tuple[str, str, str]
    outcomes: Outcomes

    async def chunks(self) -> AsyncIterator[bytes]:
        sha = hashlib.sha256()
        try:
            while data := await self.handle.read(CHUNK):
                self.outcome.size += len(data)
                if self.outcome.size > self.plan.limit:
                    raise PolicyDenied(f"over this group's limit of {self.plan.limit} bytes")
                sha.update(data)
                await _keep(self.maker, self.plan, self.outcome, data)
                yield data
            self.outcome.sha256 = sha.hexdigest()
            await self.handle.close()
            _compare(self.outcome, await _report(self.reported))
            self.outcome.ok = True
        except (BrokerError, *SFTP_ERRORS) as exc:
            self.outcome.sha256 = self.outcome.sha256 or sha.hexdigest()
            self.outcome.why = _foreign(exc).detail
            raise _foreign(exc) from exc
        finally:
            if not self.outcome.ok and not self.outcome.why:
                self.outcome.why = "the technician's side stopped reading (download interrupted)"
            # Sealed in a task of its own: when the client went away, this generator is being
            # cancelled and could not await the commit itself.
            _spawn(self._finish())

    async def _finish(self) -> None:
        with contextlib.suppress(*SFTP_ERRORS):
            await self.stack.aclose()
        # An interrupted download's file closes only now: its report is still awaited here,
        # so it is taken as this transfer's (not sealed again as a report nobody awaited).
        with contextlib.suppress(BrokerError):
            report = await _report(self.reported)
            self.outcome.device_sha256 = self.outcome.device_sha256 or str(report.get("sha256"))
        self.link.unexpect(self.key)
        await seal(self.maker, self.plan, self.outcome)
        self.outcomes.settle(self.plan.session_id, self.outcome)


_TASKS: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def open_download(
    maker: async_sessionmaker[AsyncSession],
    link: AgentLink,
    plan: Plan,
    path: str,
    outcomes: Outcomes,
) -> Download:
    """Open ``path`` on the device for streaming; a refusal here is sealed and raised before
    any byte is sent."""
    outcome = Outcome(uuid.uuid4().hex, "download", path, kept=0 if plan.keep else None)
    stack = contextlib.AsyncExitStack()
    key: tuple[str, str, str] | None = None
    try:
        outcome.path = confine(path, plan.roots)
        sftp = await stack.enter_async_context(_sftp(link, plan))
        # The agent reports under the file's real name (symlinks resolved on the device).
        real = await sftp.realpath(outcome.path)
        attrs = await sftp.stat(real)
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            raise ValidationFailed(f"path: {outcome.path} is a folder")
        size = attrs.size or 0
        if size > plan.limit:
            raise PolicyDenied(f"{size} bytes is over this group's limit of {plan.limit} bytes")
        key = (plan.session_id, "download", posixpath.basename(real))
        reported = link.expect_report(key)
        handle = await stack.enter_async_context(sftp.open(real, "rb"))
    except (BrokerError, *SFTP_ERRORS) as exc:
        with contextlib.suppress(*SFTP_ERRORS):
            await stack.aclose()
        if key is not None:
            link.unexpect(key)
        error = _foreign(exc)
        outcome.why = error.detail
        await seal(maker, plan, outcome)
        raise error from exc
    outcomes.expect(plan.session_id, outcome.transfer_id)
    return Download(maker, link, plan, outcome, size, stack, handle, reported, key, outcomes)
