"""The browser terminal page and the xterm.js files it loads from node_modules (npm).

Include ``pages_router`` at the root (no prefix). Library files are served from the npm
install, never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.errors import NotFound
from web import STATIC_DIR, TEMPLATES_DIR

pages_router = APIRouter(include_in_schema=False)
_env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape())
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


@pages_router.get("/terminal/{session_id}", response_class=HTMLResponse)
async def terminal_page(
    session_id: str,
    _: Annotated[Principal, Depends(require(Scope.sessions_read))],
    mode: Annotated[str, Query(pattern="^(control|join|watch)$")] = "control",
) -> str:
    return _env.get_template("terminal/session.html").render(session_id=session_id, mode=mode)


@pages_router.get("/vendor/{path:path}")
async def vendor(path: str) -> FileResponse:
    target = VENDOR.get(path)
    if target is None or not target.exists():
        raise NotFound(f"{path} is not installed (run `npm install`)")
    return FileResponse(target)


@pages_router.get("/static/terminal.js")
async def terminal_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "terminal.js", media_type="text/javascript")
