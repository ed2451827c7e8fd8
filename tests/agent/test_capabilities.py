"""The agent refuses what the local user did not approve, whatever the broker asks for.

A fake broker (real asyncssh on loopback) opens the channels a compromised or buggy broker
might: a shell on a view-only session, a forward to a port the group does not allow, SFTP
outside the allowed directories. Each refusal has an approved counterpart that works, so a
test fails if the channel itself is broken rather than refused. A refusal is an SSH-level
failure of the request (the broker's ``create_process`` raises), never a channel that opens and
then exits: the broker must not be able to take it for an opened channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from tests.agent.loopback import (
    FakeBroker,
    Link,
    Prompter,
    enroll_locally,
    running_agent,
    settings_for,
)
from tests.gateway.helpers import echo_server


@contextlib.asynccontextmanager
async def agent_link(
    tmp: Path, broker: FakeBroker, policy: dict[str, object], answers: list[bool | None]
) -> AsyncIterator[tuple[Link, Prompter]]:
    settings = settings_for(tmp)
    enroll_locally(settings, broker.port, broker.fingerprint)
    prompter = Prompter(answers)
    async with running_agent(settings, prompter, broker.fingerprint):
        yield await broker.link(policy), prompter


async def _run(link: Link, command: str, stdin: bytes = b"") -> asyncssh.SSHCompletedProcess:
    """Open ``command`` as the broker would; a refused channel may close before the input."""
    term = "xterm" if command.startswith("shell") else None  # forwards carry raw bytes
    proc = await link.conn.create_process(command, encoding=None, term_type=term)
    with contextlib.suppress(BrokenPipeError, asyncssh.Error):
        proc.stdin.write(stdin)
        proc.stdin.write_eof()
    return await asyncio.wait_for(proc.wait(), 15)


async def _refused(link: Link, prompter: Prompter, command: str, why: str) -> None:
    """The request fails at the SSH level and the local user is told why."""
    term = "xterm" if command.startswith("shell") else None
    with pytest.raises(asyncssh.ChannelOpenError):
        await asyncio.wait_for(link.conn.create_process(command, encoding=None, term_type=term), 15)
    assert any(command in n and why in n for n in prompter.notices), prompter.notices


async def test_shell_on_a_view_only_session_is_refused(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    async with agent_link(tmp_path, fake_broker, {}, [True, True]) as (link, prompter):
        assert (await link.approve("view-1", ["view"]))["receipt"]["decision"] == "approve"
        await _refused(link, prompter, "shell view-1", "not approved for shell")
        # The same request on a session approved for a shell runs.
        await link.approve("shell-1", ["shell"])
        ok = await _run(link, "shell shell-1", b"echo agent-$((40+2))\nexit\n")
        assert b"agent-42" in ok.stdout


async def test_the_shell_has_its_terminal(tmp_path: Path, fake_broker: FakeBroker) -> None:
    """The PTY is the shell's controlling terminal: ``tty`` names it, no "can't access tty"."""
    async with agent_link(tmp_path, fake_broker, {}, [True]) as (link, _):
        await link.approve("tty-1", ["shell"])
        done = await _run(link, "shell tty-1", b"tty\nexit\n")
        assert b"/dev/pts/" in done.stdout
        assert b"can't access tty" not in done.stdout
        assert b"not a tty" not in done.stdout


