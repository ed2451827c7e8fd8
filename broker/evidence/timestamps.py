"""RFC 3161 timestamps of published checkpoints, on their own cadence
(``timestamp_interval_seconds``, when ``tsa_url`` is set).

Each tick sends the SHA-256 of the latest published checkpoint's note to the time-stamping
authority unless that checkpoint has a token already, checks the answer against the trusted
certificates (``tsa_certs``) and the request's nonce, and keeps it beside the checkpoint: in
``audit_timestamps`` (which evidence bundles read) and as ``checkpoint-<size>.tsr`` next to
``checkpoint-<size>.note`` in the publication directory. A TSA that is down or answers
nonsense is retried a few times within the tick, then recorded as
``audit.timestamp_failed``; publication never waits for it. Replicas may ask for the same
checkpoint; the first to store its token wins, the others drop theirs.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from cryptography import x509
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.errors import AuditError
from audit.stamps import store_timestamp, untimestamped_checkpoint
from audit.timestamp import Timestamp, load_tsa_certificates, request_for, verify_timestamp
from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event

log = structlog.get_logger("broker.evidence.timestamps")

ATTEMPTS = 3
FIRST_WAIT = 0.5  # seconds before the second attempt; doubles after each failure
TIMEOUT = 10.0


@dataclass(frozen=True)
class Authority:
    url: str
    trusted: list[x509.Certificate]


def authority(url: str, certs: Path) -> Authority:
    return Authority(url, load_tsa_certificates(certs))


async def ask(tsa: Authority, note: str) -> tuple[bytes, Timestamp]:
    """One verified token over ``note``; raises AuditError or httpx.HTTPError."""
    query, nonce = request_for(note)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        answer = await client.post(
            tsa.url, content=query, headers={"Content-Type": "application/timestamp-query"}
        )
    if answer.status_code != 200:
        raise AuditError(f"the TSA answered HTTP {answer.status_code}")
    return answer.content, verify_timestamp(answer.content, note, tsa.trusted, nonce=nonce)


async def timestamp_latest(
    maker: async_sessionmaker[AsyncSession], tsa: Authority, publish_dir: Path | None
) -> int:
    """Timestamp the latest checkpoint if it has no token yet; its size (0: nothing done)."""
    async with maker() as db:
        checkpoint = await untimestamped_checkpoint(await db.connection())
    if checkpoint is None:
        return 0
    wait, problem = FIRST_WAIT, ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response, stamp = await ask(tsa, checkpoint.note)
            break
        except (httpx.HTTPError, AuditError) as exc:
            problem = str(exc) or type(exc).__name__
            log.warning("audit.timestamp_attempt_failed", attempt=attempt, error=problem)
            if attempt < ATTEMPTS:
                await asyncio.sleep(wait)
                wait *= 2
    else:
        async with transaction(maker) as db:
            await record_event(
                db,
                EventType.audit_timestamp_failed,
                ticket=None,
                actor=SYSTEM_ACTOR,
                data={
                    "checkpoint_size": checkpoint.size,
                    "tsa_url": tsa.url,
                    "attempts": ATTEMPTS,
                    "error": problem[:500],
                },
            )
        return 0
    try:
        async with transaction(maker) as db:
            conn = await db.connection()
            await store_timestamp(conn, checkpoint.size, response, stamp, utcnow())
            await record_event(
                db,
                EventType.audit_checkpoint_timestamped,
                ticket=None,
                actor=SYSTEM_ACTOR,
                data={
                    "checkpoint_size": checkpoint.size,
                    "gen_time": stamp.gen_time.isoformat(),
                    "tsa": stamp.tsa,
                    "tsa_url": tsa.url,
                },
            )
    except IntegrityError:  # another broker process kept a token for it meanwhile
        log.info("audit.timestamp_kept_elsewhere", checkpoint_size=checkpoint.size)
        return 0
    if publish_dir is not None:
        _publish_token(publish_dir, checkpoint.size, response)
    return checkpoint.size


def _publish_token(directory: Path, size: int, response: bytes) -> None:
    """``checkpoint-<size>.tsr`` beside the published note (what ``openssl ts -verify`` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{size:012d}.tsr"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(response)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
