"""Who is connected to a session right now, and who was: what the end user's consent page
shows live (docs/SCREENS.md, "End user: who is connected").

The terminal and screen sockets enter a person here when their channel to the device is open
and mark them gone when the socket ends, whatever the reason. It is the gateway's bookkeeping
in this process, not evidence: the audit log already holds ``session.expert_joined``,
``session.supervisor_watching`` and the screen's open and close events. Sockets of a session
land on the process that holds its agent's link, so the page read through another process of
a multi-process broker shows nobody (docs/SCREENS.md says so).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime

from broker.db.base import utcnow

KEPT_PER_SESSION = 50  # the latest comings and goings of one session
KEPT_SESSIONS = 2000  # sessions remembered; the oldest are forgotten first


@dataclass(frozen=True)
class Attendee:
    """One person on one channel (terminal or screen) of a session."""

    name: str
    role: str  # the account's role: technician, supervisor, admin
    mode: str  # control (the session's technician) | join (an invited expert) | watch
    via: str  # terminal | screen
    joined_at: datetime
    left_at: datetime | None = None

    @property
    def here(self) -> bool:
        return self.left_at is None

    @property
    def words(self) -> str:
        """What the end user reads: who, as what, doing what, through which channel."""
        what = {
            "control": "the technician of this session",
            "join": "an expert the technician invited",
        }.get(self.mode)
        if what is None:  # watch
            who = "a supervisor" if self.role == "supervisor" else "an administrator"
            what = f"{who}, watching without typing"
        return f"{self.name} ({what}) on the {self.via}"


@dataclass
class _Session:
    entries: OrderedDict[int, Attendee] = field(default_factory=OrderedDict)


class Attendance:
    """The comings and goings of every session this process relays (bounded in memory)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._ids = itertools.count(1)

    def enter(self, session_id: str, *, name: str, role: str, mode: str, via: str) -> int:
        """Note a person connected; returns the handle :meth:`leave` takes."""
        kept = self._sessions.pop(session_id, None) or _Session()
        self._sessions[session_id] = kept  # most recently used last
        while len(self._sessions) > KEPT_SESSIONS:
            self._sessions.popitem(last=False)
        handle = next(self._ids)
        kept.entries[handle] = Attendee(name, role, mode, via, utcnow())
        while len(kept.entries) > KEPT_PER_SESSION:
            # the oldest who left goes first; who is still connected is never forgotten
            gone = next((h for h, a in kept.entries.items() if not a.here), None)
            if gone is None:
                break
            del kept.entries[gone]
        return handle

    def leave(self, session_id: str, handle: int) -> None:
        kept = self._sessions.get(session_id)
        if kept is not None and handle in kept.entries and kept.entries[handle].here:
            kept.entries[handle] = replace(kept.entries[handle], left_at=utcnow())

    def of(self, session_id: str) -> list[Attendee]:
        """Everyone noted for the session, in the order they came."""
        kept = self._sessions.get(session_id)
        return list(kept.entries.values()) if kept is not None else []
