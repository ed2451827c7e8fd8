"""The application factory: settings, database, audit log, routers, the error handlers."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import __version__
from broker.config import Settings, get_settings
from broker.db.engine import create_engine, create_sessionmaker
from broker.errors import BrokerError, RateLimited, status_for
from broker.evidence.setup import build_audit_log
from broker.flows.lifecycle import LIFECYCLE
from broker.logging import configure_logging
from broker.metrics import HTTP_REQUESTS
from broker.notices.mailer import mailer_for
from broker.ui.kit import is_page, render_refusal

log = structlog.get_logger("broker.app")
FILE_UPLOAD = "/files/content"  # the one path whose body may exceed max_body_bytes


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class RequestContext:
    """Binds a request id for logs, refuses oversized bodies and NULs in the address before
    anything reads them, counts responses and names the request id in each.

    Pure ASGI: Starlette's ``BaseHTTPMiddleware`` runs the app in a task of its own and
    streams the response through a memory channel, which cost about a tenth of a
    ``/healthz`` request; this wraps ``send`` instead."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        length: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = request_id or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        # A file upload streams past the broker's body limit: the group's size limit holds it.
        streamed = scope["method"] == "PUT" and scope["path"].endswith(FILE_UPLOAD)
        if (
            length is not None
            and not streamed
            and (not length.isdigit() or int(length) > self.max_body)
        ):
            refusal = error_response(413, "payload_too_large", f"body over {self.max_body} bytes")
            refusal.headers["x-request-id"] = request_id
            await refusal(scope, receive, send)
            HTTP_REQUESTS.labels(method=scope["method"], status="413").inc()
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # No text the broker keeps or looks up holds a NUL, and PostgreSQL refuses one
            # in any text parameter (a 500): refused here for every path and query at once.
            refusal = error_response(422, "invalid_request", "NUL characters are not allowed")
            refusal.headers["x-request-id"] = request_id
            await refusal(scope, receive, send)
            HTTP_REQUESTS.labels(method=scope["method"], status="422").inc()
            return
        status = 500  # unless the app starts a response
        tag = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), tag]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_REQUESTS.labels(method=scope["method"], status=str(status)).inc()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, exc: BrokerError) -> Response:
        status = status_for(exc)
        log.info("request.refused", status=status, error=exc.code, path=request.url.path)
        if is_page(request):  # admitted by the page kit: the same status, as an HTML page
            return render_refusal(request, exc)
        response = error_response(status, exc.code, exc.detail)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request.crashed", path=request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred; see the log")


_heap_frozen = False


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, routes, the app) out of the collector's sight, once
    per process. CPython's full collection walks every tracked object: about 180,000 at
    start-up, which paused the event loop, and with it every request, agent link and
    technician socket, for 60-90 ms a few times a minute under load. Frozen objects are never
    collected; they live as long as the process anyway."""
    global _heap_frozen  # noqa: PLW0603 - once per process, whichever app starts first
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()  # garbage of start-up is freed, not frozen
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from broker.tasks import start_background_tasks

        engine = create_engine(settings.database_url)
        audit_log = build_audit_log(settings)
        app.state.engine = engine
        app.state.audit_log = audit_log
        app.state.sessionmaker = create_sessionmaker(
            engine, info={"audit_log": audit_log, "settings": settings, "lifecycle": LIFECYCLE}
        )
        stoppers = [await start_background_tasks(app)]
        if settings.gateway_enabled:
            from broker.gateway.server import start_gateway

            stoppers.append(await start_gateway(app))
        freeze_startup_heap()  # after start-up, with or without the gateway
        log.info("broker.started", version=__version__, url=settings.base_url)
        try:
            yield
        finally:
            for stop in reversed(stoppers):
                await stop()
            await engine.dispose()

    configure_logging(settings.log_format or _default_format(settings))
    app = FastAPI(
        title="supportbroker",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    app.state.settings = settings
    # The device owners' mail: SMTP when configured, else the null mailer (broker.notices).
    app.state.mailer = mailer_for(settings)
    app.add_middleware(RequestContext, max_body=settings.max_body_bytes)
    _install_error_handlers(app)
    _include_routers(app)
    from broker.openapi import install as describe_errors

    describe_errors(app)
    return app


def _default_format(settings: Settings) -> str:
    return "console" if settings.environment == "development" else "json"


def _include_routers(app: FastAPI) -> None:
    from broker.auth.router import router as auth_router
    from broker.connectors.router import link_router as ticket_link_router
    from broker.connectors.router import router as connectors_router
    from broker.consent.pages import router as consent_pages
    from broker.consent.router import router as consent_router
    from broker.devices.router import router as devices_router
    from broker.evidence.router import router as evidence_router
    from broker.gateway.pages import pages_router as terminal_pages
    from broker.gateway.router import router as gateway_router
    from broker.health import router as health_router
    from broker.history.pages import router as history_pages
    from broker.history.router import router as history_router
    from broker.sessions.router import router as sessions_router
    from broker.tickets.router import router as tickets_router
    from broker.ui.auditor import router as auditor_pages
    from broker.ui.pages import router as ui_pages
    from broker.ui.reports import router as report_pages

    for router in (
        auth_router,
        tickets_router,
        devices_router,
        sessions_router,
        consent_router,
        evidence_router,
        connectors_router,
        gateway_router,
        history_router,
    ):
        app.include_router(router, prefix="/api/v1")
    for router in (
        health_router,
        consent_pages,
        history_pages,
        terminal_pages,
        ticket_link_router,
    ):
        app.include_router(router)
    app.include_router(auditor_pages)
    app.include_router(report_pages)
    app.include_router(ui_pages)
