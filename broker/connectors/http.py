"""Shared machinery of the HTTP connectors: one client, error translation, field mapping.

A subclass states its ``kind``, its config model, where its fields live (``default_fields``)
and which states are closed, then implements the calls. Every transport failure and every
unexpected status becomes ``ConnectorError`` (``NotFound`` for 404) raised ``from`` the
foreign error; response bodies and credentials never go into messages or logs.

Inbound, a request carrying ``X-SupportBroker-Signature`` is our generic signed format (a
relay, an osTicket plugin); anything else is the desk's own notification, which the
subclass reads (``native_event``). Outbound, a comment retried after a crash or a failed
try is looked for first among the ticket's comments (``comment_texts``), by its marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import quote

import httpx

from broker.connectors import signing
from broker.connectors.base import (
    INBOUND_EVENTS,
    OutboundMessage,
    TicketInfo,
    WebhookEvent,
    marker_line,
)
from broker.connectors.settings import ConnectorConfig
from broker.errors import ConnectorError, NotAuthenticated, NotFound, ValidationFailed

ConfigT = TypeVar("ConfigT", bound=ConnectorConfig)
TICKET_FIELDS = ("subject", "requester", "state", "assignee", "group", "priority", "category")


def pick(data: Any, path: str) -> Any:
    """``data["a"]["b"][0]`` for ``"a.b.0"``; None when any step is missing."""
    current = data
    for step in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(step)
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
        if current is None:
            return None
    return current


def text_of(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        for key in ("name", "displayName", "login", "email"):
            if value.get(key):
                return str(value[key])
        return None
    return str(value)


def parse_event(system: str, delivery_id: str, signed_at: datetime, body: bytes) -> WebhookEvent:
    """Our generic webhook body: ``{"type", "ticket": {"id", "state"?, "assignee"?}}``."""
    import json

    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValidationFailed("webhook body is not JSON") from exc
    event_type = payload.get("type") if isinstance(payload, dict) else None
    ticket = payload.get("ticket") if isinstance(payload, dict) else None
    if event_type not in INBOUND_EVENTS or not isinstance(ticket, dict):
        raise ValidationFailed(
            f"webhook needs 'type' (one of {', '.join(sorted(INBOUND_EVENTS))}) and 'ticket'"
        )
    external_id = ticket.get("id")
    if not isinstance(external_id, str | int) or not str(external_id).strip():
        raise ValidationFailed("webhook 'ticket.id' is missing")
    return WebhookEvent(
        delivery_id=delivery_id,
        event_type=str(event_type),
        external_id=str(external_id).strip()[:100],
        occurred_at=signed_at,
        state=text_of(ticket.get("state")),
        assignee=text_of(ticket.get("assignee")),
        # An explicit null says "nobody"; a missing key says nothing about the assignee.
        assignee_known="assignee" in ticket,
        group=text_of(ticket.get("group")),
        group_known="group" in ticket,
        data={k: v for k, v in payload.items() if k not in {"type", "ticket"}},
        source="relay",
    )


class HttpConnector(Generic[ConfigT]):
    """Base of the connectors that speak HTTP to their system."""

    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]
    can_lookup: ClassVar[bool] = True
    can_comment: ClassVar[bool] = True
    default_fields: ClassVar[dict[str, str]] = {}
    default_closed: ClassVar[frozenset[str]] = frozenset({"closed"})

    def __init__(
        self,
        system: str,
        config: ConfigT,
        *,
        broker_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.system = system
        self.config = config
        self.broker_url = broker_url.rstrip("/")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    # -- HTTP ------------------------------------------------------------------------------
    def auth(self) -> httpx.Auth | None:
        return None

    def auth_headers(self) -> dict[str, str]:
        return {}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.config.root,
                timeout=self.config.timeout_seconds,
                transport=self._transport,
                headers={"Accept": "application/json", **self.auth_headers()},
                auth=self.auth(),
            )
        return self._client

    async def request(
        self,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        what: str = "ticket",
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectorError(
                f"{self.system}: {method} {path} failed ({type(exc).__name__})"
            ) from exc
        if response.status_code == 404:
            raise NotFound(f"{self.system}: {what} not found ({method} {path})")
        if response.status_code not in expect:
            raise ConnectorError(
                f"{self.system}: {method} {path} answered HTTP {response.status_code}"
            )
        return response

    def json_of(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ConnectorError(
                f"{self.system}: answer to {response.url.path} is not JSON"
            ) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- mapping ---------------------------------------------------------------------------
    def field_paths(self) -> dict[str, str]:
        return {**self.default_fields, **self.config.fields}

    def closed_states(self) -> frozenset[str]:
        configured = self.config.closed_states
        names = configured if configured is not None else self.default_closed
        return frozenset(s.lower() for s in names)

    def closed_words(self) -> frozenset[str]:
        return self.closed_states() | {"closed"}

    def ticket_from(self, external_id: str, raw: Any, *, url: str | None) -> TicketInfo:
        paths = self.field_paths()
        values = {name: text_of(pick(raw, paths[name])) for name in TICKET_FIELDS if name in paths}
        raw_state = values.get("state") or ""
        return TicketInfo(
            system=self.system,
            external_id=external_id,
            subject=values.get("subject") or "",
            requester=values.get("requester") or "",
            state="closed" if raw_state.lower() in self.closed_states() else "open",
            raw_state=raw_state,
            assignee=values.get("assignee"),
            group=values.get("group"),
            priority=values.get("priority"),
            category=values.get("category"),
            url=url,
        )

    @staticmethod
    def numeric_id(external_id: str) -> int:
        if not external_id.isdigit():
            raise NotFound(f"ticket id {external_id!r} must be a number for this system")
        return int(external_id)

    # -- the parts every system shares -----------------------------------------------------
    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
    ) -> WebhookEvent:
        secret = self.config.webhook_secret
        if secret is None:
            raise NotAuthenticated(f"webhooks are not enabled for {self.system!r}")
        lower = {k.lower() for k in headers}
        if signing.SIGNATURE_HEADER.lower() not in lower:
            return self.native_event(headers, body, now=now or datetime.now(UTC))
        delivery_id, signed_at = signing.verify(
            secret.get_secret_value(),
            headers,
            body,
            window_seconds=self.config.replay_window_seconds,
            now=now,
        )
        return parse_event(self.system, delivery_id, signed_at, body)

    def native_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> WebhookEvent:
        """The desk's own notification; a desk without webhooks takes only our format."""
        raise NotAuthenticated(
            f"{self.system}: {self.kind} sends no webhooks of its own; sign the request as "
            f"described for {signing.SIGNATURE_HEADER}"
        )

    def deep_link(self, external_id: str) -> str:
        return (
            f"{self.broker_url}/t/{quote(self.system, safe='')}/"
            f"{quote(external_id, safe='')}/connect"
        )

    async def deliver(self, message: OutboundMessage) -> None:
        if not self.can_comment:
            # Queued before the system's config changed; it can never be delivered there.
            return
        if message.retry and message.marker and await self.already_posted(message):
            return  # an earlier try reached the desk: posting again would show it twice
        await self.post_comment(message.external_id, message.text, internal=True)

    async def already_posted(self, message: OutboundMessage) -> bool:
        assert message.marker is not None
        needle = marker_line(message.marker)
        return any(needle in text for text in await self.comment_texts(message.external_id))

    async def comment_texts(self, external_id: str) -> list[str]:
        return []  # a system that cannot be read back: delivery stays at-least-once

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        raise NotImplementedError  # pragma: no cover - every subclass implements it

    async def check(self) -> str:
        raise NotImplementedError  # pragma: no cover - every subclass implements it
