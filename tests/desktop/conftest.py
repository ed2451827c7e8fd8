"""Desktop fixtures: a real X display (Xvfb) with known pixels, the gateway app, xdotool.

Xvfb picks a free display number itself (``-displayfd``); each test gets its own display,
stopped by its pid at the end. Without Xvfb/x11vnc/xdotool the tests skip, except in CI
(``CI=true``), where a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.gateway.conftest import app, gateway, live_url, people, settings_overrides

__all__ = ["app", "gateway", "live_url", "people", "settings_overrides"]

IN_CI = os.environ.get("CI", "").lower() == "true"
TOOLS = ("Xvfb", "x11vnc", "xdotool", "xsetroot")
WIDTH, HEIGHT = 800, 600


@dataclass
class Display:
    name: str  # ":N"
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY",)}
        env["DISPLAY"] = self.name
        env["XDG_SESSION_TYPE"] = "x11"
        return env

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def paint(self, colour: str) -> None:
        """Fill the root window (the whole screen) with ``colour``, e.g. ``#3366cc``."""
        self.run("xsetroot", "-solid", colour)

    def pointer(self) -> tuple[int, int]:
        """Where the X pointer is (``xdotool getmouselocation``)."""
        fields = dict(
            part.split(":", 1) for part in self.run("xdotool", "getmouselocation").split()
        )
        return int(fields["x"]), int(fields["y"])

    def move(self, x: int, y: int) -> None:
        self.run("xdotool", "mousemove", str(x), str(y))


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = "xvfb x11vnc xdotool x11-xserver-utils"
        message = f"missing {', '.join(missing)} (apt install {packages})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def display() -> Iterator[Display]:
    _require_tools()
    read, write = os.pipe()
    process = subprocess.Popen(
        # -noreset: the screen keeps what xsetroot painted after the last client leaves
        [
            "Xvfb",
            "-displayfd",
            str(write),
            "-screen",
            "0",
            f"{WIDTH}x{HEIGHT}x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            number = pipe.readline().strip().decode()  # written once the server is ready
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield Display(f":{number}", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
