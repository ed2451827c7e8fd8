"""Every catalogue event has an OCSF class, in the code and in docs/SIEM.md's table, and the
two agree."""

from __future__ import annotations

import re
from pathlib import Path

from broker.evidence.events import EventType
from broker.siem.ocsf import CLASSES, OCSF_CLASS, ocsf_class

DOC = Path(__file__).resolve().parents[2] / "docs" / "SIEM.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (\d+) \| ([^|]+) \|$", re.MULTILINE)


def test_every_catalogue_event_has_a_class() -> None:
    assert set(OCSF_CLASS) == {e.value for e in EventType}
    assert all(uid in CLASSES for uid in OCSF_CLASS.values())
    assert ocsf_class("no.such_event") is None


def test_the_docs_table_matches_the_code() -> None:
    rows = {name: (int(uid), cls.strip()) for name, uid, cls in ROW.findall(DOC.read_text())}
    assert rows == {e.value: ocsf_class(e.value) for e in EventType}
