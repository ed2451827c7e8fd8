"""``supportbroker provider check NAME`` through the real command entry point (``main``).

Providers are configured only by the environment, as in production: MeshCentral is the real
server on loopback; AnyDesk points at a closed loopback port (its real API is not reachable
from tests). Every failure is one clear line on stderr or stdout and a non-zero exit.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.cli import main
from broker.config import Settings
from broker.providers import registry
from tests.providers import meshcentral_server as mc

MC_ENV = "SUPPORTBROKER_PROVIDER_MESHCENTRAL_"
AD_ENV = "SUPPORTBROKER_PROVIDER_ANYDESK_"


# On SQLite only, as the command line is run in these tests (broker_env: tests/conftest.py).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def provider_env(broker_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider configured from the environment the tests run in."""
    for var in ("URL", "USERNAME", "LOGIN_KEY", "PASSWORD", "CONNECT_TIMEOUT"):
        monkeypatch.delenv(MC_ENV + var, raising=False)
    for var in ("API_URL", "LICENSE_ID", "API_PASSWORD", "TIMEOUT"):
        monkeypatch.delenv(AD_ENV + var, raising=False)
    asyncio.run(registry.reset())  # the command builds its provider from this environment


@pytest.fixture
def meshcentral_env(meshcentral: mc.MeshServer, monkeypatch: pytest.MonkeyPatch) -> mc.MeshServer:
    monkeypatch.setenv(MC_ENV + "URL", meshcentral.url)
    monkeypatch.setenv(MC_ENV + "USERNAME", mc.ADMIN_USER)
    monkeypatch.setenv(MC_ENV + "LOGIN_KEY", meshcentral.login_key_hex)
    monkeypatch.setenv(MC_ENV + "CONNECT_TIMEOUT", "3")
    return meshcentral


def test_ok_when_reachable_and_authorised(
    meshcentral_env: mc.MeshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provider", "check", "meshcentral"]) == 0
    out = capsys.readouterr().out
    assert f"\nmeshcentral: ok: connected to {meshcentral_env.url} as " in f"\n{out}"
    assert "device group(s)" in out
    assert meshcentral_env.login_key_hex not in out


def test_unreachable_server(
    meshcentral_env: mc.MeshServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(MC_ENV + "URL", f"http://127.0.0.1:{mc.free_port()}")
    assert main(["provider", "check", "meshcentral"]) == 1
    out = capsys.readouterr().out
    assert "\nmeshcentral: FAILED: MeshCentral at http://127.0.0.1:" in f"\n{out}"
    assert "is not reachable" in out


@pytest.mark.parametrize("credential", ["password", "login_key"])
def test_bad_credentials(
    meshcentral_env: mc.MeshServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    credential: str,
) -> None:
    if credential == "password":
        monkeypatch.delenv(MC_ENV + "LOGIN_KEY")
        monkeypatch.setenv(MC_ENV + "PASSWORD", "not-the-password")
        secret = "not-the-password"
    else:
        secret = "cd" * 80
        monkeypatch.setenv(MC_ENV + "LOGIN_KEY", secret)
    assert main(["provider", "check", "meshcentral"]) == 1
    out = capsys.readouterr().out
    assert "meshcentral: FAILED: MeshCentral refused the broker's login" in out
    assert "check the account and its login key or password" in out
    assert secret not in out


def test_anydesk_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(AD_ENV + "API_URL", f"http://127.0.0.1:{mc.free_port()}")
    monkeypatch.setenv(AD_ENV + "LICENSE_ID", "123456789")
    monkeypatch.setenv(AD_ENV + "API_PASSWORD", "api-secret-value")
    assert main(["provider", "check", "anydesk"]) == 1
    out = capsys.readouterr().out
    assert "anydesk: FAILED: AnyDesk API at http://127.0.0.1:" in out
    assert "failed on GET /auth: ConnectError" in out
    assert "api-secret-value" not in out


def test_unknown_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provider", "check", "teamviewer"]) == 1
    err = capsys.readouterr().err
    assert "supportbroker: error: unknown provider 'teamviewer'; known: " in err
    assert "meshcentral" in err
    assert "Traceback" not in err


def test_provider_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provider", "check", "meshcentral"]) == 1
    err = capsys.readouterr().err
    assert "supportbroker: error: meshcentral is not set up yet: " in err
    assert "LOGIN_KEY or _PASSWORD" in err
