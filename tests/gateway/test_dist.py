"""The agent's own wheel: only agent/ inside, only the agent's dependencies declared, pip
installs it into a fresh environment where ``supportbroker-agent --help`` runs, and the broker
serves it at the path the admin's page names."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from broker.gateway import dist

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"


def _names(content: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(content)) as wheel:
        return wheel.namelist()


def _metadata(content: bytes, member: str) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as wheel:
        return wheel.read(member).decode()


def _agent_imports() -> set[str]:
    """The distributions behind every non-stdlib, non-agent import in agent/."""
    tops: set[str] = set()
    for path in AGENT_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    foreign = tops - set(sys.stdlib_module_names) - {"agent", "__future__"}
    owners = importlib.metadata.packages_distributions()
    return {owners[top][0].lower() for top in foreign}


def test_the_wheel_holds_the_agent_and_nothing_of_the_server() -> None:
    wheel = dist.build(AGENT_DIR)
    names = _names(wheel.content)
    info = f"supportbroker_agent-{wheel.version}.dist-info"
    assert wheel.filename == f"supportbroker_agent-{wheel.version}-py3-none-any.whl"
    assert "agent/cli.py" in names
    assert "agent/__init__.py" in names
    assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD"} <= set(names)
    stray = [n for n in names if not (n.startswith(("agent/", info + "/")))]
    assert stray == []
    assert not any(n.startswith(("broker/", "audit/", "web/")) or "__pycache__" in n for n in names)
    assert "supportbroker-agent = agent.cli:main" in _metadata(
        wheel.content, f"{info}/entry_points.txt"
    )
    # the same code gives the same bytes (a digest shown anywhere stays true)
    assert dist.build(AGENT_DIR).content == wheel.content


def test_declared_requirements_are_exactly_what_agent_imports() -> None:
    wheel = dist.build(AGENT_DIR)
    meta = _metadata(wheel.content, f"supportbroker_agent-{wheel.version}.dist-info/METADATA")
    declared = {
        line.removeprefix("Requires-Dist: ").split(">")[0].split("=")[0].lower()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist: ")
    }
    assert declared == _agent_imports()
    assert "Requires-Dist: asyncssh>=" in meta  # the broker's floors, not bare names


@pytest.mark.slow  # a fresh venv and pip: `make test` runs it, `make test-fast` not
def test_pip_installs_it_into_a_fresh_venv_and_the_command_runs(tmp_path: Path) -> None:
    wheel = dist.build(AGENT_DIR)
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.content)
    env_dir = tmp_path / "device"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(path)],
        check=True,
        env=clean,
        cwd=tmp_path,  # not the checkout: its agent/ would shadow the installed one
        timeout=120,
    )
    # The dependencies come from this test's environment, appended after the device's own
    # packages by a path file (its lines are plain paths: this environment's editable
    # install of the whole project is NOT activated there, so `agent` is the wheel's).
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            env=clean,
            cwd=tmp_path,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    helped = subprocess.run(
        [env_dir / "bin" / "supportbroker-agent", "--help"],
        check=False,
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert "enroll" in helped.stdout
    where = subprocess.run(
        [py, "-c", "import agent; print(agent.__file__)\nimport broker"],
        check=False,
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(env_dir)), (where.stdout, where.stderr)
    assert "No module named 'broker'" in where.stderr


async def test_the_broker_serves_the_wheel(client: httpx.AsyncClient) -> None:
    wheel = dist.served()
    got = await client.get(f"/api/v1/agent/dist/{wheel.filename}")
    assert got.status_code == 200
    assert got.content == wheel.content
    assert got.headers["etag"] == f'"{wheel.sha256}"'
    assert zipfile.is_zipfile(io.BytesIO(got.content))
    wrong = await client.get("/api/v1/agent/dist/supportbroker-0.1.0-py3-none-any.whl")
    assert wrong.status_code == 404
    assert wrong.json()["error"] == "not_found"


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "x.whl"])
async def test_no_other_file_is_served(client: httpx.AsyncClient, name: str) -> None:
    got = await client.get(f"/api/v1/agent/dist/{name}")
    assert got.status_code == 404
