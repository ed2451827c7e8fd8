"""The browser terminal and screen pages and the libraries they load from node_modules (npm).

Include ``pages_router`` at the root (no prefix). Library files are served from the npm
install, never copied into the repository; noVNC's ES modules are served as their tree
under ``/vendor/novnc/`` (its ``core/`` and ``vendor/`` folders, JavaScript only) so their
relative imports resolve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.errors import NotFound
from broker.gateway import access, kept
from broker.ui.kit import page_user, templates
from web import STATIC_DIR

pages_router = APIRouter(include_in_schema=False)
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
VENDOR = {
    "xterm/lib/xterm.js": NODE_MODULES / "@xterm/xterm/lib/xterm.js",
    "xterm/css/xterm.css": NODE_MODULES / "@xterm/xterm/css/xterm.css",
    "asciinema-player/asciinema-player.min.js": NODE_MODULES
    / "asciinema-player/dist/bundle/asciinema-player.min.js",
    "asciinema-player/asciinema-player.css": NODE_MODULES
    / "asciinema-player/dist/bundle/asciinema-player.css",
    "chart.js/chart.umd.min.js": NODE_MODULES / "chart.js/dist/chart.umd.min.js",
}
NOVNC = NODE_MODULES / "@novnc/novnc"
NOVNC_PREFIX = "novnc/"
NOVNC_FOLDERS = ("core/", "vendor/")


def _novnc_file(path: str) -> Path | None:
    """A JavaScript file inside noVNC's core/ or vendor/ (None for anything else)."""
    rest = path.removeprefix(NOVNC_PREFIX)
    if not rest.startswith(NOVNC_FOLDERS) or not rest.endswith(".js"):
        return None
    target = (NOVNC / rest).resolve()
    return target if target.is_relative_to(NOVNC.resolve()) else None


@pages_router.get("/terminal/{session_id}", response_model=None)
async def terminal_page(
    request: Request,
    session_id: str,
    who: Annotated[Principal, page_user(lambda p: p.has(Scope.sessions_read))],
    mode: Annotated[str, Query(pattern="^(control|join|watch)$")] = "control",
) -> Response:
    """The page a logged-in browser opens; anyone else is sent to the login first. It carries
    the CSRF token of the login, which the script sends when it asks for a terminal ticket."""
    html = templates.env.get_template("terminal/session.html").render(
        session_id=session_id, mode=mode, csrf_token=who.csrf_token or ""
    )
    return HTMLResponse(html)


@pages_router.get("/terminal/{session_id}/transfers", response_class=HTMLResponse)
async def watched_transfers(
    request: Request,
    session_id: str,
    who: Annotated[Principal, page_user(lambda p: p.has(Scope.sessions_read))],
    db: DbSession,
    mode: Annotated[str, Query(pattern="^(join|watch)$")] = "watch",
) -> Response:
    """The session's file transfers as sealed, for the watch (and join) page, which asks
    every few seconds: watchers see each transfer happen; nothing here starts one. Whoever
    may attach in ``mode`` may read it (``access.authorize``)."""
    record = await access.authorize(db, who, session_id, mode)
    transfers = await kept.session_transfers(db, session_id, record.ticket.ref)
    return HTMLResponse(
        templates.env.get_template("terminal/_transfers.html").render(transfers=transfers)
    )


@pages_router.get("/files/{session_id}", response_model=None)
async def files_page(
    request: Request,
    session_id: str,
    who: Annotated[Principal, page_user(lambda p: p.has(Scope.sessions_write))],
    db: DbSession,
) -> Response:
    """The session's files (docs/FILES.md): folders, upload, download, through the broker.
    Anyone not logged in is sent to the login first; the API decides who may transfer."""
    html = templates.env.get_template("files/session.html").render(
        session_id=session_id, csrf_token=who.csrf_token or ""
    )
    return HTMLResponse(html)


@pages_router.get("/desktop/{session_id}", response_class=HTMLResponse)
async def desktop_page(
    session_id: str,
    principal: Annotated[Principal, Depends(require(Scope.sessions_read))],
    mode: Annotated[str, Query(pattern="^(control|join|watch)$")] = "control",
) -> str:
    """The device's screen (noVNC); what the viewer may do is decided by the broker. The
    page carries the cookie session's CSRF token for its one ticket request."""
    return templates.env.get_template("desktop/session.html").render(
        session_id=session_id, mode=mode, csrf_token=principal.csrf_token or ""
    )


@pages_router.get("/vendor/{path:path}")
async def vendor(path: str) -> FileResponse:
    target = _novnc_file(path) if path.startswith(NOVNC_PREFIX) else VENDOR.get(path)
    if target is None or not target.exists():
        raise NotFound(f"{path} is not installed (run `npm install`)")
    return FileResponse(target)


@pages_router.get("/static/terminal.js")
async def terminal_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "terminal.js", media_type="text/javascript")


@pages_router.get("/static/files.js")
async def files_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "files.js", media_type="text/javascript")


@pages_router.get("/static/desktop.js")
async def desktop_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "desktop.js", media_type="text/javascript")
