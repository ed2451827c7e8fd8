"""``supportbroker connect SESSION --put LOCAL REMOTE`` / ``--get REMOTE LOCAL`` as a technician
runs them: the real command, a live broker, a real agent. A refusal exits 1 with the reason
and leaves no local file behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx
import pytest

from tests.gateway.test_connect_banner import CLI
from tests.gateway.test_files import _approved, _sealed


async def _cli(live_url: str, token: str, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "connect",
        *argv,
        "--url",
        live_url,
        env={**os.environ, "SUPPORTBROKER_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# The data path under the command is test_files.py's, run on both databases; each command
# here is a process start (seconds), so this runs once.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_put_and_get_through_the_cli(
    app: Any, gateway: Any, people: Any, tmp_path: Any, live_url: str
):
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:
        agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, token = people["allowed"], people["tech_token"]
    local = tmp_path / "patch.bin"
    local.write_bytes(os.urandom(2 << 20))
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    try:
        code, out, err = await _cli(live_url, token, sid, "--put", str(local), f"{allowed}/p.bin")
        assert code == 0, err
        assert digest in out
        assert "100%" in err  # the progress bar
        assert (allowed / "p.bin").read_bytes() == local.read_bytes()

        back = tmp_path / "back.bin"
        code, out, err = await _cli(live_url, token, sid, "--get", f"{allowed}/p.bin", str(back))
        assert code == 0, err
        assert back.read_bytes() == local.read_bytes()
        assert digest in out
        assert not (tmp_path / "back.bin.sbpart").exists()

        stolen = tmp_path / "stolen.txt"
        code, _, err = await _cli(
            live_url, token, sid, "--get", f"{allowed}/../secret.txt", str(stolen)
        )
        assert code == 1
        assert "'..' is not allowed" in err
        assert "Traceback" not in err
        assert not stolen.exists()
        assert not (tmp_path / "stolen.txt.sbpart").exists()
        sealed = await _sealed(app, sid)
        assert [d["outcome"] for d in sealed] == ["ok", "ok", "failed"]
    finally:
        await agent.stop()


@pytest.fixture
def full_local_disk(tmp_path: Any) -> Any:
    """The technician's folder on a 64 KiB tmpfs (root only: skipped elsewhere)."""
    import subprocess

    folder = tmp_path / "desk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_get_onto_a_full_local_disk_fails_cleanly_and_is_sealed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, live_url: str, full_local_disk: Any
):
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:
        agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, token = people["allowed"], people["tech_token"]
    # Far more than the 64 KiB disk and than the loopback's buffers: the broker is still
    # sending when the command gives up, and sees it go.
    (allowed / "big.iso").write_bytes(b"i" * (32 << 20))
    target = full_local_disk / "big.iso"
    try:
        code, out, err = await _cli(
            live_url, token, sid, "--get", f"{allowed}/big.iso", str(target)
        )
        assert code == 1
        assert "No space left on device" in err
        assert "nothing was kept" in err
        assert "Traceback" not in err
        assert out == ""
        assert os.listdir(full_local_disk) == []  # neither the file nor big.iso.sbpart
        async with asyncio.timeout(20):
            while not (sealed := await _sealed(app, sid)):
                await asyncio.sleep(0.05)
        assert (sealed[-1]["direction"], sealed[-1]["outcome"]) == ("download", "failed")
        assert "interrupted" in sealed[-1]["why"]
        assert sealed[-1]["size"] < 32 << 20
    finally:
        await agent.stop()
