"""Who is connected to this device now, told to the person at it.

The technician counts as connected while a channel of the session is open here (a shell,
the screen, a forward); the broker tells the agent when an expert joins or a supervisor
watches (``viewer`` messages). Each join and leave is a notice (a line at the terminal); a
prompter that can keep a notice on screen (:class:`agent.consent.ShowsPresence`, the
desktop dialog) is given the whole list on every change, and an empty one when nobody is
left.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agent.consent import Prompter, ShowsPresence

ROLES = {"join": "expert, joined", "watch": "supervisor, watching"}


class Presence:
    """Sessions' technicians (by open channels) and the broker's viewers, as shown lines."""

    def __init__(self, prompter: Prompter) -> None:
        self.prompter = prompter
        self._who: dict[str, str] = {}  # session → "Tom for helpdesk:HD-4711"
        self._channels: Counter[str] = Counter()
        self._viewers: dict[str, dict[str, str]] = {}  # session → name → line
        self._shown: list[str] = []

    def asked(self, msg: dict[str, Any]) -> None:
        """A consent request or a grant from elsewhere: who the session's technician is."""
        technician, ticket = msg.get("technician", "?"), msg.get("ticket", "?")
        self._who[str(msg.get("session_id"))] = f"{technician} for {ticket}"

    def opened(self, session_id: str) -> None:
        self._channels[session_id] += 1
        self._changed()

    def closed(self, session_id: str) -> None:
        self._channels[session_id] -= 1
        if self._channels[session_id] <= 0:
            del self._channels[session_id]
        self._changed()

    def viewer(self, msg: dict[str, Any]) -> None:
        """The broker's ``viewer{session_id, name, mode, present}``: an expert or supervisor."""
        sid, name = str(msg.get("session_id")), str(msg.get("name", "?"))[:100]
        viewers = self._viewers.setdefault(sid, {})
        if msg.get("present"):
            role = ROLES.get(str(msg.get("mode")), str(msg.get("mode")))
            viewers[name] = f"{name} ({role}) in the session of {self._who.get(sid, sid)}"
        else:
            viewers.pop(name, None)
        self._changed()

    def ended(self, session_id: str) -> None:
        """The session is over: nobody of it stays on screen."""
        self._channels.pop(session_id, None)
        self._viewers.pop(session_id, None)
        self._changed()

    def reset(self) -> None:
        """The connection to the broker is gone, and with it every channel."""
        self._channels.clear()
        self._viewers.clear()
        self._changed()

    def people(self) -> list[str]:
        lines = [f"{self._who.get(sid, sid)} (session {sid})" for sid in sorted(self._channels)]
        for sid in sorted(self._viewers):
            lines += sorted(self._viewers[sid].values())
        return lines

    def _changed(self) -> None:
        now = self.people()
        for line in now:
            if line not in self._shown:
                self.prompter.notice(f"connected: {line}")
        for line in self._shown:
            if line not in now:
                self.prompter.notice(f"disconnected: {line}")
        if now != self._shown and isinstance(self.prompter, ShowsPresence):
            self.prompter.presence(now)
        self._shown = now
