"""Agent settings (environment, prefix ``SUPPORTBROKER_AGENT_``) and the stored enrollment.

The enrollment (broker address, pinned broker key fingerprint, device id) lives in
``config_dir/agent.json`` and the device key in ``config_dir/device_ed25519``; both are
written mode 0600 and refused at load time when group- or world-readable.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.desktop import DesktopConfig

CONFIG_NAME = "agent.json"
KEY_NAME = "device_ed25519"


class AgentSettings(BaseSettings):
    """How this agent behaves; the enrollment itself is in :class:`EnrollmentConfig`."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTBROKER_AGENT_", extra="ignore")

    config_dir: Path = Path("~/.config/supportbroker-agent").expanduser()
    consent_timeout_seconds: float = Field(default=120.0, gt=0)
    shell_command: str | None = None  # None: the user's login shell
    # The broker probes links with open sessions every 10 s; the agent's own probe only has
    # to notice a dead broker (to redial) and keep NAT state alive.
    keepalive_interval: float = Field(default=30.0, gt=0)
    keepalive_count_max: int = Field(default=2, ge=1)
    # Redial after a lost link: jittered, doubling from the initial wait up to the maximum.
    # With the maximum at 30 s an agent is back within 30 s of its broker (or, behind a load
    # balancer, another replica) answering again, however long it was away.
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    notify: bool = True  # desktop notification via notify-send when available
    # The screen (view/control): ``auto`` starts x11vnc on $DISPLAY for each session that
    # needs it; ``attach`` uses the admin's VNC server on 127.0.0.1:desktop_port (password
    # files: first line); ``off`` refuses the desktop rights.
    desktop: Literal["auto", "attach", "off"] = "auto"
    x11vnc: str = "x11vnc"
    desktop_port: int | None = Field(default=None, gt=0, lt=65536)
    desktop_password_file: Path | None = None
    desktop_viewonly_password_file: Path | None = None
    # Who answers consent requests on this device: "desktop" asks with a dialog on the
    # screen (zenity; DISPLAY or WAYLAND_DISPLAY set), "terminal" asks on stdin, "web" leaves
    # every request to the consent page (the agent only says where it waits), "auto" asks
    # with the dialog where a graphical session is present, else on stdin when it is a
    # terminal (not when run as a service). The web code answers in every mode.
    consent_prompt: Literal["auto", "desktop", "terminal", "web"] = "auto"

    @property
    def config_path(self) -> Path:
        return self.config_dir / CONFIG_NAME

    @property
    def key_path(self) -> Path:
        return self.config_dir / KEY_NAME

    def desktop_config(self) -> DesktopConfig:
        from agent.desktop import DesktopConfig

        return DesktopConfig.from_environment(
            mode=self.desktop,
            x11vnc=self.x11vnc,
            port=self.desktop_port,
            password_file=self.desktop_password_file,
            viewonly_password_file=self.desktop_viewonly_password_file,
        )


@dataclass
class EnrollmentConfig:
    """What enrollment established; read by ``run``."""

    broker_host: str
    broker_port: int
    broker_fingerprint: str  # SHA256:... of the broker's gateway key, pinned
    device_id: str
    device_name: str = ""
    policy: dict[str, Any] = field(default_factory=dict)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # O_CREAT honours umask only for new files
    os.replace(tmp, path)


def check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600")


def save_enrollment(settings: AgentSettings, config: EnrollmentConfig) -> None:
    write_private(settings.config_path, json.dumps(asdict(config), indent=2).encode())


def load_enrollment(settings: AgentSettings) -> EnrollmentConfig:
    path = settings.config_path
    if not path.exists():
        raise ConfigError(f"not enrolled: {path} missing; run `supportbroker-agent enroll`")
    check_private(path)
    try:
        raw = json.loads(path.read_text())
        return EnrollmentConfig(**raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid agent configuration: {exc}") from exc
