"""``supportbroker audit ...``: verify evidence, export a bundle, erase, rotate, publish.

``audit verify BUNDLE --public-key KEY [--tsa-cert PEM]`` needs no database (``python -m
audit`` runs the same); the others work on the broker's configured database and keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from audit.errors import AuditError
from audit.publish import CheckpointPublisher
from audit.store import AuditLog
from broker.evidence.events import EventType
from broker.evidence.queries import verify_all
from broker.evidence.service import SYSTEM_ACTOR, Actor, audit_log_of, record_event


def _plain_verify(args: argparse.Namespace) -> int:
    from audit.cli import run

    return run(
        argparse.Namespace(
            command="verify",
            bundle=args.bundle,
            public_key=args.public_key,
            tsa_cert=args.tsa_cert,
        )
    )


def _progress(done: int, total: int) -> None:
    from audit.cli import _progress as bar

    bar(done, total)


def _publisher(log: AuditLog, where: Path | None) -> CheckpointPublisher | None:
    """Where the published checkpoints are: ``--published`` (a directory of notes, or the
    file all of them are appended to), else the broker's configured publisher."""
    from audit.publish import DirectoryPublisher, FileAppendPublisher

    if where is None:
        return log.publisher
    return FileAppendPublisher(where) if where.is_file() else DirectoryPublisher(where)


async def _verify_log(db: AsyncSession, args: argparse.Namespace) -> int:
    publisher = _publisher(audit_log_of(db), args.published)
    published = None
    try:
        published = publisher.latest() if publisher is not None else None
    except (OSError, AuditError) as exc:
        print(f"cannot read the published checkpoints: {exc}", file=sys.stderr)
        return 2
    report = await verify_all(db, _progress, processes=args.processes, published=published)
    print(report.verdict())
    if published is None:
        # Without a head kept outside the database, a rollback of the records together with
        # their tree state and checkpoints looks like a shorter, consistent log.
        print("no published checkpoint: a consistent rollback cannot be detected")
    elif report.ok:
        print(f"consistent with the published checkpoint at size {published.size}")
    return 0 if report.ok else 1


async def _export(db: AsyncSession, args: argparse.Namespace) -> int:
    from broker.evidence.queries import bundle_of
    from broker.gateway import playback

    granted = await playback.require_export_request(
        db, args.ticket, include_plaintext=args.plaintext, request_id=args.approval
    )
    data = await bundle_of(db, args.ticket, include_plaintext=args.plaintext)
    sealed: dict[str, Any] = {
        "via": "cli",
        "include_plaintext": args.plaintext,
        "reason": args.reason,
    }
    if granted is not None:
        # Who asked and who approved: the operator's export is theirs under dual control.
        sealed |= {
            "request_id": granted.id,
            "requester_id": granted.requester_id,
            "approved_by": granted.decided_by_id,
        }
    await record_event(
        db, EventType.evidence_exported, ticket=args.ticket, actor=SYSTEM_ACTOR, data=sealed
    )
    args.out.write_bytes(data)
    verifier = audit_log_of(db).signer.verifier
    print(f"wrote {args.out} ({len(data)} bytes)")
    if _erased(data):
        print(
            f"ERASED: {args.ticket} was erased; the bundle says so and the payloads sealed "
            "before the erasure can never be read (their hashes still verify)"
        )
    # A key written beside the bundle proves nothing to whoever receives both: a forger would
    # ship their own. The third party takes the key from where the operator published it.
    print(
        f"verify with: supportbroker audit verify {args.out} --public-key KEY, where KEY is "
        f"the log's published verifier key (fingerprint {verifier.fingerprint}; "
        "`supportbroker audit public-key` prints it for publishing), never a key that came "
        "with the bundle"
    )
    return 0


def _erased(bundle: bytes) -> bool:
    import io
    import json
    import zipfile

    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        return bool(json.loads(zf.read("manifest.json")).get("erased"))


class _CliCaller:
    """Who erases from the command line: the system (whoever runs it on the server)."""

    def actor(self) -> Actor:
        return dataclasses.replace(SYSTEM_ACTOR, role="cli")


async def _erase(db: AsyncSession, args: argparse.Namespace) -> int:
    from broker.errors import BrokerError
    from broker.flows.erasure import erase_ticket

    try:
        position = await erase_ticket(db, _CliCaller(), args.ticket, reason=args.reason)
    except BrokerError as exc:
        await db.rollback()  # nothing of a refused erasure stays
        print(f"not erased: {exc.detail}", file=sys.stderr)
        return 1
    # The caller's transaction commits next, then the WAL checkpoint (SQLite) runs.
    print(f"erased {args.ticket}; erasure recorded in the system stream at position {position}")
    return 0


async def _rotate(db: AsyncSession, args: argparse.Namespace) -> int:
    from audit.keys import LocalFileKeyProvider

    log = audit_log_of(db)
    if not isinstance(log.keys, LocalFileKeyProvider):
        print("rotate-kek works on the local key file; rotate Vault keys in Vault", file=sys.stderr)
        return 1
    new_id = log.keys.rotate()
    count = await log.rotate_kek(await db.connection(), log.keys)
    print(f"new key-encryption key {new_id}; re-wrapped {count} data keys")
    return 0


async def _public_key(db: AsyncSession, args: argparse.Namespace) -> int:
    print(audit_log_of(db).signer.verifier.encode())
    return 0


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="verify, export, erase, rotate the audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = sub.add_parser("verify", help="verify an evidence bundle offline")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--public-key", required=True)
    from audit.cli import add_processes_option, add_tsa_option

    add_tsa_option(verify)
    verify.set_defaults(plain=_plain_verify)

    verify_log = sub.add_parser(
        "verify-log", help="verify the whole log against the published checkpoints"
    )
    add_processes_option(verify_log)
    verify_log.add_argument(
        "--published",
        type=Path,
        metavar="DIR",
        help="published checkpoints to compare with (a directory, or the append file); "
        "default: the broker's own publication directory",
    )
    verify_log.set_defaults(handler=_verify_log)

    export = sub.add_parser("export", help="write a ticket's evidence bundle")
    export.add_argument("ticket", help="SYSTEM:EXTERNAL_ID, e.g. zammad:HD-4711")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--plaintext", action="store_true", help="include decrypted payloads")
    export.add_argument("--reason", required=True)
    export.add_argument(
        "--approval",
        metavar="REQUEST_ID",
        help="under dual control: the plaintext export request a second auditor approved",
    )
    export.set_defaults(handler=_export)

    erase = sub.add_parser("erase", help="crypto-shred a ticket's content")
    erase.add_argument("ticket")
    erase.add_argument("--reason", required=True)
    erase.set_defaults(handler=_erase)

    sub.add_parser("rotate-kek", help="new key-encryption key").set_defaults(handler=_rotate)
    sub.add_parser("public-key", help="print the verifier key").set_defaults(handler=_public_key)
