"""GLPI connector settings (one entry of ``SUPPORTBROKER_CONNECTORS``)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from broker.connectors.settings import ConnectorConfig


class GlpiConfig(ConnectorConfig):
    kind: Literal["glpi"] = "glpi"
    app_token: SecretStr
    user_token: SecretStr
    web_url: str = ""  # the UI root when it is not base_url without /apirest.php
