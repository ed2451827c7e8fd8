"""Connector configuration: one entry per ticket ``system`` name, several systems at once.

Read from ``SUPPORTBROKER_CONNECTORS`` (a JSON object) and/or ``SUPPORTBROKER_CONNECTORS_FILE``
(a ``.json`` or ``.toml`` file with the same object; the environment wins per system)::

    SUPPORTBROKER_CONNECTORS='{"zammad": {"kind": "zammad",
        "base_url": "https://desk.example", "token": "...", "webhook_secret": "..."}}'

Each entry's ``kind`` picks the implementation; the implementation's own pydantic model
(a subclass of :class:`ConnectorConfig`) validates the rest. Credentials are ``SecretStr``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.errors import ConnectorError


class ConnectorConfig(BaseModel):
    """What every connector understands; implementations add their credentials."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    base_url: str = ""
    # Verifies inbound webhooks (our signed format); no secret, no webhooks for this system.
    webhook_secret: SecretStr | None = None
    replay_window_seconds: int = Field(default=300, ge=10, le=3600)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Which foreign field holds what: our TicketInfo field -> dotted path in their JSON.
    fields: dict[str, str] = {}
    # Their state names that count as closed (case-insensitive); None: the kind's default.
    closed_states: list[str] | None = None
    # Refuse sessions on tickets not assigned to the technician (login, name or e-mail).
    require_assignee: bool = False
    # With require_assignee: also accept a ticket assigned to nobody in person but to a group
    # the technician belongs to (their device groups, by name). A ticket assigned to a
    # colleague stays refused: the group does not override a personal assignment.
    accept_group: bool = False
    # The system's group (name or id, as the lookup returns it) -> our device-group name.
    group_map: dict[str, str] = {}
    # Post the "start remote session" link as an internal note: never, on the first
    # notification about an open ticket ("created"), or once it is assigned ("assigned").
    link_note: Literal["off", "created", "assigned"] = "off"
    # While a ticket has open sessions, ask its system this often whether it is still open
    # and theirs (the fallback of the webhooks); 0: never.
    watch_interval_seconds: int = Field(default=300, ge=0, le=86400)
    # How long a worker holds a ticket's next comment before another may try it (a worker
    # that died holds it until then); longer than a delivery can take.
    delivery_lease_seconds: float = Field(default=120.0, ge=1, le=3600)
    # How many refused inbound deliveries are kept for the admin (the oldest go first).
    rejects_kept: int = Field(default=200, ge=0, le=10000)

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")


class ConnectorsSettings(BaseSettings):
    """The connector part of the environment (prefix ``SUPPORTBROKER_``)."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTBROKER_", extra="ignore")

    connectors: dict[str, dict[str, Any]] = {}
    connectors_file: Path | None = None

    def entries(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        if self.connectors_file is not None:
            merged.update(read_file(self.connectors_file))
        merged.update(self.connectors)
        for system, entry in merged.items():
            if not isinstance(entry, dict) or "kind" not in entry:
                raise ConnectorError(f"connector {system!r}: an object with a 'kind' is needed")
        return merged


def read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = path.read_bytes()
        data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ConnectorError(f"cannot read connector file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConnectorError(f"connector file {path} must hold an object of systems")
    return data


def describe(exc: ValidationError) -> str:
    """A validation error without the offending input (it may be a credential)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