async def test_shell_for_an_unknown_or_denied_session_is_refused(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    async with agent_link(tmp_path, fake_broker, {}, [False]) as (link, prompter):
        assert (await link.approve("denied-1", ["shell"]))["receipt"]["decision"] == "deny"
        for session in ("denied-1", "never-asked"):
            await _refused(link, prompter, f"shell {session}", "not approved on this device")
        for request in ("shell", "rm -rf /", "forward denied-1 x"):
            await _refused(link, prompter, request, "unknown request")


async def test_a_plain_shell_or_unknown_subsystem_is_refused(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    async with agent_link(tmp_path, fake_broker, {}, [True]) as (link, prompter):
        await link.approve("shell-2", ["shell"])
        with pytest.raises(asyncssh.ChannelOpenError):
            await link.conn.create_process(encoding=None, term_type="xterm")  # no command
        with pytest.raises(asyncssh.ChannelOpenError):
            await link.conn.create_process(subsystem="netconf", encoding=None)
        assert any("subsystem netconf" in n for n in prompter.notices)


async def test_forward_to_a_port_the_group_does_not_allow_is_refused(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    echo, allowed = await echo_server()
    other, not_allowed = await echo_server()  # listening, so only the agent can refuse
    try:
        policy = {"allowed_ports": [allowed]}
        async with agent_link(tmp_path, fake_broker, policy, [True]) as (link, prompter):
            await link.approve("fwd-1", ["forward"])
            command = f"forward fwd-1 {not_allowed}"
            await _refused(link, prompter, command, f"port {not_allowed} is not allowed")
            ok = await _run(link, f"forward fwd-1 {allowed}", b"ping")
            assert ok.stdout == b"ping"
    finally:
        echo.close()
        other.close()


async def test_forward_needs_its_own_grant(tmp_path: Path, fake_broker: FakeBroker) -> None:
    """Mouse and keyboard (``control``) no longer carry port forwards: ``forward`` does."""
    echo, port = await echo_server()
    policy = {"allowed_ports": [port]}
    try:
        async with agent_link(tmp_path, fake_broker, policy, [True, True]) as (link, prompter):
            await link.approve("no-forward", ["control", "files"])
            command = f"forward no-forward {port}"
            await _refused(link, prompter, command, "not approved for forward")
            await link.approve("forward-1", ["forward"])
            ok = await _run(link, f"forward forward-1 {port}", b"ping")
            assert ok.stdout == b"ping"
    finally:
        echo.close()


async def test_sftp_outside_the_allowed_directories_is_refused(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    allowed = tmp_path / "shared"
    allowed.mkdir()
    (allowed / "report.txt").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside")
    (allowed / "sneaky").symlink_to(secret)  # a symlink out of the root is outside too
    policy = {"allowed_paths": [str(allowed)]}
    async with agent_link(tmp_path, fake_broker, policy, [True]) as (link, _):
        await link.approve("sftp-1", ["files"])
        async with link.conn.start_sftp_client(env={"SB_SESSION": "sftp-1"}) as sftp:
            for path in (str(secret), str(allowed / "sneaky"), str(allowed / ".." / "secret.txt")):
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    async with sftp.open(path, "rb") as fh:
                        await fh.read()
            async with sftp.open(str(allowed / "report.txt"), "rb") as fh:
                assert await fh.read() == b"inside"
        transfer = await link.expect("file_transfer")
        assert transfer["name"] == "report.txt"
        assert transfer["direction"] == "download"
        assert transfer["size"] == 6
        assert transfer["session_id"] == "sftp-1"


async def test_sftp_without_a_files_grant_sees_nothing(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    allowed = tmp_path / "shared"
    allowed.mkdir()
    (allowed / "report.txt").write_bytes(b"inside")
    policy = {"allowed_paths": [str(allowed)]}
    async with agent_link(tmp_path, fake_broker, policy, [True]) as (link, prompter):
        await link.approve("shell-only", ["shell"])
        with pytest.raises(asyncssh.ChannelOpenError):
            async with link.conn.start_sftp_client(env={"SB_SESSION": "shell-only"}) as sftp:
                await sftp.listdir(str(allowed))
        notices = prompter.notices
        assert any("subsystem sftp" in n and "not approved for files" in n for n in notices)


async def test_unattended_session_shows_a_notice_when_the_group_allows_it(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    policy = {"unattended_allowed": True}
    async with agent_link(tmp_path, fake_broker, policy, []) as (link, prompter):
        link.send(
            {
                "type": "unattended",
                "session_id": "u-1",
                "capabilities": ["shell"],
                "technician": "Tina Tech",
                "ticket": "HD-9",
                "duration_minutes": 5,
            }
        )
        # The agent acknowledges the grant; the broker opens channels only after that.
        assert (await link.expect("granted"))["session_id"] == "u-1"
        ok = await _run(link, "shell u-1", b"echo unattended-ok\nexit\n")
        assert b"unattended-ok" in ok.stdout
        assert prompter.prompts == []  # nobody was asked: the group's policy decided
        assert any("UNATTENDED" in n and "Tina Tech" in n and "HD-9" in n for n in prompter.notices)


async def test_unattended_session_is_refused_when_the_group_does_not_allow_it(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    async with agent_link(tmp_path, fake_broker, {"unattended_allowed": False}, []) as (link, p):
        link.send({"type": "unattended", "session_id": "u-2", "capabilities": ["shell"]})
        assert (await link.expect("unattended_refused"))["session_id"] == "u-2"
        await _refused(link, p, "shell u-2", "not approved on this device")
        assert not any("UNATTENDED" in n for n in p.notices)


async def test_session_ended_by_the_broker_withdraws_the_grant(
    tmp_path: Path, fake_broker: FakeBroker
) -> None:
    async with agent_link(tmp_path, fake_broker, {}, [True]) as (link, prompter):
        await link.approve("end-1", ["shell"])
        link.send({"type": "session_ended", "session_id": "end-1", "reason": "revoked"})
        async with asyncio.timeout(10):
            while not any("session ended" in n for n in prompter.notices):
                await asyncio.sleep(0.02)
        await _refused(link, prompter, "shell end-1", "not approved on this device")
