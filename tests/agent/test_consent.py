"""Consent on the device: what the user is shown, time-out as denial, signed receipts."""

from __future__ import annotations

import base64
import io
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.consent import ConsentPrompt, TerminalConsole
from agent.identity import canonical, digest, fingerprint, load_or_create_key
from tests.agent.loopback import (
    FakeBroker,
    Prompter,
    consent_request,
    enroll_locally,
    running_agent,
    settings_for,
)


def _strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire blob into its length-prefixed strings."""
    out, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack(">I", blob[at : at + 4])
        out.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def verify_ed25519(public_openssh: bytes, data: bytes, signature_b64: str) -> None:
    """Check an SSH-format Ed25519 signature with ``cryptography`` alone (not asyncssh)."""
    kind, raw_key = _strings(base64.b64decode(public_openssh.split()[1]))
    assert kind == b"ssh-ed25519"
    alg, raw_sig = _strings(base64.b64decode(signature_b64))
    assert alg == b"ssh-ed25519"
    Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, data)


def _prompt(**over: Any) -> ConsentPrompt:
    return ConsentPrompt.from_message({**consent_request("s-1", ["shell", "files"]), **over})


async def test_terminal_prompt_timeout_counts_as_denial() -> None:
    out = io.StringIO()
    read_end, write_end = os.pipe()  # a terminal nobody types into
    with os.fdopen(read_end) as keyboard:
        console = TerminalConsole(out=out, inp=keyboard, notify=False, interactive=True)
        try:
            assert await console.ask(_prompt(), 0.2) == (False, "timeout")
        finally:
            os.close(write_end)  # ends the console's reader
            if console._reader is not None:
                await console._reader
    shown = out.getvalue()
    assert "Tina Tech" in shown
    assert "HD-7" in shown
    assert "driver crashes" in shown
    assert "shell, files" in shown
    assert "30 min" in shown
    # What became of the answer is said once the broker took it (tests/agent/test_follow.py).
    assert "denied" not in shown


@pytest.mark.parametrize(
    ("typed", "expected"), [("y\n", (True, "user")), ("n\n", (False, "declined"))]
)
async def test_terminal_prompt_takes_the_typed_answer(
    typed: str, expected: tuple[bool, str]
) -> None:
    console = TerminalConsole(
        out=io.StringIO(), inp=io.StringIO(typed), notify=False, interactive=True
    )
    assert await console.ask(_prompt(), 5.0) == expected


async def test_end_typed_without_a_pending_prompt_ends_sessions() -> None:
    ended: list[bool] = []

    async def on_end() -> None:
        ended.append(True)

    console = TerminalConsole(on_end, out=io.StringIO(), inp=io.StringIO("end\n"), notify=False)
    console.start()
    assert console._reader is not None
    await console._reader
    assert ended == [True]


async def test_timeout_on_the_device_sends_a_signed_denial(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path, consent_timeout_seconds=0.3)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    prompter = Prompter([None])  # the user never answers
    async with running_agent(settings, prompter, fake_broker.fingerprint) as core:
        link = await fake_broker.link({"allowed_ports": []})
        decision = await link.approve("s-timeout", ["shell"])
        receipt = decision["receipt"]
        assert receipt["decision"] == "deny"
        assert receipt["why"] == "timeout"
        assert prompter.prompts[0].session_id == "s-timeout"
        assert core.grants.active() == []  # nothing was granted
        public = core.key.export_public_key("openssh")
    verify_ed25519(public, canonical(receipt), decision["signature"])


async def test_receipt_is_signed_with_the_device_key_and_binds_the_request(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    settings = settings_for(tmp_path)
    enroll_locally(settings, fake_broker.port, fake_broker.fingerprint)
    device_key = load_or_create_key(settings.key_path)
    async with running_agent(settings, Prompter([True]), fake_broker.fingerprint):
        link = await fake_broker.link({})
        assert link.hello["device_id"] == "dev-1"
        # The broker saw the device key as the SSH host key: the same key signs receipts.
        host_key = link.conn.get_server_host_key()
        assert host_key is not None
        assert fingerprint(host_key) == fingerprint(device_key)
        decision = await link.approve("s-ok", ["shell"])
    receipt, signature = decision["receipt"], decision["signature"]
    assert receipt["decision"] == "approve"
    assert receipt["why"] == "user"
    assert receipt["device_fingerprint"] == fingerprint(device_key)
    assert receipt["request_digest"] == digest(consent_request("s-ok", ["shell"]))
    assert receipt["capabilities"] == ["shell"]
    assert receipt["duration_minutes"] == 30
    public = device_key.export_public_key("openssh")
    verify_ed25519(public, canonical(receipt), signature)
    # Any change to the decision breaks the signature.
    forged = {**receipt, "decision": "deny"}
    with pytest.raises(InvalidSignature):
        verify_ed25519(public, canonical(forged), signature)
    other = FakeBroker().key.export_public_key("openssh")  # a different Ed25519 key
    with pytest.raises(InvalidSignature):
        verify_ed25519(other, canonical(receipt), signature)
