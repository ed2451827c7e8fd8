"""Liveness, readiness and Prometheus metrics.

Readiness asks the database, with a time limit: a replica cut off from PostgreSQL by a
dropped route gets no error, its connections just hang, and the load balancer must still
hear "not ready" (docs/DEPLOY.md, "Failures"). One probe is in flight at a time; a probe
without an answer in time is left to finish on its own (cancelling it would wait for the
same hung connection to roll back) and every readiness call until it ends answers 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.migrate import current_revisions, head_revisions
from broker.metrics import REGISTRY, set_sessions_by_state
from broker.sessions.service import count_by_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no dependencies checked)."""
    return {"status": "ok"}


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Not ready: the database, its migrations or the audit log (a rollback)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["unavailable"]},
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                    "required": ["status", "error", "detail"],
                }
            }
        },
    }
}


async def _ask(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return await current_revisions(engine)


class DatabaseProbe:
    """The database's migration heads, asked at most once at a time and waited for at most
    ``timeout`` seconds from when the asking began."""

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self.engine, self.timeout = engine, timeout
        self._task: asyncio.Task[set[str]] | None = None
        self._until = 0.0

    async def heads(self) -> set[str]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(_ask(self.engine), name="readiness-probe")
            # Its outcome is read here or by a later call; never reported as unretrieved.
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._until = loop.time() + self.timeout
        task, left = self._task, self._until - loop.time()
        if left > 0:
            await asyncio.wait({task}, timeout=left)
        if not task.done():
            raise TimeoutError(
                f"the database has not answered within {self.timeout:g} s "
                "(cut off from PostgreSQL?)"
            )
        return task.result()


def _probe(request: Request) -> DatabaseProbe:
    probe = getattr(request.app.state, "readiness_probe", None)
    if probe is None or probe.engine is not request.app.state.engine:  # a new lifespan
        settings = request.app.state.settings
        probe = DatabaseProbe(request.app.state.engine, settings.readiness_timeout_seconds)
        request.app.state.readiness_probe = probe
    return probe


@router.get("/readyz", responses=NOT_READY)
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers within the readiness time-out and its schema is
    at the migrations' head."""
    settings = request.app.state.settings
    try:
        current = await _probe(request).heads()
    except Exception as exc:  # any database failure means "not ready"; the reason is returned
        return JSONResponse(
            {"status": "unavailable", "error": "database_unreachable", "detail": str(exc)[:200]},
            status_code=503,
        )
    heads = head_revisions(settings.database_url)
    if current != heads:
        return JSONResponse(
            {
                "status": "unavailable",
                "error": "migrations_pending",
                "detail": f"database at {sorted(current)}, code expects {sorted(heads)}",
            },
            status_code=503,
        )
    audit = getattr(request.app.state, "audit_status", None)
    if audit is not None and not audit.ok:
        return JSONResponse(
            {"status": "unavailable", "error": "audit_rollback", "detail": audit.detail},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "migration": sorted(current)})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    async with request.app.state.sessionmaker() as db:
        set_sessions_by_state(await count_by_state(db))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
