"""Shared fixtures: a real database per test (SQLite and PostgreSQL), the app, an HTTP client.

PostgreSQL: one private database per test run (``sb_test_<random>``) built by
``alembic upgrade head`` and dropped at the end; tables are truncated between tests.
SQLite: the migrated file is built once per run and copied for each test.
Outside CI a missing PostgreSQL skips its tests with the reason; in CI it fails them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from broker.app import create_app
from broker.config import Settings
from broker.db import migrate
from broker.serve import SHUTDOWN_GRACE_SECONDS
from tests.browser_login import Logins
from tests.factories import CHEAP_PASSWORD_HASH, Desk, cheap_password_env, make_desk

pytest_plugins = ["tests.watchdog"]  # a hung test's id is the last line printed

PG_HOST = os.environ.get("SUPPORTBROKER_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("SUPPORTBROKER_TEST_PG_USER", "postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="test", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _off_loop(fn: Any, *args: Any) -> Any:
    """Run blocking set-up (``asyncio.run``, Alembic) in a thread: fixtures that need it are
    reached from async fixtures, inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def _pg_reachable() -> str | None:
    try:
        _off_loop(asyncio.run, _pg_admin("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# What `make test-fast` leaves out (`-m "not postgres and not browser and not desktop and not
# slow"`): tests in a real browser, the desktop (Xvfb, VNC) tests, every PostgreSQL variant
# (and the replicas, which share one PostgreSQL database), and what is marked ``slow`` where
# it is written (the authorization matrix's cells beyond its sample, tests/authz; the API
# fuzzing; the audit log's Hypothesis properties; the tests that kill broker processes).
# A browser test is one that asks for the ``chromium`` fixture, or any end-to-end test (those
# start ``supportbroker serve`` as a process).
BROWSER_TESTS = ("tests/e2e/",)
DESKTOP_TESTS = ("tests/desktop/",)
# The replica cluster's tests run on PostgreSQL only (three brokers share one database).
POSTGRES_TESTS = ("tests/replicas/test_replicas.py", "tests/replicas/test_takeover.py")
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by what they need: ``browser`` (Chromium), ``desktop`` (an X display and a
    VNC server), ``postgres`` (any test run with a PostgreSQL database parameter, and the
    replicas)."""
    for item in items:
        where = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        if where.startswith(BROWSER_TESTS) or "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if where.startswith(DESKTOP_TESTS):
            item.add_marker(pytest.mark.desktop)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgresql" in callspec.params.values()
        needs_pg = "pg_url" in getattr(item, "fixturenames", ())
        if on_postgres or needs_pg or where.startswith(POSTGRES_TESTS):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    problem = _pg_reachable()
    if problem is not None:
        message = f"PostgreSQL at {PG_HOST}:5432 is not reachable ({problem})"
        if IN_CI:
            pytest.fail(f"{message}; in CI PostgreSQL is mandatory")
        pytest.skip(f"{message}: PostgreSQL tests skipped")
    name = f"sb_test_{secrets.token_hex(6)}"
    _off_loop(asyncio.run, _pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{name}"
    try:
        _off_loop(migrate.upgrade, url)
        yield url
    finally:
        _off_loop(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(autouse=True)
def _pg_built_outside_the_loop(request: pytest.FixtureRequest) -> None:
    """Build the run's PostgreSQL database before the test's event loop runs.

    ``db_url`` (async) would otherwise ask for ``pg_url`` from inside the loop; ``pg_url``
    copes (its blocking set-up runs in a thread), but the first test to need it would then
    stall its loop for the whole migration. Asking here, synchronously, caches it first.
    """
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    _off_loop(migrate.upgrade, f"sqlite+aiosqlite:///{path}")
    return path


async def _truncate_pg(url: str) -> None:
    from broker.db.engine import create_engine

    engine = create_engine(url)
    async with engine.begin() as conn:
        names = (
            (
                await conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                        "AND tablename <> 'alembic_version'"
                    )
                )
            )
            .scalars()
            .all()
        )
        if names:
            joined = ", ".join(f'"{n}"' for n in names)
            await conn.execute(text(f"TRUNCATE {joined} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """A migrated, empty database: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "broker.db"
        shutil.copy(sqlite_template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    url: str = request.getfixturevalue("pg_url")
    await _truncate_pg(url)
    yield url
    await _truncate_pg(url)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(db_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": db_url,
        "data_dir": tmp_path / "data",
        "secret_key": SecretStr("test-secret-key-" + "x" * 16),
        "sweep_interval_seconds": 3600.0,
        "gateway_enabled": False,  # tests/gateway starts it on a free port
        "log_format": "console",
        **CHEAP_PASSWORD_HASH,
    }
    values.update(settings_overrides)
    return Settings(**values)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
        yield c


@pytest.fixture
async def db(app: Any) -> AsyncIterator[AsyncSession]:
    """A session on the app's database, with the same audit log; commit what you create."""
    async with app.state.sessionmaker() as session:
        yield session


@pytest.fixture
async def desk(app: Any) -> Desk:
    """A technician's desk (user, token, device group, device); override it in a module for
    another group name or policy."""
    return await make_desk(app)


@pytest.fixture
def broker_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment a command-line test's ``supportbroker`` reads: the test's database,
    a data folder, a secret; the settings it yields. Extend it in a module for more."""
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", db_url)
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "test")
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", "cli-test-secret-" + "v" * 16)
    for name, value in cheap_password_env().items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- the browser tests' scaffolding: the app on a real port, a headless Chromium ----------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def live_url(app: Any) -> AsyncIterator[str]:
    """The test's app served by uvicorn on a free loopback port (the lifespan already ran;
    WebSockets work, as the terminal needs)."""
    import uvicorn

    # A bounded graceful shutdown, as `supportbroker serve` has: a socket handler still open
    # when the test ends is cancelled after a few seconds instead of holding the teardown
    # (and the whole suite) until pytest's timeout.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        ws="websockets",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium (``/usr/bin/chromium``, driven by Playwright); it refuses to run
    without the npm front-end packages the pages load. Skipped where it is not installed,
    except in CI."""
    from broker.gateway.pages import VENDOR
    from broker.ui.common import UI_VENDOR

    if not Path(CHROMIUM).exists() and not IN_CI:
        pytest.skip(f"{CHROMIUM} is not installed (the browser tests need a real Chromium)")
    packages = {**UI_VENDOR, **VENDOR}
    missing = [name for name, path in packages.items() if not path.exists()]
    if missing:
        pytest.fail(f"front-end packages missing from node_modules: {missing} (run npm install)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def logins(live_url: str, chromium: Any) -> AsyncIterator[Logins]:
    """Chromium; each person logs in once through the login form (tests/browser_login.py)."""
    found = Logins(chromium, live_url)
    try:
        yield found
    finally:
        await found.close()
