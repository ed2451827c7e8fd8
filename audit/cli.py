"""``python -m audit``: verify evidence offline.

``verify BUNDLE --public-key KEY [--tsa-cert PEM]`` checks a ticket's evidence bundle (and
its RFC 3161 timestamp against the TSA certificates given); ``verify-log
--database-url URL --public-key KEY [--processes N]`` checks a whole log in a database
(progress on stderr), in N worker processes if asked. Exit 0 only if every check passes; 1
when evidence fails; 2 for usage or unreadable input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from audit.checkpoint import load_verifier
from audit.errors import AuditError


def process_count(text: str) -> int:
    """``--processes``: a whole number of at least 1 (argparse turns the error into usage)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_processes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        type=process_count,
        default=1,
        metavar="N",
        help="verify in N worker processes (default 1: leaves the other cores to the broker)",
    )


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} records")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _verify_log(url: str, key_source: str, processes: int) -> int:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine

    from audit.dbverify import verify_database

    verifier = load_verifier(key_source)
    try:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                # its own snapshot: the broker may be appending while this reads
                report = await verify_database(
                    conn, verifier, progress=_progress, processes=processes, snapshot=True
                )
        finally:
            await engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise AuditError(f"cannot read the audit log from {_shown(url)}: {first}") from exc
    print(report.verdict())
    return 0 if report.ok else 1


def _check_database(url: str) -> None:
    """Refuse a malformed URL, and a SQLite file that is not there (SQLite would create an
    empty one and the verification would report a missing table)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise AuditError(f"not a database URL: {exc}") from exc
    path = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and path not in (None, "", ":memory:")
    if on_disk and not Path(str(path)).is_file():
        raise AuditError(f"no SQLite database at {path}")


def _shown(url: str) -> str:
    """The URL without its password, for messages (``_check_database`` parsed it already)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def add_tsa_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsa-cert",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="trusted time-stamping authority certificate(s): check the bundle's timestamp "
        "(repeatable; the TSA's signer must chain to one of them)",
    )


def build_parser(prog: str = "python -m audit") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Verify supportbroker evidence.")
    sub = parser.add_subparsers(dest="command", required=True)
    bundle = sub.add_parser("verify", help="verify a ticket's evidence bundle offline")
    bundle.add_argument("bundle", type=Path)
    bundle.add_argument("--public-key", required=True, help="verifier key file or text")
    add_tsa_option(bundle)
    log = sub.add_parser("verify-log", help="verify a whole audit log in a database")
    log.add_argument("--database-url", required=True)
    log.add_argument("--public-key", required=True)
    add_processes_option(log)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "verify":
            # Imported here: verify-log needs neither (the bundle's X.509 and RFC 3161 code).
            from audit.bundle import verify_bundle
            from audit.timestamp import load_tsa_certificates

            verifier = load_verifier(args.public_key)
            trusted = [c for path in args.tsa_cert for c in load_tsa_certificates(path)]
            try:
                data = args.bundle.read_bytes()
            except OSError as exc:
                print(f"cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
                return 2
            report = verify_bundle(data, verifier, trusted)
            print(report.verdict())
            return 0 if report.ok else 1
        _check_database(args.database_url)
        return asyncio.run(_verify_log(args.database_url, args.public_key, args.processes))
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
