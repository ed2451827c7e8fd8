"""Start-up rollback detection: an old copy of the database restored behind the published
checkpoint is reported loudly and keeps the broker from reporting ready."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from broker.app import create_app
from broker.config import Settings
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event
from broker.tasks import publish_checkpoint


def _settings(db: Path, data: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db}",
        data_dir=data,
        secret_key=SecretStr("test-secret-key-" + "x" * 16),
        sweep_interval_seconds=3600.0,
        gateway_enabled=False,
    )


async def _events(app: Any, n: int) -> None:
    async with app.state.sessionmaker() as db:
        for i in range(n):
            await record_event(
                db, EventType.ticket_updated, ticket="local:T-1", actor=SYSTEM_ACTOR, data={"i": i}
            )
        await db.commit()


async def test_restored_backup_is_reported_at_start(
    sqlite_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, backup, data = tmp_path / "b.db", tmp_path / "backup.db", tmp_path / "data"
    shutil.copy(sqlite_template, db)
    app = create_app(_settings(db, data))
    async with app.router.lifespan_context(app):
        await _events(app, 3)
        await publish_checkpoint(app)
        shutil.copy(db, backup)  # a naive file backup: it may miss rows still in the WAL
        await _events(app, 4)
        await publish_checkpoint(app)
    shutil.copy(backup, db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    app = create_app(_settings(db, data))
    async with app.router.lifespan_context(app):
        assert app.state.audit_status.ok is False
        assert "ROLLBACK" in app.state.audit_status.detail
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "audit_rollback"
    assert "audit.rollback_detected" in capsys.readouterr().err


async def test_a_log_ahead_of_the_published_checkpoint_is_fine(
    sqlite_template: Path, tmp_path: Path
) -> None:
    db, data = tmp_path / "b.db", tmp_path / "data"
    shutil.copy(sqlite_template, db)
    app = create_app(_settings(db, data))
    async with app.router.lifespan_context(app):
        await _events(app, 2)
        await publish_checkpoint(app)
        await _events(app, 5)
    app = create_app(_settings(db, data))
    async with app.router.lifespan_context(app):
        assert app.state.audit_status.ok is True
        assert "consistent" in app.state.audit_status.detail
