"""Background work of a running broker, one loop, each job isolated from the others' failures:

- deadlines: expire unanswered consent, end sessions at their time limit. The same checks run
  on read (broker.sessions.service), so a stopped sweeper never lets a stale state be acted
  on; the sweeper makes the state visible without a read;
- refusals: seal each finished minute's tally of throttled requests as one audit record;
- the connectors' outbox: deliver comments and webhook events to ticket systems, in order;
- the owner notices: mail device owners about unattended sessions (broker.notices), retried;
- the slow poll of tickets with running sessions (the webhooks' fallback): a ticket its
  system now calls closed, merged or someone else's ends those sessions;
- providers: grant what approvals committed before a crash never got, retry withdrawing
  provider-side access (share links) still owed back, and reconcile what each provider
  recorded (MeshCentral relay log, AnyDesk session list) for running and just-ended
  sessions into the audit log (outside connections flagged), and sweep every managed
  device now and then for outside connections when no session runs there.

One SIEM exporter loop runs per configured target (broker.siem.exporter). Two more loops run
on their own cadence: checkpoints (every ``checkpoint_interval_seconds``
when records are not yet covered, and once more at shutdown) and the whole-log verification
(every ``verify_interval_seconds``; on demand through ``app.state.verifications``). With a
time-stamping authority configured, a third publishes and timestamps the latest checkpoint
every ``timestamp_interval_seconds`` (broker.evidence.timestamps).

With several replicas on one database (docs/DEPLOY.md) all of this runs on exactly one of
them: the holder of the background lease (broker.replicas.service.Membership). The others
skip each tick, and start the SIEM exporters and sign checkpoints only once they hold it
(the holder died: its lease ran out). The audit log itself is appended to by every replica
under one advisory lock (audit.appender), so it never forks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import structlog
from fastapi import FastAPI

from broker.connectors.outbox import deliver_due
from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence import refusals
from broker.evidence.queries import compare_with_published, publish
from broker.flows.lifecycle import grant_owed
from broker.flows.watch import watch_tickets
from broker.notices.service import deliver_due as deliver_notices
from broker.providers.service import reconcile_due, retry_pending_ends, sweep_devices
from broker.sessions.service import sweep_deadlines

log = structlog.get_logger("broker.tasks")


async def sweep_once(app: FastAPI) -> int:
    async with transaction(app.state.sessionmaker) as db:
        return await sweep_deadlines(db)


async def record_refusals(app: FastAPI) -> int:
    """Seal the refusal tallies of finished minutes (see broker.evidence.refusals)."""
    async with transaction(app.state.sessionmaker) as db:
        return await refusals.record_finished(db, utcnow())


async def deliver_outbox(app: FastAPI) -> int:
    return await deliver_due(app.state.sessionmaker)


async def deliver_owner_notices(app: FastAPI) -> int:
    return await deliver_notices(app.state.sessionmaker, app.state.mailer)


async def watch_ticket_systems(app: FastAPI) -> int:
    return await watch_tickets(app.state.sessionmaker)


async def grant_owed_access(app: FastAPI) -> int:
    return await grant_owed(app.state.sessionmaker)


async def retry_provider_ends(app: FastAPI) -> int:
    return await retry_pending_ends(app.state.sessionmaker)


async def reconcile_providers(app: FastAPI) -> int:
    return await reconcile_due(app.state.sessionmaker)


async def sweep_provider_devices(app: FastAPI) -> int:
    seconds = app.state.settings.provider_sweep_seconds
    if not seconds:
        return 0
    return await sweep_devices(app.state.sessionmaker, every=timedelta(seconds=seconds))


async def publish_checkpoint(app: FastAPI) -> int:
    """Copy the latest checkpoint outside the database (rollback evidence), first signing
    one over any records not yet covered, so the published head is the current one."""
    await sign_checkpoint(app)
    async with app.state.sessionmaker() as db:
        size = await publish(db)
    before: int = getattr(app.state, "published_size", 0)
    app.state.published_size = size
    return max(0, size - before)


async def check_audit_log(app: FastAPI) -> bool:
    """At start-up: is the database at or ahead of the last published checkpoint?

    A rollback (an old backup restored, the log truncated) is reported loudly and makes
    /readyz fail; the broker keeps running so that an operator can investigate.
    """
    async with app.state.sessionmaker() as db:
        status = await compare_with_published(db)
    app.state.audit_status = status
    if status.ok:
        log.info("audit.published_checkpoint_ok", detail=status.detail)
    else:
        log.critical("audit.rollback_detected", detail=status.detail)
    return status.ok


JOBS: list[tuple[str, Callable[[FastAPI], Awaitable[int]]]] = [
    ("sessions.swept", sweep_once),
    ("refusals.recorded", record_refusals),
    ("connectors.delivered", deliver_outbox),
    ("notices.delivered", deliver_owner_notices),
    ("connectors.tickets_watched", watch_ticket_systems),
    ("providers.grants_owed", grant_owed_access),
    ("providers.ends_retried", retry_provider_ends),
    ("providers.reconciled", reconcile_providers),
    ("providers.swept", sweep_provider_devices),
    ("audit.published", publish_checkpoint),
]


async def run_jobs_once(app: FastAPI) -> dict[str, int]:
    done: dict[str, int] = {}
    for name, job in JOBS:
        try:
            done[name] = await job(app)
        except Exception as exc:  # the next job and the next round still run; logged, not lost
            log.error("background.job_failed", job=name, exc_info=exc)
            continue
        if done[name]:
            log.info(name, count=done[name])
    return done


async def sign_checkpoint(app: FastAPI) -> int:
    """Cover the records sealed since the last checkpoint; returns the new size (0: none)."""
    from broker.evidence.checkpoints import sign_if_due

    signed = await sign_if_due(app.state.sessionmaker)
    return 0 if signed is None else signed.size


async def timestamp_checkpoint(app: FastAPI) -> int:
    """Publish the current head, then have the TSA timestamp it (if not done yet)."""
    from broker.evidence.timestamps import timestamp_latest

    await publish_checkpoint(app)
    settings = app.state.settings
    return await timestamp_latest(
        app.state.sessionmaker, app.state.tsa, settings.resolved_publish_dir
    )


async def _every(
    seconds: float, job: Callable[[], Awaitable[object]], name: str, gate: Callable[[], bool]
) -> None:
    while True:
        await asyncio.sleep(seconds)  # sleep first: start-up stays quick
        if not gate():  # another replica holds the background lease
            continue
        try:
            await job()
        except Exception as exc:  # logged; the next tick tries again
            log.error("background.job_failed", job=name, exc_info=exc)


async def _siem_while_leading(app: FastAPI, gate: Callable[[], bool]) -> None:
    """The exporters run on the lease holder only: started when the lease is taken,
    cancelled when it is lost (their cursors are in the database, so the next holder
    resumes where they stopped)."""
    tasks: list[asyncio.Task[None]] = []
    try:
        while True:
            if gate() and not tasks:
                tasks = start_siem_exporters(app)
            elif not gate() and tasks:
                await _cancel(tasks)
                tasks = []
            await asyncio.sleep(min(1.0, app.state.settings.replica_heartbeat_seconds))
    finally:
        await _cancel(tasks)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def start_siem_exporters(app: FastAPI) -> list[asyncio.Task[None]]:
    """One exporter loop per configured SIEM target (broker.siem.exporter)."""
    from broker.siem.exporter import run_exporter

    settings = app.state.settings
    return [
        asyncio.create_task(
            run_exporter(app.state.sessionmaker, settings, target), name=f"siem-{target.name}"
        )
        for target in settings.siem_targets
    ]


async def start_background_tasks(app: FastAPI) -> Callable[[], Awaitable[None]]:
    from broker.evidence.verification import Verifications
    from broker.replicas.service import Membership

    settings = app.state.settings
    membership = Membership(settings, app.state.sessionmaker)
    await membership.start()
    app.state.replica = membership
    gate = membership.holds_background
    await check_audit_log(app)
    verifications = Verifications(app.state.sessionmaker, processes=settings.verify_processes)
    app.state.verifications = verifications

    async def _sweep() -> None:
        await run_jobs_once(app)

    async def _verify() -> None:
        await verifications.start("schedule")

    loops: list[tuple[float, Callable[[], Awaitable[object]], str]] = [
        # Tests (long sweep interval) drive these jobs themselves.
        (settings.sweep_interval_seconds, _sweep, "deadline-sweeper"),
        (settings.checkpoint_interval_seconds, partial(sign_checkpoint, app), "checkpoints"),
    ]
    if settings.verify_interval_seconds:
        loops.append((settings.verify_interval_seconds, _verify, "audit-verification"))
    if settings.tsa_url:
        from broker.evidence.timestamps import authority

        app.state.tsa = authority(settings.tsa_url, settings.tsa_certs)
        job = partial(timestamp_checkpoint, app)
        loops.append((settings.timestamp_interval_seconds, job, "timestamps"))
    tasks = [asyncio.create_task(_every(s, job, name, gate), name=name) for s, job, name in loops]
    if settings.siem_targets:
        tasks.append(asyncio.create_task(_siem_while_leading(app, gate), name="siem"))

    async def _stop() -> None:
        await _cancel(tasks)
        await verifications.stop()
        try:  # the tail sealed since the last tick is covered before the process ends
            if gate():  # by the lease holder; another replica's tail, by the holder's tick
                await sign_checkpoint(app)
        except Exception as exc:  # a broken database: logged, the next start signs it
            log.error("audit.final_checkpoint_failed", exc_info=exc)
        await membership.stop()

    return _stop
