"""The gateway's note of who is on a session: comings and goings in order, a leave marks
the person gone (once), each session keeps a bounded history but never forgets who is still
connected, and the words the end user reads name the role and what they may do."""

from __future__ import annotations

import pytest

from broker.gateway import attendance
from broker.gateway.attendance import Attendance


def test_comings_and_goings_in_order() -> None:
    seen = Attendance()
    tom = seen.enter("s1", name="Tom", role="technician", mode="control", via="terminal")
    sue = seen.enter("s1", name="Sue", role="supervisor", mode="watch", via="screen")
    seen.enter("s2", name="Ann", role="technician", mode="control", via="terminal")
    seen.leave("s1", sue)
    first = seen.of("s1")
    assert [(a.name, a.here) for a in first] == [("Tom", True), ("Sue", False)]
    left_at = first[1].left_at
    seen.leave("s1", sue)  # a second leave changes nothing
    assert seen.of("s1")[1].left_at == left_at
    seen.leave("s1", tom)
    assert not any(a.here for a in seen.of("s1"))
    assert [a.name for a in seen.of("s2")] == ["Ann"]
    assert seen.of("unknown") == []


def test_words_say_who_and_what() -> None:
    seen = Attendance()
    for name, role, mode in (
        ("Tom", "technician", "control"),
        ("Eve", "technician", "join"),
        ("Sue", "supervisor", "watch"),
        ("Ada", "admin", "watch"),
    ):
        seen.enter("s", name=name, role=role, mode=mode, via="terminal")
    assert [a.words for a in seen.of("s")] == [
        "Tom (the technician of this session) on the terminal",
        "Eve (an expert the technician invited) on the terminal",
        "Sue (a supervisor, watching without typing) on the terminal",
        "Ada (an administrator, watching without typing) on the terminal",
    ]


def test_history_is_bounded_but_keeps_who_is_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attendance, "KEPT_PER_SESSION", 3)
    monkeypatch.setattr(attendance, "KEPT_SESSIONS", 2)
    seen = Attendance()
    seen.enter("s", name="stays", role="technician", mode="control", via="terminal")
    for n in range(5):
        handle = seen.enter("s", name=f"w{n}", role="admin", mode="watch", via="terminal")
        seen.leave("s", handle)
    # the oldest who left are dropped; who is still connected never is
    assert [a.name for a in seen.of("s")] == ["stays", "w3", "w4"]
    seen.enter("t", name="x", role="admin", mode="watch", via="terminal")
    seen.enter("u", name="y", role="admin", mode="watch", via="terminal")
    assert seen.of("s") == []  # the least recently used session is forgotten first
    assert [a.name for a in seen.of("u")] == ["y"]
