"""What the browser tests share: the test's app served on a loopback port, and a headless
Chromium (``/usr/bin/chromium``, driven by Playwright) that refuses to run without the npm
front-end packages the pages load."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.ui.common import UI_VENDOR

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() == "true"
ARGS = [
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
    """The test's app served by uvicorn on a free loopback port (the lifespan already ran)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
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
    if not Path(CHROMIUM).exists() and not IN_CI:
        pytest.skip(f"{CHROMIUM} is not installed (the browser tests need a real Chromium)")
    missing = [name for name, path in UI_VENDOR.items() if not path.exists()]
    if missing:
        pytest.fail(f"front-end packages missing from node_modules: {missing} (run npm install)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
