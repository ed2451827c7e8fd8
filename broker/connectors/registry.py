"""Which connector serves which ticket ``system``: entry points, built-ins, configuration.

Implementations are found through the entry-point group ``supportbroker.connectors``
(``kind = "module:Class"``) with the built-in map below as fallback. A
:class:`ConnectorRegistry` is built from the configuration (see
:mod:`broker.connectors.settings`) and hands out one instance per system; a system with no
configuration gets the :class:`~broker.connectors.null.NullConnector` (standalone).

The process-wide registry is built on first use from the environment; a database session
may carry its own in ``session.info["connectors"]`` and tests :func:`install` theirs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors.base import TicketConnector
from broker.connectors.null import NullConnector
from broker.connectors.settings import ConnectorsSettings, describe
from broker.context import settings_of
from broker.errors import ConnectorError

GROUP = "supportbroker.connectors"
BUILTIN: dict[str, str] = {
    "null": "broker.connectors.null:NullConnector",
    "webhook": "broker.connectors.webhook.connector:WebhookConnector",
    "zammad": "broker.connectors.zammad.connector:ZammadConnector",
    "glpi": "broker.connectors.glpi.connector:GlpiConnector",
    "osticket": "broker.connectors.osticket.connector:OsTicketConnector",
    "jira": "broker.connectors.jira.connector:JiraConnector",
    "freshdesk": "broker.connectors.freshdesk.connector:FreshdeskConnector",
}


def available() -> dict[str, str]:
    """Connector kind -> ``module:Class``, entry points overriding the built-ins."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def load_class(kind: str) -> Any:
    target = available().get(kind)
    if target is None:
        raise ConnectorError(f"unknown connector kind {kind!r}; known: {', '.join(available())}")
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConnectorError(f"connector kind {kind!r} ({target}) cannot be loaded") from exc


class ConnectorRegistry:
    """The configured systems and one connector instance per system."""

    def __init__(
        self,
        entries: Mapping[str, Mapping[str, Any]],
        *,
        broker_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.transport = transport
        self._instances: dict[str, TicketConnector] = {}
        self._configured: dict[str, tuple[Any, Any]] = {}
        for system, entry in entries.items():
            cls = load_class(str(entry.get("kind", "")))
            try:
                config = cls.config_model.model_validate(dict(entry))
            except ValidationError as exc:
                raise ConnectorError(
                    f"connector {system!r} is misconfigured: {describe(exc)}"
                ) from exc
            self._configured[system] = (cls, config)

    def systems(self) -> list[str]:
        return sorted(self._configured)

    def is_configured(self, system: str) -> bool:
        return system in self._configured

    def get(self, system: str) -> TicketConnector:
        connector = self._instances.get(system)
        if connector is not None:
            return connector
        cls, config = self._configured.get(system, (NullConnector, None))
        connector = cls(system, config, broker_url=self.broker_url, transport=self.transport)
        if not isinstance(connector, TicketConnector):
            raise ConnectorError(f"connector for {system!r} does not implement the port")
        self._instances[system] = connector
        return connector

    async def aclose(self) -> None:
        instances = list(self._instances.values())
        self._instances.clear()
        for connector in instances:
            await connector.aclose()


_current: ConnectorRegistry | None = None


def from_environment(broker_url: str) -> ConnectorRegistry:
    return ConnectorRegistry(ConnectorsSettings().entries(), broker_url=broker_url)


def registry_for(db: AsyncSession) -> ConnectorRegistry:
    """The registry for this database session's work."""
    global _current  # noqa: PLW0603 - one registry per process, built lazily
    attached = db.info.get("connectors")
    if isinstance(attached, ConnectorRegistry):
        return attached
    if _current is None:
        _current = from_environment(settings_of(db).base_url)
    return _current


def install(registry: ConnectorRegistry | None) -> None:
    """Use ``registry`` process-wide from now on (tests, embedding); None rebuilds lazily."""
    global _current  # noqa: PLW0603 - see registry_for
    _current = registry


async def reset() -> None:
    """Close the process-wide registry's clients and forget it."""
    global _current  # noqa: PLW0603 - see registry_for
    if _current is not None:
        await _current.aclose()
    _current = None
