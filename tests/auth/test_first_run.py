"""First run: ``serve`` creates ``admin`` with a printed one-time password, once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import Settings
from broker.db.engine import create_engine
from broker.db.migrate import current_revisions, head_revisions
from broker.serve import _bootstrap, serve
from tests.auth.conftest import assert_error, system_events


async def test_initial_admin_must_change_the_one_time_password(
    app: Any, client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await _bootstrap(settings)
    assert created is not None
    username, password = created
    assert username == "admin"
    login = await client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": password}
    )
    assert login.status_code == 200, login.text
    assert login.json()["must_change_password"] is True
    assert login.json()["user"]["role"] == "admin"
    h = {"X-CSRF-Token": login.json()["csrf_token"]}
    assert "one-time password" in assert_error(await client.get("/api/v1/users"), 403)
    change = {"current_password": password, "new_password": "admin-chose-this-one"}
    assert (await client.post("/api/v1/auth/password", json=change, headers=h)).status_code == 200
    assert (await client.get("/api/v1/users")).status_code == 200
    assert await _bootstrap(settings) is None  # later runs create nothing
    created_events = [p for _, p in await system_events(app, "user.created")]
    assert len(created_events) == 1
    assert created_events[0]["actor"]["kind"] == "system"
    assert password not in str(await system_events(app))


def test_serve_prints_the_password_only_on_the_first_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No database yet, as on a fresh clone: serve must create and migrate it itself.
    target = tmp_path / "var" / "serve.db"
    settings = Settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{target}",
        data_dir=tmp_path / "data",
        secret_key="serve-test-secret-" + "z" * 16,  # type: ignore[arg-type]
        log_format="console",
    )
    started: list[tuple[str, int]] = []
    # The server itself is not what is tested: record that it would start, and where.
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **_: started.append((host, port)))
    assert serve(settings, port=18080) == 0
    first = capsys.readouterr().out
    heads = ", ".join(sorted(head_revisions(settings.database_url)))
    assert f"(migrated to {heads})" in first
    assert asyncio.run(_revisions(settings.database_url)) == head_revisions(settings.database_url)
    assert "log in:   http://127.0.0.1:18080/login" in first
    assert "first run: created admin account 'admin'" in first
    password = re.search(r"one-time password: (\S+)", first)
    assert password is not None
    assert len(password[1]) >= 12
    assert serve(settings, port=18080) == 0
    second = capsys.readouterr().out
    assert "one-time password" not in second
    assert password[1] not in second
    assert "supportbroker user reset-password USERNAME" in second
    assert started == [("127.0.0.1", 18080)] * 2


async def _revisions(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return await current_revisions(engine)
    finally:
        await engine.dispose()
