"""``python -m audit``: verify evidence offline.

``verify BUNDLE --public-key KEY`` checks a ticket's evidence bundle; ``verify-log
--database-url URL --public-key KEY`` checks a whole log in a database (progress on stderr).
Exit 0 only if every check passes; 1 when evidence fails; 2 for usage or unreadable input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from audit.bundle import verify_bundle
from audit.checkpoint import load_verifier
from audit.errors import AuditError


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} records")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _verify_log(url: str, key_source: str) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    from audit.store import verify_database

    verifier = load_verifier(key_source)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            report = await verify_database(conn, verifier, progress=_progress)
    finally:
        await engine.dispose()
    print(report.verdict())
    return 0 if report.ok else 1


def build_parser(prog: str = "python -m audit") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Verify supportbroker evidence.")
    sub = parser.add_subparsers(dest="command", required=True)
    bundle = sub.add_parser("verify", help="verify a ticket's evidence bundle offline")
    bundle.add_argument("bundle", type=Path)
    bundle.add_argument("--public-key", required=True, help="verifier key file or text")
    log = sub.add_parser("verify-log", help="verify a whole audit log in a database")
    log.add_argument("--database-url", required=True)
    log.add_argument("--public-key", required=True)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "verify":
            verifier = load_verifier(args.public_key)
            try:
                data = args.bundle.read_bytes()
            except OSError as exc:
                print(f"cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
                return 2
            report = verify_bundle(data, verifier)
            print(report.verdict())
            return 0 if report.ok else 1
        return asyncio.run(_verify_log(args.database_url, args.public_key))
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
