"""Asking the local user: the consent prompt, visible notices, and the "end session" key.

:class:`TerminalConsole` reads lines from stdin in one background task: while a request is
pending the next line answers it; otherwise the line ``end`` ends every running session.
A desktop notification (``notify-send``) is shown as well when one is available; it only
informs, the answer comes from the terminal (a notification cannot be trusted as input).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO


@dataclass(frozen=True)
class ConsentPrompt:
    """What the local user is shown; comes from the broker's consent_request message."""

    session_id: str
    technician: str
    ticket: str
    subject: str
    reason: str
    capabilities: tuple[str, ...]
    duration_minutes: int

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> ConsentPrompt:
        return cls(
            session_id=str(msg["session_id"]),
            technician=str(msg.get("technician", "?")),
            ticket=str(msg.get("ticket", "?")),
            subject=str(msg.get("subject", "")),
            reason=str(msg.get("reason", "")),
            capabilities=tuple(str(c) for c in msg.get("capabilities", [])),
            duration_minutes=int(msg.get("duration_minutes", 0)),
        )

    def render(self) -> str:
        return (
            "\n=== Remote support request ===\n"
            f"  technician : {self.technician}\n"
            f"  ticket     : {self.ticket} {self.subject}\n"
            f"  reason     : {self.reason}\n"
            f"  rights     : {', '.join(self.capabilities) or '-'}\n"
            f"  duration   : {self.duration_minutes} min\n"
            "Allow? [y/N] "
        )


class Prompter(Protocol):
    """How the agent talks to the person at the device."""

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool, str]:
        """(approved, why): why is "user", "timeout" or "declined"."""

    def notice(self, text: str) -> None:
        """Show something the user must see (session running, unattended, ended)."""


def desktop_notify(title: str, body: str) -> None:
    """Best effort: a notification where a desktop exists; nothing otherwise."""
    exe = shutil.which("notify-send")
    if exe is None:
        return
    # Fire and forget on purpose: a missing session bus must not delay the terminal prompt.
    import subprocess

    try:
        subprocess.Popen(  # noqa: S603 - fixed executable, no shell
            [exe, "--urgency=critical", title, body],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return


class TerminalConsole:
    """The terminal prompt; ``on_end`` is called when the user types ``end``."""

    def __init__(
        self,
        on_end: Callable[[], Awaitable[None]] | None = None,
        *,
        out: TextIO = sys.stdout,
        inp: TextIO | None = None,
        notify: bool = True,
    ) -> None:
        self.on_end = on_end
        self.out = out
        self.inp = inp  # None: sys.stdin, looked up when reading (tests swap it)
        self.notify = notify
        self._pending: asyncio.Future[str] | None = None
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_lines(), name="agent-stdin")

    async def _read_lines(self) -> None:
        while True:
            line = await asyncio.to_thread((self.inp or sys.stdin).readline)
            if not line:
                return  # stdin closed: prompts will time out, which counts as a denial
            text = line.strip().lower()
            if self._pending is not None and not self._pending.done():
                self._pending.set_result(text)
            elif text in {"end", "e", "q"} and self.on_end is not None:
                await self.on_end()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool, str]:
        self.start()
        if self.notify:
            desktop_notify(
                "Remote support request",
                f"{prompt.technician} ({prompt.ticket}): {prompt.reason} - answer in the terminal",
            )
        self.out.write(prompt.render())
        self.out.flush()
        self._pending = asyncio.get_running_loop().create_future()
        try:
            answer = await asyncio.wait_for(self._pending, wait_seconds)
        except TimeoutError:
            self.notice("no answer in time: request denied")
            return False, "timeout"
        finally:
            self._pending = None
        if answer in {"y", "yes"}:
            self.notice("approved; type 'end' and Enter to end the session at any time")
            return True, "user"
        return False, "declined"

    def notice(self, text: str) -> None:
        self.out.write(f"[supportbroker] {text}\n")
        self.out.flush()
        if self.notify:
            desktop_notify("Remote support", text)
