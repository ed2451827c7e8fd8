"""GLPI's own webhook, in core since GLPI 11.0 (Setup: Administration > Configuration >
Webhooks; GLPI 10 has none without a plugin such as FPWebhook, which this does not read).

GLPI queues a POST per event on the chosen itemtype (``Ticket``; events ``new``, ``update``,
``delete`` and the ticket's notification events such as ``solved`` and ``closed``), with the
default payload ``{"event": "...", "item": <the ticket as the high-level API v2 shows it>}``
(``id``, ``name``, ``status: {"id", "name"}``, ``team: [{"role", "name", "href"}]``...) and
``X-GLPI-signature: <hex HMAC-SHA256(secret, body + timestamp)>``, ``X-GLPI-timestamp``
(Unix seconds). The signature covers the timestamp, so a fresh timestamp and the signature
as the replay key refuse a replay. Docs:
https://help.glpi-project.org/documentation/modules/configuration/webhook and
``Webhook::raise`` in glpi-project/glpi ``src/Webhook.php`` (11.0).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from broker.connectors import inbound
from broker.connectors.base import WebhookEvent
from broker.connectors.glpi.config import GlpiConfig
from broker.errors import NotAuthenticated, ValidationFailed

WHAT = "GLPI webhook"
STATUS_NAMES = {1: "new", 2: "processing (assigned)", 3: "processing (planned)", 4: "pending"}
STATUS_NAMES |= {5: "solved", 6: "closed"}


def parse(
    system: str,
    config: GlpiConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    closed_words: frozenset[str],
    now: datetime,
) -> WebhookEvent:
    secret = inbound.require_secret(config.webhook_secret, system)
    sent = inbound.header(headers, "X-GLPI-signature")
    raw_ts = inbound.header(headers, "X-GLPI-timestamp")
    if not sent or not raw_ts:
        raise NotAuthenticated(
            f"{WHAT} needs X-GLPI-signature and X-GLPI-timestamp: give the webhook a secret"
        )
    if not raw_ts.isdigit():
        raise NotAuthenticated(f"{WHAT}: X-GLPI-timestamp is not Unix seconds")
    signature = inbound.check_hmac(
        secret, body + raw_ts.encode(), sent, digest="sha256", what="X-GLPI-signature"
    )
    sent_at = datetime.fromtimestamp(int(raw_ts), UTC)
    inbound.check_fresh(sent_at, now, config.replay_window_seconds, "X-GLPI-timestamp")
    payload = inbound.json_object(body, WHAT)
    event = payload.get("event")
    item = inbound.obj(payload, "item", WHAT)
    if not isinstance(event, str) or not event:
        raise ValidationFailed(f"{WHAT}: 'event' is missing (use the default payload)")
    external_id = inbound.ticket_id(item.get("id"), WHAT)
    state = _status(item.get("status"))
    word = (state or "").lower()
    event_type = {"new": "ticket.created", "delete": "ticket.closed"}.get(event, "ticket.updated")
    if event == "delete":
        state, word = "deleted", "deleted"
    elif word in closed_words:
        event_type = "ticket.closed"
    team = item.get("team")
    return WebhookEvent(
        delivery_id=f"sha256:{signature}",
        event_type=event_type,
        external_id=external_id,
        occurred_at=sent_at,
        state=state,
        closed=(word in closed_words or word == "deleted") if state else None,
        assignee=_assigned(team, "user"),
        assignee_known=isinstance(team, list),
        group=_assigned(team, "group"),
        group_known=isinstance(team, list),
        subject=item.get("name") if isinstance(item.get("name"), str) else None,
        data={"glpi_event": event[:60]},
    )


def _status(value: Any) -> str | None:
    if isinstance(value, dict):
        name, number = value.get("name"), value.get("id")
        if isinstance(name, str) and name:
            return name.lower()[:60]
        value = number
    if isinstance(value, int) and not isinstance(value, bool):
        return STATUS_NAMES.get(value, str(value))
    return None


def _assigned(team: Any, kind: str) -> str | None:
    """The first assigned member of ``kind`` (user or group): the API v2 team lists members
    with ``role`` and a ``href`` to their form (``user.form.php`` / ``group.form.php``)."""
    for member in team if isinstance(team, list) else []:
        if not isinstance(member, dict) or member.get("role") != "assigned":
            continue
        href = str(member.get("href", "")).lower()
        declared = str(member.get("type", "")).lower()
        if declared == kind or f"/{kind}.form.php" in href:
            return inbound.person(member)
    return None
