"""The ``supportbroker`` command: serve, migrate, and admin commands from each domain.

Each domain's ``cli.py`` exposes ``register(subparsers)``, adding sub-commands whose handler
(``set_defaults(handler=...)``) is ``async def handler(db, args) -> int``: it runs in one
transaction with the same audit wiring as a request. Domain errors become a message on
stderr and a non-zero exit, never a traceback; so do an unknown migration revision and a
database that cannot be reached or is not migrated (the message names the cause, never the
statement's parameters).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from alembic.util.exc import CommandError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from audit.errors import AuditError
from broker.config import Settings
from broker.db.aftercommit import transaction
from broker.errors import BrokerError

DbHandler = Callable[[AsyncSession, argparse.Namespace], Awaitable[int]]

EXIT_USAGE = 2
EXIT_ERROR = 1


class CliError(Exception):
    """A problem to print for the operator (exit code 1)."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise CliError(f"configuration error: {exc.errors()[0]['msg']}") from exc


async def run_in_transaction(
    settings: Settings, handler: DbHandler, args: argparse.Namespace
) -> int:
    from broker.db.engine import create_engine, create_sessionmaker
    from broker.evidence.setup import build_audit_log
    from broker.flows.lifecycle import LIFECYCLE

    engine = create_engine(settings.database_url)
    info = {"audit_log": build_audit_log(settings), "settings": settings, "lifecycle": LIFECYCLE}
    maker = create_sessionmaker(engine, info=info)
    try:
        async with transaction(maker) as db:
            return await handler(db, args)
    finally:
        await engine.dispose()


def _cmd_serve(args: argparse.Namespace) -> int:
    from broker.serve import serve

    return serve(load_settings(), host=args.host, port=args.port)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from broker.db import migrate

    settings = load_settings()
    try:
        migrate.upgrade(settings.database_url, args.revision)
    except CommandError as exc:
        raise CliError(f"migration: {exc}") from exc
    print(f"database migrated to {args.revision}")
    return 0


def database_problem(exc: DBAPIError | OSError) -> str:
    """One line saying what is wrong with the database, without the SQL or its parameters."""
    if isinstance(exc, OSError):
        return f"database unreachable: {exc.strerror or exc}"
    cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    hint = ""
    if "no such table" in cause or ("relation" in cause and "does not exist" in cause):
        hint = " (is the database migrated? run `supportbroker migrate`)"
    return f"database error: {cause}{hint}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supportbroker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the broker (migrates first)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(plain=_cmd_serve)

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("revision", nargs="?", default="head")
    mig.set_defaults(plain=_cmd_migrate)

    for module in _domain_cli_modules():
        module.register(sub)
    return parser


def _domain_cli_modules() -> list[Any]:
    import importlib

    names = [
        "broker.auth.cli",
        "broker.devices.cli",
        "broker.sessions.cli",
        "broker.evidence.cli",
        "broker.providers.cli",
        "broker.connectors.cli",
        "broker.gateway.cli",
        "broker.siem.cli",
        "broker.replicas.cli",
    ]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import problem inside the module: surface it
                raise
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "plain"):
            code: int = args.plain(args)
            return code
        handler: DbHandler = args.handler
        return asyncio.run(run_in_transaction(load_settings(), handler, args))
    except (BrokerError, CliError, AuditError) as exc:
        detail = exc.detail if isinstance(exc, BrokerError) else str(exc)
        print(f"supportbroker: error: {detail}", file=sys.stderr)
        return EXIT_ERROR
    except (DBAPIError, OSError) as exc:
        print(f"supportbroker: error: {database_problem(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
