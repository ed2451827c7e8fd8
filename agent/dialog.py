"""Asking on the desktop: a zenity dialog on the user's screen, and who is connected.

Where a graphical session is present (``DISPLAY`` or ``WAYLAND_DISPLAY`` set, ``zenity``
installed), :class:`DesktopConsole` asks with a dialog showing the technician, ticket, reason,
duration and the rights as tickable items, as the web consent page does: the person may
untick rights, approving with none left is a denial, and the signed receipt states only what
was left ticked (:mod:`agent.asking` builds and signs it, the same receipt as the terminal's).

The web code stays an alternative: whichever answers first wins. When the request is settled
on the web first, :class:`agent.asking.Asking` cancels the ask; the dialog is killed and the
next notice (which says how it was settled) is shown in a window of its own, so the person
sees why the dialog went away. Every notice also goes to the terminal console, which keeps
reading ``end`` on stdin.

While someone is connected a small window stays on screen naming who (a zenity progress
window whose text is updated on its stdin); it goes away when nobody is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

from agent.consent import Answer, ConsentPrompt, TerminalConsole

log = structlog.get_logger("agent")

ASK_TITLE = "Remote support request"
ANSWERED_TITLE = "Remote support request answered"
PRESENCE_TITLE = "Remote support: connected"
NOTICE_SECONDS = 60  # how long a notice window stays up unless closed
# What each right means to the person at the screen (the web consent page's wording).
MEANINGS = {
    "shell": "a terminal on this computer",
    "files": "read and write files in the shared folders",
    "forward": "reach services on this computer's allowed ports",
    "view": "see your screen",
    "control": "use your mouse and keyboard",
}
# zenity's exit codes: 0 OK, 1 Cancel or closed, 5 its own timeout; anything else (255, or
# a signal) means it could not show the dialog at all.
OK, CANCEL, ZENITY_TIMEOUT = 0, 1, 5


def graphical_session(env: Mapping[str, str] | None = None) -> str | None:
    """The zenity to ask with, if a graphical session is present here; else None."""
    env = os.environ if env is None else env
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None
    return shutil.which("zenity")


def dialog_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    # Without an accessibility bus GTK waits for it before the dialog takes input.
    return {**(os.environ if env is None else env), "NO_AT_BRIDGE": "1"}


def granted_rights(prompt: ConsentPrompt, ticked: list[str]) -> tuple[str, ...]:
    """The rights left ticked, in the request's order; using the mouse and keyboard without
    seeing the screen is not granted (the web page refuses that combination too)."""
    kept = [c for c in prompt.capabilities if c in ticked]
    if "control" in kept and "view" in prompt.capabilities and "view" not in kept:
        kept.remove("control")
    return tuple(kept)


def answer_of(prompt: ConsentPrompt, returncode: int | None, out: str) -> Answer | None:
    """What the dialog's exit says; None when it could not be shown at all."""
    if returncode == OK:
        granted = granted_rights(prompt, out.strip().split(","))
        if not granted:
            return Answer(False, "declined", ())  # none left: a denial of the request
        return Answer(True, "user", granted)
    if returncode == CANCEL:
        return Answer(False, "declined")
    if returncode == ZENITY_TIMEOUT:
        return Answer(False, "timeout")
    return None


def ask_argv(zenity: str, prompt: ConsentPrompt) -> list[str]:
    text = (
        f"<b>{_markup(prompt.technician)}</b> asks for remote support.\n"
        f"Ticket: {_markup(prompt.ticket)} {_markup(prompt.subject)}\n"
        f"Reason: {_markup(prompt.reason)}\n"
        f"Duration: {prompt.duration_minutes} min\n"
        "Untick what you do not allow, then Allow or Deny."
    )
    argv = [
        zenity,
        "--list",
        "--checklist",
        f"--title={ASK_TITLE}",
        f"--text={text}",
        "--column=Allow",
        "--column=Right",
        "--column=Meaning",
        "--separator=,",
        "--print-column=2",
        "--ok-label=Allow",
        "--cancel-label=Deny",
        "--width=560",
        "--height=420",
    ]
    for right in prompt.capabilities:
        argv += ["TRUE", right, MEANINGS.get(right, right)]
    return argv


