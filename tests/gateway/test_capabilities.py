"""The agent itself refuses what the local user did not approve (the broker is not trusted
for that): a shell on a session approved only for files, a port the group does not allow,
SFTP outside the allowed directories. Channels are opened straight from the gateway's SSH
link, past the broker's own checks; the agent's refusal fails the request at the SSH level
(nothing opens)."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncssh
import httpx
import pytest

from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    events,
    request_session,
    ticket_ref,
    wait_events,
    wait_state,
)


async def _approved(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: Any, caps: list[str]
) -> tuple[Any, str, Any]:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    session = await request_session(client, people["tech_token"], agent.device_id, caps)
    await wait_state(client, people["tech_token"], session["id"], "approved")
    return agent, session["id"], gateway.links[agent.device_id].conn


async def test_shell_refused_without_the_shell_right(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid, conn = await _approved(app, gateway, people, tmp_path, client, ["files"])
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(f"shell {sid}", encoding=None, term_type="xterm")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process("shell 00000000-0000-0000-0000-000000000000")
        notices = agent.prompter.notices
        assert any(f"shell {sid}" in n and "not approved for shell" in n for n in notices)
    finally:
        await agent.stop()


async def test_forward_refused_to_port_not_allowed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid, conn = await _approved(app, gateway, people, tmp_path, client, ["forward"])
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(f"forward {sid} 22", encoding=None)
        assert any("port 22 is not allowed" in n for n in agent.prompter.notices)
    finally:
        await agent.stop()


async def test_sftp_confined_and_transfers_audited(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid, conn = await _approved(app, gateway, people, tmp_path, client, ["files"])
    allowed = people["allowed"]
    (allowed / "report.txt").write_bytes(b"hello from the device\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the technician")
    try:
        async with conn.start_sftp_client(env={"SB_SESSION": sid}) as sftp:
            local = tmp_path / "copy.txt"
            await sftp.get(str(allowed / "report.txt"), str(local))
            assert local.read_bytes() == b"hello from the device\n"
            upload = tmp_path / "fix.sh"
            upload.write_bytes(b"#!/bin/sh\necho fixed\n" * 100)
            await sftp.put(str(upload), str(allowed / "fix.sh"))
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.get(str(secret), str(tmp_path / "stolen.txt"))
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.get(str(allowed / ".." / "secret.txt"), str(tmp_path / "x.txt"))
        ref = await ticket_ref(app, sid)
        found = await wait_events(app, ref, "session.file_transfer", count=2)
        assert not (tmp_path / "stolen.txt").exists()
        # The refused reads were never opened on the device, so nothing reports a transfer.
        await agent.stop()
        assert len(await events(app, ref, "session.file_transfer")) == 2
        data = sorted((e.payload["data"] for e in found), key=lambda d: d["direction"])
        assert data[0] == {
            "session_id": sid,
            "name": "report.txt",
            "size": 22,
            "sha256": hashlib.sha256(b"hello from the device\n").hexdigest(),
            "direction": "download",
        }
        assert data[1] == {
            "session_id": sid,
            "name": "fix.sh",
            "size": len(upload.read_bytes()),
            "sha256": hashlib.sha256(upload.read_bytes()).hexdigest(),
            "direction": "upload",
        }
        assert (allowed / "fix.sh").read_bytes() == upload.read_bytes()
        assert found[0].payload["actor"]["kind"] == "end_user"
    finally:
        await agent.stop()


async def test_sftp_refused_without_files_capability(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid, conn = await _approved(app, gateway, people, tmp_path, client, ["shell"])
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            async with conn.start_sftp_client(env={"SB_SESSION": sid}) as sftp:
                await sftp.listdir(".")
        assert any("not approved for files" in n for n in agent.prompter.notices)
    finally:
        await agent.stop()
