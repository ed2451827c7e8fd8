"""The agent's systemd --user unit, as shipped and as ``service-unit`` prints it, verified by
``systemd-analyze verify`` (skipped outside CI without it: apt install systemd)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.cli import SHIPPED_EXEC, main, service_unit

IN_CI = os.environ.get("CI", "").lower() == "true"
SHIPPED = Path(__file__).parents[2] / "agent" / "systemd" / "supportbroker-agent.service"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze missing (apt install systemd)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    # --user needs a runtime directory of its own; no running user manager is asked.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run(
        [_analyze(), "verify", "--user", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_printed_unit_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service-unit"]) == 0
    printed = capsys.readouterr().out
    unit = tmp_path / "supportbroker-agent.service"
    unit.write_text(printed)
    done = _verify(unit, tmp_path)
    # Unknown keys or sections are only warnings: any message is a failure here.
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr
    exec_line = next(line for line in printed.splitlines() if line.startswith("ExecStart="))
    program = exec_line.removeprefix("ExecStart=").split()[0]
    assert Path(program).is_file()
    assert os.access(program, os.X_OK)
    assert exec_line.endswith(" run")


def test_shipped_unit_is_the_printed_one_for_the_default_place() -> None:
    shipped = SHIPPED.read_text()
    assert service_unit(SHIPPED_EXEC) == shipped
    # The display is the session's: the unit starts and stops with the graphical session.
    assert "WantedBy=graphical-session.target" in shipped
    assert "PartOf=graphical-session.target" in shipped


def test_a_broken_unit_is_caught(tmp_path: Path) -> None:
    """The check itself: a misspelt key fails the verification above."""
    unit = tmp_path / "supportbroker-agent.service"
    unit.write_text(service_unit().replace("Restart=on-failure", "Restrat=on-failure"))
    done = _verify(unit, tmp_path)
    assert done.returncode != 0 or done.stderr.strip()
