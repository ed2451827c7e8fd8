"""Freshdesk connector settings (one entry of ``SUPPORTBROKER_CONNECTORS``)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from broker.connectors.settings import ConnectorConfig


class FreshdeskConfig(ConnectorConfig):
    kind: Literal["freshdesk"] = "freshdesk"
    api_key: SecretStr
    # How the automation's "Trigger webhook" action proves itself: basic authentication
    # with this user name and the webhook secret, or this header carrying the secret.
    webhook_user: str = "freshdesk"
    webhook_header: str = "X-Supportbroker-Token"
