"""Consent per right: the end user grants a subset of what was asked; the session gets only
that (the provider's grant reads it), the receipt states only that, none left is a denial."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import Desk, audit_events, consent_token, open_session


async def _decide(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erin", **body}
    )


async def test_granted_subset_is_what_the_session_and_receipt_get(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk, capabilities=["view", "control", "shell"])
    token = consent_token(created)
    not_asked = await _decide(client, token, capabilities=["view", "files"])
    assert not_asked.status_code == 422
    assert "not requested" in not_asked.json()["detail"]
    blind = await _decide(client, token, capabilities=["control"])
    assert blind.status_code == 422
    assert "seeing the screen" in blind.json()["detail"]

    decided = await _decide(client, token, capabilities=["view"])
    assert decided.status_code == 200, decided.text
    assert decided.json()["capabilities"] == ["view"]
    session = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
    assert session.json()["state"] == "approved"
    assert session.json()["capabilities"] == ["view"]
    events = await audit_events(app, "helpdesk:HD-4711")
    [receipt] = [p["data"] for t, p in events if t == "consent.decided"]
    assert receipt["capabilities"] == ["view"]
    assert receipt["decision"] == "approve"
    # What the provider was asked to grant is the narrowed set.
    [prepared] = [p["data"] for t, p in events if t == "provider.prepared"]
    assert prepared["capabilities"] == ["view"]


async def test_nothing_left_is_a_denial(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk, capabilities=["view", "control"])
    decided = await _decide(client, consent_token(created), capabilities=[])
    assert decided.status_code == 200, decided.text
    session = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
    assert session.json()["state"] == "denied"
    events = await audit_events(app, "helpdesk:HD-4711")
    [receipt] = [p["data"] for t, p in events if t == "consent.decided"]
    assert receipt["decision"] == "deny"
    assert receipt["capabilities"] == ["control", "view"]  # the request as asked, refused


async def test_omitting_the_list_grants_everything_asked(
    client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk, capabilities=["view", "control"])
    decided = await _decide(client, consent_token(created))
    assert decided.status_code == 200, decided.text
    assert decided.json()["capabilities"] == ["control", "view"]
