"""Zammad connector settings (one entry of ``SUPPORTBROKER_CONNECTORS``)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from broker.connectors.settings import ConnectorConfig


class ZammadConfig(ConnectorConfig):
    kind: Literal["zammad"] = "zammad"
    token: SecretStr
