"""The stored enrollment and the device key: written 0600, refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.config import EnrollmentConfig, load_enrollment, save_enrollment
from agent.errors import ConfigError
from agent.identity import load_or_create_key
from tests.agent.loopback import settings_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _config() -> EnrollmentConfig:
    return EnrollmentConfig("broker.example", 2222, "SHA256:abc", "dev-1", "pc-1")


def test_enrollment_is_written_owner_only_and_reads_back(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    old = os.umask(0o022)  # a permissive umask must not leak into the file's mode
    try:
        save_enrollment(settings, _config())
    finally:
        os.umask(old)
    assert _mode(settings.config_path) == 0o600
    assert load_enrollment(settings) == _config()


def test_enrollment_rewrite_keeps_mode_0600_even_if_loosened(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    save_enrollment(settings, _config())
    os.chmod(settings.config_path, 0o644)
    save_enrollment(settings, _config())
    assert _mode(settings.config_path) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    settings = settings_for(tmp_path)
    save_enrollment(settings, _config())
    os.chmod(settings.config_path, mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_enrollment(settings)


def test_missing_enrollment_says_how_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="supportbroker-agent enroll"):
        load_enrollment(settings_for(tmp_path))


def test_device_key_is_private_and_stable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = load_or_create_key(settings.key_path)
    assert _mode(settings.key_path) == 0o600
    again = load_or_create_key(settings.key_path)
    assert again.export_public_key() == first.export_public_key()
    os.chmod(settings.key_path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_or_create_key(settings.key_path)


def test_garbage_config_is_a_config_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    save_enrollment(settings, _config())
    settings.config_path.write_text("{not json")
    os.chmod(settings.config_path, 0o600)
    with pytest.raises(ConfigError, match="not a valid agent configuration"):
        load_enrollment(settings)
