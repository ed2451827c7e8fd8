"""Freshdesk's own webhook: the "Trigger webhook" action of an automation rule (Admin >
Workflows > Automations, rules that run on ticket creation or on ticket updates).

Freshdesk signs nothing. The action can send credentials ("Requires authentication":
username and password, sent as HTTP basic) or custom headers; the broker accepts either the
basic pair (``webhook_user`` : ``webhook_secret``) or the header named ``webhook_header``
carrying ``webhook_secret``. The body is JSON: the "Simple" content wraps the chosen fields
in ``{"freshdesk_webhook": {"ticket_id", "ticket_status", ...}}``, the "Advanced" content is
the JSON the admin writes with placeholders (``{{ticket.id}}``, ``{{ticket.status}}``,
``{{ticket.agent.email}}``, ``{{ticket.group.name}}``, ``{{triggered_event}}``); both are
read. Freshdesk sends no delivery id and no timestamp, so a replay cannot be told from a
second notification: there is no replay memory, and what a notification does (set the
state, the assignee) gives the same result when applied twice.
Docs: https://support.freshdesk.com/support/solutions/articles/132589-using-webhooks-in-automation-rules
and https://support.freshdesk.com/support/solutions/articles/37595-using-placeholders
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from broker.connectors import inbound
from broker.connectors.base import WebhookEvent
from broker.connectors.freshdesk.config import FreshdeskConfig
from broker.errors import NotAuthenticated, ValidationFailed

WHAT = "Freshdesk webhook"
WRAPPER = "freshdesk_webhook"
STATUS = {"2": "open", "3": "pending", "4": "resolved", "5": "closed"}


def authenticate(system: str, config: FreshdeskConfig, headers: Mapping[str, str]) -> None:
    secret = inbound.require_secret(config.webhook_secret, system)
    if inbound.check_basic(headers, config.webhook_user, secret):
        return
    sent = inbound.header(headers, config.webhook_header)
    if sent and hmac.compare_digest(sent.encode(), secret.encode()):
        return
    raise NotAuthenticated(
        f"{WHAT}: neither basic authentication as {config.webhook_user!r} nor the "
        f"{config.webhook_header} header carries the webhook secret"
    )


def parse(
    system: str,
    config: FreshdeskConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    closed_words: frozenset[str],
    now: datetime,
) -> WebhookEvent:
    authenticate(system, config, headers)
    payload = inbound.json_object(body, WHAT)
    fields = payload.get(WRAPPER, payload)
    if not isinstance(fields, dict):
        raise ValidationFailed(f"{WHAT}: '{WRAPPER}' must be an object")
    external_id = inbound.ticket_id(fields.get("ticket_id"), WHAT)
    if not external_id.isdigit():
        raise ValidationFailed(f"{WHAT}: 'ticket_id' must be a Freshdesk ticket number")
    state = _status(fields.get("ticket_status"))
    if state is None:
        raise ValidationFailed(f"{WHAT}: 'ticket_status' is missing")
    triggered = str(fields.get("triggered_event") or "")[:200]
    closed = state in closed_words
    event_type = "ticket.updated"
    if "created" in triggered.lower():
        event_type = "ticket.created"
    elif closed:
        event_type = "ticket.closed"
    agent = _text(fields.get("ticket_agent_email")) or _text(fields.get("ticket_agent_name"))
    return WebhookEvent(
        delivery_id=None,
        event_type=event_type,
        external_id=external_id,
        occurred_at=now,
        state=state,
        closed=closed,
        assignee=agent,
        assignee_known="ticket_agent_email" in fields or "ticket_agent_name" in fields,
        group=_text(fields.get("ticket_group_name")),
        group_known="ticket_group_name" in fields,
        subject=_text(fields.get("ticket_subject")),
        data={"triggered_event": triggered},
    )


def _status(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    return STATUS.get(text, text.lower())


def _text(value: Any) -> str | None:
    """A placeholder's value; an unset one renders as an empty string."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text[:200] or None
