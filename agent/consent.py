"""Asking the local user: the consent prompt, visible notices, and the "end session" key.

:class:`TerminalConsole` reads lines from stdin in one background task: while a request is
pending the next line answers it; otherwise the line ``end`` ends every running session.
A desktop notification (``notify-send``) is shown as well when one is available; it only
informs, the answer comes from the terminal (a notification cannot be trusted as input).

Without a terminal (the agent runs as a service, or stdin closed) nobody here can answer:
the console says where the request waits instead (the broker's consent page, with the code
the technician gives) and leaves it there; the agent never denies on its own.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TextIO, runtime_checkable

import structlog

log = structlog.get_logger("agent")
NO_TERMINAL = "no terminal"


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
    expires_at: str = ""  # when the broker lets the request expire (ISO 8601, UTC)
    consent_page: str = ""  # where it can be answered on the web (from the broker's welcome)

    @classmethod
    def from_message(cls, msg: dict[str, Any], consent_page: str = "") -> ConsentPrompt:
        return cls(
            session_id=str(msg["session_id"]),
            technician=str(msg.get("technician", "?")),
            ticket=str(msg.get("ticket", "?")),
            subject=str(msg.get("subject", "")),
            reason=str(msg.get("reason", "")),
            capabilities=tuple(str(c) for c in msg.get("capabilities", [])),
            duration_minutes=int(msg.get("duration_minutes", 0)),
            expires_at=str(msg.get("expires_at") or ""),
            consent_page=consent_page,
        )

    @property
    def who(self) -> str:
        return f"{self.technician} for {self.ticket}"

    def waiting_on_the_web(self) -> str:
        """Where the request waits when nobody can answer it here."""
        where = self.consent_page or "the broker's consent page (/consent)"
        until = f" until {self.expires_at}" if self.expires_at else ""
        return (
            f"remote support request from {self.who} ({self.reason}): no terminal here to "
            f"answer it, so it waits on the web{until}: open {where} and enter the code the "
            "technician gives you. This agent does not answer it by itself."
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


class Answer(NamedTuple):
    """An answer with the rights the person left ticked (a dialog that lets them untick)."""

    approved: bool | None
    why: str
    granted: tuple[str, ...] | None = None  # None: every right asked for


class Prompter(Protocol):
    """How the agent talks to the person at the device."""

    async def ask(
        self, prompt: ConsentPrompt, wait_seconds: float
    ) -> tuple[bool | None, str] | Answer:
        """(approved, why): why is "user", "timeout" or "declined". ``approved`` is None
        when nobody here can answer ("no terminal"): the request is left to the web.
        An :class:`Answer` may narrow an approval to the rights left ticked.
        Cancelled when the request is settled elsewhere first."""

    def notice(self, text: str) -> None:
        """Show something the user must see (session running, unattended, ended)."""


@runtime_checkable
class ShowsPresence(Protocol):
    """A prompter that keeps who is connected on screen (the desktop dialog's notice)."""

    def presence(self, people: list[str]) -> None:
        """Who is connected now, one line each; empty: nobody (the notice goes away)."""


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
        interactive: bool | None = None,
    ) -> None:
        self.on_end = on_end
        self.out = out
        self.inp = inp  # None: sys.stdin, looked up when reading (tests swap it)
        self.notify = notify
        # None: a person can answer if stdin is a terminal (not so under a service manager).
        self._interactive = interactive
        self._closed = False  # stdin reached its end: nobody can answer any more
        self._pending: asyncio.Future[str | None] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def interactive(self) -> bool:
        if self._closed:
            return False
        if self._interactive is None:
            stream = self.inp or sys.stdin
            self._interactive = bool(stream is not None and stream.isatty())
        return self._interactive

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_lines(), name="agent-stdin")

    async def _read_lines(self) -> None:
        while True:
            line = await asyncio.to_thread((self.inp or sys.stdin).readline)
            if not line:
                # stdin closed: nobody can answer here; a prompt up now goes to the web.
                self._closed = True
                if self._pending is not None and not self._pending.done():
                    self._pending.set_result(None)
                return
            text = line.strip().lower()
            if self._pending is not None and not self._pending.done():
                self._pending.set_result(text)
            elif text in {"end", "e", "q"} and self.on_end is not None:
                await self.on_end()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool | None, str]:
        """The typed answer; what became of it is said once the broker has taken it (the
        request may have been settled on the web meanwhile)."""
        if not self.interactive:
            return self._left_to_web(prompt)
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
            return False, "timeout"
        finally:
            self._pending = None
        if answer is None:
            self.out.write("\n")
            return self._left_to_web(prompt)
        if answer in {"y", "yes"}:
            return True, "user"
        return False, "declined"

    def _left_to_web(self, prompt: ConsentPrompt) -> tuple[None, str]:
        log.info(
            "agent.consent_waiting_on_web",
            session_id=prompt.session_id,
            ticket=prompt.ticket,
            consent_page=prompt.consent_page,
            expires_at=prompt.expires_at,
        )
        self.notice(prompt.waiting_on_the_web())
        return None, NO_TERMINAL

    def notice(self, text: str) -> None:
        self.out.write(f"[supportbroker] {text}\n")
        self.out.flush()
        if self.notify:
            desktop_notify("Remote support", text)
