"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

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


@router.get("/readyz", responses=NOT_READY)
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at the migrations' head."""
    engine = request.app.state.engine
    settings = request.app.state.settings
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        current = await current_revisions(engine)
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
