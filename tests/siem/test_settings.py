"""SIEM targets in the settings: each kind says where it goes, and names (cursors) are unique."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from broker.config import Settings, SiemTarget


def test_a_target_must_say_where_it_goes() -> None:
    with pytest.raises(ValidationError, match="needs an https:// url"):
        SiemTarget(name="lake", kind="https", url="http://plain.example/in")
    with pytest.raises(ValidationError, match="needs a port"):
        SiemTarget(name="soc", kind="relp")
    assert SiemTarget(name="soc", kind="relp", port=2514).payloads is False  # metadata only


def test_two_targets_cannot_share_a_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SUPPORTBROKER_SIEM_TARGETS",
        '[{"name": "soc", "kind": "relp", "port": 1}, {"name": "soc", "kind": "relp", "port": 2}]',
    )
    with pytest.raises(ValidationError, match="share a name"):
        Settings()
