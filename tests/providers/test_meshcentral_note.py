"""A ticket note too long for MeshCentral is shortened and confirmed, never lost in silence.

Against the real MeshCentral 1.1.55 from npm: it ignores a ``setDeviceEvent`` whose encoded
``msg`` is over 4,096 characters without answering (a 1,000-character non-Latin reason is
9,000 encoded). The provider cuts the note to fit (the ticket and session reference first),
reads the device's event log back to see it there, and when a note still does not appear
it fails the share: the share is removed and the error says so.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from broker.errors import ProviderError
from broker.providers.base import DeviceRef, GroupPolicy
from broker.providers.meshcentral.provider import (
    NOTE_LIMIT,
    MeshCentralProvider,
    encode_uri_component,
    fit_note,
)
from tests.providers.test_meshcentral_live import _device, _spec

LONG_REASON = "打印机驱动程序在更新后崩溃" * 77  # 1,001 CJK characters, 9 encoded each


def test_fit_note_cuts_at_a_character_and_says_so() -> None:
    text = "zammad:HD-4711 session s-1. Reason: " + LONG_REASON
    fitted = fit_note(text)
    assert len(encode_uri_component(fitted)) <= NOTE_LIMIT
    assert fitted.startswith("zammad:HD-4711 session s-1. Reason: 打印机")
    assert fitted.endswith("\u2026")
    assert text.startswith(fitted[:-1])
    assert fit_note("short %d note") == "short %d note"
    exact = "a" * NOTE_LIMIT
    assert fit_note(exact) == exact
    assert len(encode_uri_component(fit_note(exact + "b"))) <= NOTE_LIMIT


async def test_meshcentral_drops_an_oversized_note_without_a_word(
    mesh: MeshCentralProvider,
) -> None:
    """The behaviour this guards against, observed on the real server."""
    _, nodeid = await _device(mesh)
    await mesh.control.send(
        {"action": "setDeviceEvent", "nodeid": nodeid, "msg": encode_uri_component(LONG_REASON)}
    )
    await mesh.control.send(
        {"action": "setDeviceEvent", "nodeid": nodeid, "msg": encode_uri_component("after")}
    )
    for _ in range(100):  # the second note is stored; the first never will be
        notes = [e.get("msg") for e in await mesh.events(nodeid) if e.get("action") == "manual"]
        if "after" in notes:
            break
        await asyncio.sleep(0.05)
    assert notes == ["after"]


async def test_a_long_non_latin_reason_is_shortened_written_and_confirmed(
    mesh: MeshCentralProvider,
) -> None:
    _, nodeid = await _device(mesh)
    spec = dataclasses.replace(_spec(), reason=LONG_REASON)
    launch = await mesh.prepare(spec, DeviceRef("d", "pc", nodeid, "g"), GroupPolicy("g"))
    assert launch.details["note_shortened"] is True
    notes = [e["msg"] for e in await mesh.events(nodeid) if e.get("action") == "manual"]
    (note,) = [n for n in notes if spec.session_id in n]
    assert note.startswith(f"supportbroker: {spec.ticket_ref} session {spec.session_id}")
    assert note.endswith("\u2026")
    assert "打印机驱动程序" in note
    assert [s for s in await mesh.shares(nodeid) if s["publicid"] == launch.handle]


async def test_a_note_that_does_not_appear_fails_the_share(mesh: MeshCentralProvider) -> None:
    _, nodeid = await _device(mesh)
    mesh.note_limit = 100_000  # as if we did not cut it: MeshCentral drops it
    mesh.settings = mesh.settings.model_copy(update={"note_confirm_timeout": 1.0})
    spec = dataclasses.replace(_spec(), reason=LONG_REASON)
    with pytest.raises(ProviderError) as failed:
        await mesh.prepare(spec, DeviceRef("d", "pc", nodeid, "g"), GroupPolicy("g"))
    assert "did not record the note" in failed.value.detail
    assert "the share was removed (1 share(s))" in failed.value.detail
    tag = f"[sb-{spec.session_id}]"
    assert [s for s in await mesh.shares(nodeid) if tag in str(s.get("guestName"))] == []
