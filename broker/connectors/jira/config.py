"""Jira connector settings (one entry of ``SUPPORTBROKER_CONNECTORS``)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from broker.connectors.settings import ConnectorConfig


class JiraConfig(ConnectorConfig):
    kind: Literal["jira"] = "jira"
    email: str | None = None
    api_token: SecretStr
