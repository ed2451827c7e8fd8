"""Jira's own webhook (System > WebHooks, or ``/rest/webhooks/1.0/webhook``) with a secret.

With a secret set, Jira signs each POST the WebSub way: ``X-Hub-Signature:
sha256=<hex HMAC-SHA256(secret, body)>`` ("Secure admin webhooks" in the Cloud docs; "Secret
token" in Data Center's "Managing webhooks"). ``X-Atlassian-Webhook-Identifier`` names the
delivery (a retry keeps it) but is not signed; the body's ``timestamp`` (milliseconds) is,
so the delivery must be fresh and its signature is what a replay repeats. Bodies:
``{"timestamp", "webhookEvent": "jira:issue_created|jira:issue_updated|jira:issue_deleted",
"issue": {"key", "fields": {...}}, "changelog": {"items": [{"field", "fromString",
"toString"}, ...]}}``.
Docs: https://developer.atlassian.com/cloud/jira/platform/webhooks/ and
https://confluence.atlassian.com/adminjiraserver/managing-webhooks-938846912.html
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from broker.connectors import inbound
from broker.connectors.base import WebhookEvent
from broker.connectors.http import pick, text_of
from broker.connectors.jira.config import JiraConfig
from broker.errors import NotAuthenticated, ValidationFailed

WHAT = "Jira webhook"
EVENTS = {"jira:issue_created", "jira:issue_updated", "jira:issue_deleted"}
DUPLICATE = "duplicate"  # the resolution Jira sets on an issue merged into another


def parse(
    system: str,
    config: JiraConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    closed_words: frozenset[str] | None,
    now: datetime,
) -> WebhookEvent:
    secret = inbound.require_secret(config.webhook_secret, system)
    sent = inbound.header(headers, "X-Hub-Signature")
    if not sent:
        raise NotAuthenticated(f"{WHAT} needs X-Hub-Signature: give the webhook a secret")
    signature = inbound.check_hmac(
        secret, body, sent, digest="sha256", prefix="sha256=", what="X-Hub-Signature"
    )
    payload = inbound.json_object(body, WHAT)
    stamp = payload.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise ValidationFailed(f"{WHAT}: 'timestamp' (milliseconds) is missing")
    sent_at = datetime.fromtimestamp(stamp / 1000, UTC)
    inbound.check_fresh(sent_at, now, config.replay_window_seconds, "the webhook's timestamp")
    kind = payload.get("webhookEvent")
    if kind not in EVENTS:
        raise ValidationFailed(
            f"{WHAT}: event {str(kind)[:60]!r} is not handled; subscribe the webhook to "
            "Issue created, updated and deleted only"
        )
    issue = inbound.obj(payload, "issue", WHAT)
    external_id = inbound.ticket_id(issue.get("key"), WHAT)
    raw_fields = issue.get("fields")
    fields: dict[str, Any] = raw_fields if isinstance(raw_fields, dict) else {}
    status = text_of(pick(fields, "status.name"))
    if closed_words is None:
        closed = pick(fields, "status.statusCategory.key") == "done"
    else:
        closed = (status or "").lower() in closed_words
    changes = _changes(payload.get("changelog"))
    event_type = "ticket.updated"
    if kind == "jira:issue_created":
        event_type = "ticket.created"
    elif kind == "jira:issue_deleted":
        event_type, status, closed = "ticket.closed", "deleted", True
    elif (changes.get("resolution") or "").lower() == DUPLICATE:
        event_type = "ticket.merged"
    elif closed and "status" in changes:
        event_type = "ticket.closed"
    group_path = config.fields.get("group")
    return WebhookEvent(
        delivery_id=f"sha256:{signature}",
        event_type=event_type,
        external_id=external_id,
        occurred_at=sent_at,
        state=status,
        closed=closed if status is not None else None,
        assignee=text_of(fields.get("assignee")),
        assignee_known="assignee" in fields,
        group=text_of(pick(issue, group_path)) if group_path else None,
        group_known=bool(group_path),
        subject=text_of(fields.get("summary")),
        data={
            "webhook_event": kind,
            "atlassian_delivery": inbound.header(headers, "X-Atlassian-Webhook-Identifier")[:200],
            "changed": sorted(changes),
        },
    )


def _changes(changelog: Any) -> dict[str, str | None]:
    """Field name -> new value (``toString``) of the changelog's items."""
    items = changelog.get("items") if isinstance(changelog, dict) else None
    found: dict[str, str | None] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("field"), str):
            to = item.get("toString")
            found[item["field"].lower()] = to if isinstance(to, str) else None
    return found
