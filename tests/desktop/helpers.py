"""An in-process agent whose desktop is a given X display, and small waits."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import load_enrollment
from agent.desktop import DesktopConfig
from agent.identity import load_or_create_key
from agent.runner import RunHandle, enroll, run
from agent.server import AgentCore
from broker.gateway.server import Gateway
from tests.gateway.helpers import RunningAgent, ScriptedPrompter, agent_settings, new_token


class DesktopAgent(RunningAgent):
    """The real agent (``agent.runner.run``) in a task, with its desktop on ``config``."""

    def __init__(self, settings: Any, prompter: ScriptedPrompter, config: DesktopConfig) -> None:
        enrollment = load_enrollment(settings)
        self.settings = settings
        self.prompter = prompter
        self.core = AgentCore(
            load_or_create_key(settings.key_path),
            prompter,
            pinned=enrollment.broker_fingerprint,
            device_id=enrollment.device_id,
            consent_timeout=settings.consent_timeout_seconds,
            shell_command=settings.shell_command,
            desktop=config,
        )
        self.handle = RunHandle(self.core, asyncio.Event())
        self.task = asyncio.create_task(run(settings, prompter, self.handle))
        self.device_id = enrollment.device_id

    async def stop(self) -> None:
        await super().stop()
        await self.core.desktops.close()


async def desktop_agent(
    app: Any,
    gateway: Gateway,
    tmp: Path,
    group: str,
    prompter: ScriptedPrompter,
    config: DesktopConfig,
) -> DesktopAgent:
    settings = agent_settings(tmp)
    await enroll(settings, f"127.0.0.1:{gateway.port}", await new_token(app, group), prompter)
    agent = DesktopAgent(settings, prompter, config)
    await agent.connected(gateway)
    return agent


def x11vnc_commands() -> list[str]:
    """The command lines of the x11vnc processes running now (ours and anyone's)."""
    done = subprocess.run(
        ["pgrep", "-a", "x11vnc"], capture_output=True, text=True, check=False, timeout=10
    )
    return [line for line in done.stdout.splitlines() if line.strip()]


def x11vnc_on(display: str) -> list[str]:
    """The command lines of the x11vnc processes sharing ``display`` (``:N``)."""
    return [c for c in x11vnc_commands() if f"-display {display} " in c + " "]


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (generous: CPUs are shared)."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(AssertionError):
                    last = check()
                    if last:
                        return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never happened: {what} (last {last!r})") from None
