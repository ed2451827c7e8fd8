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