def _markup(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class DesktopConsole:
    """The consent dialog on the screen; notices and ``end`` stay with ``terminal``."""

    def __init__(
        self, terminal: TerminalConsole, zenity: str, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.terminal = terminal
        self.zenity = zenity
        self.env = dialog_env(env)
        self._explain = False  # a dialog was closed by a decision taken elsewhere
        self._notices = 0  # how many notices so far, and the last one
        self._last_notice = ""
        self._presence: asyncio.subprocess.Process | None = None
        self._presence_text = ""  # what the presence window shows (or is opening with)
        self._opening: asyncio.Task[None] | None = None
        self._windows: set[asyncio.subprocess.Process] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> Answer:
        try:
            proc = await asyncio.create_subprocess_exec(
                *ask_argv(self.zenity, prompt),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
        except OSError as exc:
            log.warning("agent.dialog_failed", error=str(exc))
            return Answer(*await self.terminal.ask(prompt, wait_seconds))
        seen = self._notices
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), wait_seconds)
        except TimeoutError:
            await _stop(proc)
            return Answer(False, "timeout")
        except asyncio.CancelledError:
            # Settled on the web (or by expiry) first: the dialog goes, the notice that
            # follows says how, in a window of its own.
            await _stop(proc)
            if self._notices > seen:  # said already, right as the dialog was closed
                self._window(ANSWERED_TITLE, self._last_notice)
            else:
                self._explain = True
            raise
        answer = answer_of(prompt, proc.returncode, out.decode())
        if answer is None:  # the dialog could not be shown (no display after all)
            log.warning("agent.dialog_failed", returncode=proc.returncode)
            return Answer(*await self.terminal.ask(prompt, wait_seconds))
        return answer

    def notice(self, text: str) -> None:
        self.terminal.notice(text)
        self._notices, self._last_notice = self._notices + 1, text
        if self._explain:
            self._explain = False
            self._window(ANSWERED_TITLE, text)

    def presence(self, people: list[str]) -> None:
        """Keep who is connected on screen; nobody left: the window goes."""
        self._presence_text = "Connected to this computer now: " + "; ".join(people)
        if not people:
            self._presence_text = ""
        self._sync_presence()

    def _sync_presence(self) -> None:
        if self._opening is not None:
            return  # the window being opened is brought up to date once it is up
        proc = self._presence
        if not self._presence_text:
            self._presence = None
            if proc is not None and proc.returncode is None:
                proc.terminate()
        elif proc is None or proc.returncode is not None or proc.stdin is None:
            self._opening = self._spawn(self._open_presence())
        else:
            with contextlib.suppress(OSError, RuntimeError):
                # zenity --progress shows a "# text" line read on its stdin as its text
                proc.stdin.write(f"# {self._presence_text}\n".encode())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open_presence(self) -> None:
        try:
            self._presence = await asyncio.create_subprocess_exec(
                self.zenity,
                "--progress",
                "--pulsate",
                "--no-cancel",
                f"--title={PRESENCE_TITLE}",
                f"--text={_markup(self._presence_text)}",
                "--width=480",
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
        except OSError as exc:
            log.warning("agent.presence_window_failed", error=str(exc))
        finally:
            self._opening = None
        self._sync_presence()  # what changed while it opened (or nobody left by now)

    def _window(self, title: str, text: str) -> None:
        async def show() -> None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.zenity,
                    "--info",
                    f"--title={title}",
                    f"--text={_markup(text)}",
                    f"--timeout={NOTICE_SECONDS}",
                    "--width=420",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=self.env,
                )
            except OSError as exc:
                log.warning("agent.notice_window_failed", error=str(exc))
                return
            self._windows.add(proc)
            await proc.wait()
            self._windows.discard(proc)

        self._spawn(show())

    async def close(self) -> None:
        """Take every window of ours down (the agent stops)."""
        self.presence([])
        for proc in list(self._windows):
            await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()
