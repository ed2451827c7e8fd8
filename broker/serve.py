"""``supportbroker serve``: migrate, create the first admin if there is none, run the server."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from sqlalchemy import text
from sqlalchemy.engine.url import make_url

from broker.config import Settings
from broker.db import migrate
from broker.db.aftercommit import transaction
from broker.errors import IdentityMismatch

BOOTSTRAP_LOCK = 0x5342_424F_4F54_5354  # "SBBOOTST"
# On a stop, open sockets (a terminal, a forward) are told to close; a handler still running
# after this many seconds is cancelled, so a restart never waits on one forever.
SHUTDOWN_GRACE_SECONDS = 10


async def _bootstrap(settings: Settings) -> tuple[str, str] | None:
    from broker.auth.service import ensure_initial_admin
    from broker.db.engine import create_engine, create_sessionmaker
    from broker.evidence.setup import build_audit_log
    from broker.flows.lifecycle import LIFECYCLE
    from broker.replicas.service import check_identity, fingerprints

    engine = create_engine(settings.database_url)
    audit_log = build_audit_log(settings)
    info = {"audit_log": audit_log, "settings": settings, "lifecycle": LIFECYCLE}
    maker = create_sessionmaker(engine, info=info)
    try:
        held = fingerprints(settings, audit_log)
        async with transaction(maker) as db:
            if db.get_bind().dialect.name == "postgresql":
                # Replicas starting together: one seals the identity and creates the first
                # admin, the others wait here and then find both done.
                await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_LOCK})
            # Before anything is sealed: a replica with other keys must not write a record.
            await check_identity(db, held)
            return await ensure_initial_admin(db)
    finally:
        await engine.dispose()


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    if host or port:
        settings = settings.model_copy(
            update={"host": host or settings.host, "port": port or settings.port}
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    try:
        created = asyncio.run(_bootstrap(settings))
    except IdentityMismatch as exc:
        print(f"supportbroker refuses to start: {exc.detail}", file=sys.stderr)
        return 3
    url = settings.base_url
    out = sys.stdout
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    revision = ", ".join(sorted(migrate.head_revisions(settings.database_url)))
    print(f"supportbroker is starting on {url}", file=out)
    print(f"  database: {database} (migrated to {revision})", file=out)
    print(f"  data:     {settings.data_dir.resolve()}", file=out)
    if settings.replica_id:
        print(f"  replica:  {settings.replica_id}", file=out)
    if settings.gateway_enabled:
        print(
            f"  agents:   {settings.gateway_host}:{settings.gateway_port} (SSH gateway)", file=out
        )
    print(f"  log in:   {url}/login", file=out)
    print(f"  API docs: {url}/api/docs", file=out)
    if created is not None:
        username, password = created
        print(f"  first run: created admin account {username!r}", file=out)
        print(f"  one-time password: {password}  (you will be asked to change it)", file=out)
    else:
        print("  forgot a password? supportbroker user reset-password USERNAME", file=out)
    out.flush()

    from broker.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0
