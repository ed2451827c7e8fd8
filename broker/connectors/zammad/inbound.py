"""Zammad's own webhook: a trigger (Manage > Trigger) whose action is a Webhook.

Zammad POSTs ``{"ticket": {...}, "article": {...}}`` (the default payload: the ticket with
its state, owner and group expanded) with ``X-Zammad-Trigger`` (the trigger's name),
``X-Zammad-Delivery`` (a random id per delivery; a retry keeps it) and, when the webhook has
an "HMAC SHA1 Signature Token", ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, body)>``.
Docs: https://admin-docs.zammad.org/en/latest/manage/webhook/payload.html (headers, payload)
and .../manage/webhook/add.html (the token); the signing is ``UserAgent.set_signature`` in
zammad/zammad ``lib/user_agent.rb``.

Only the body is signed, and Zammad sends no timestamp header: the signed
``ticket.updated_at`` must lie inside the replay window, and the body's signature is what a
replay repeats (the delivery id header is not signed, so it cannot be the replay key).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from broker.connectors import inbound
from broker.connectors.base import WebhookEvent
from broker.connectors.zammad.config import ZammadConfig
from broker.errors import NotAuthenticated, ValidationFailed

WHAT = "Zammad webhook"
NOBODY = {"-", ""}  # Zammad's "nobody" owner is the system user (id 1, login "-")


def parse(
    system: str,
    config: ZammadConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    closed_words: frozenset[str],
    now: datetime,
) -> WebhookEvent:
    secret = inbound.require_secret(config.webhook_secret, system)
    sent = inbound.header(headers, "X-Hub-Signature")
    if not sent:
        raise NotAuthenticated(
            f"{WHAT} needs X-Hub-Signature: set the webhook's HMAC SHA1 Signature Token"
        )
    signature = inbound.check_hmac(
        secret, body, sent, digest="sha1", prefix="sha1=", what="X-Hub-Signature"
    )
    payload = inbound.json_object(body, WHAT)
    ticket = inbound.obj(payload, "ticket", WHAT)
    external_id = inbound.ticket_id(ticket.get("id"), WHAT)
    updated = inbound.iso_time(ticket.get("updated_at"))
    if updated is None:
        raise ValidationFailed(f"{WHAT}: 'ticket.updated_at' is missing or not a time")
    inbound.check_fresh(updated, now, config.replay_window_seconds, "ticket.updated_at")
    state = _name(ticket.get("state"))
    if state is None:
        raise ValidationFailed(f"{WHAT}: 'ticket.state' is missing")
    owner = inbound.person(ticket.get("owner"))
    if ticket.get("owner_id") == 1 or (owner or "") in NOBODY:
        owner = None
    word = state.lower()
    event_type = "ticket.updated"
    if word == "merged":
        event_type = "ticket.merged"
    elif word in closed_words:
        event_type = "ticket.closed"
    return WebhookEvent(
        delivery_id=f"sha1:{signature}",
        event_type=event_type,
        external_id=external_id,
        occurred_at=updated,
        state=state,
        closed=word in closed_words or word == "merged",
        assignee=owner,
        assignee_known="owner" in ticket or "owner_id" in ticket,
        group=_name(ticket.get("group")),
        group_known="group" in ticket,
        subject=ticket.get("title") if isinstance(ticket.get("title"), str) else None,
        data={
            "trigger": inbound.header(headers, "X-Zammad-Trigger")[:200],
            "zammad_delivery": inbound.header(headers, "X-Zammad-Delivery")[:200],
            "number": str(ticket.get("number", ""))[:50],
        },
    )


def _name(value: object) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        return str(name)[:200] if isinstance(name, str) and name else None
    if isinstance(value, str) and value.strip():
        return value.strip()[:200]
    return None
