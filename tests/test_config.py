"""Settings: zero-configuration defaults for development, placeholder secrets refused elsewhere."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from broker.cli import main
from broker.config import PLACEHOLDER_SECRET, Settings

REAL_SECRET = SecretStr("a-real-secret-of-enough-length-42")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts, not what the shell running pytest happens to export."""
    for name in ("ENVIRONMENT", "SECRET_KEY", "DATABASE_URL", "DATA_DIR", "REASON_MIN_LENGTH"):
        monkeypatch.delenv(f"SUPPORTBROKER_{name}", raising=False)


def test_development_runs_with_the_placeholder_and_documented_defaults() -> None:
    settings = Settings()
    assert settings.environment == "development"
    assert settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET
    assert settings.database_url == "sqlite+aiosqlite:///var/supportbroker.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.max_concurrent_sessions == 2
    assert settings.consent_timeout_seconds == 600
    assert settings.consent_max_attempts == 5


def test_the_data_folder_holds_the_default_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", "/srv/sb-data")
    assert Settings().database_url == "sqlite+aiosqlite:////srv/sb-data/supportbroker.db"
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", "postgresql+asyncpg://sb@db/sb")
    assert Settings().database_url == "postgresql+asyncpg://sb@db/sb"  # an explicit URL wins


@pytest.mark.parametrize("environment", ["production", "test"])
def test_placeholder_secret_is_refused_outside_development(environment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment=environment)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "SUPPORTBROKER_SECRET_KEY is the development placeholder" in message
    assert environment in message
    assert PLACEHOLDER_SECRET not in message.replace("development placeholder", "")


@pytest.mark.parametrize("environment", ["production", "test"])
def test_a_real_secret_is_accepted_outside_development(environment: str) -> None:
    settings = Settings(environment=environment, secret_key=REAL_SECRET)  # type: ignore[arg-type]
    assert settings.secret_key == REAL_SECRET
    assert REAL_SECRET.get_secret_value() not in repr(settings)


def test_short_secret_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(secret_key=SecretStr("short"))


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "production")
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", REAL_SECRET.get_secret_value())
    monkeypatch.setenv("SUPPORTBROKER_REASON_MIN_LENGTH", "25")
    settings = Settings()
    assert settings.environment == "production"
    assert settings.reason_min_length == 25


@pytest.mark.parametrize(("name", "value"), [("REASON_MIN_LENGTH", "0"), ("PORT", "http")])
def test_out_of_range_policy_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"SUPPORTBROKER_{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_cli_refuses_to_start_on_the_placeholder_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "production")
    assert main(["session", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("supportbroker: error: configuration error:")
    assert "SUPPORTBROKER_SECRET_KEY" in err
    assert "Traceback" not in err
