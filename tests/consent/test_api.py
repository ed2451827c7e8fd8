"""What the end user is shown, and what the decision records."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.consent.models import ConsentRequest
from tests.factories import Desk, audit_events, consent_token, make_desk, open_session


async def test_view_shows_everything_needed(app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app, questions=[{"id": "backup", "label": "Did you save your work?"}])
    created = await open_session(client, desk, capabilities=["view", "shell"])
    view = await client.get(f"/api/v1/consent/{consent_token(created)}")
    assert view.status_code == 200, view.text
    v = view.json()
    assert v["technician"] == {"name": desk.tech.display_name, "role": "technician"}
    assert v["ticket"] == {
        "system": "helpdesk",
        "external_id": "HD-4711",
        "subject": "Printer offline",
    }
    assert v["reason"] == "Printer driver keeps crashing after the update"
    assert v["capabilities"] == ["shell", "view"]
    assert v["duration_minutes"] == 30
    assert v["recorded"] is False  # the null provider records nothing itself
    assert v["unattended"] is False
    assert v["state"] == "awaiting_consent"
    assert v["can_decide"] is True
    assert v["questions"] == [{"id": "backup", "label": "Did you save your work?"}]
    assert v["expires_at"] == created["consent"]["expires_at"]


async def test_decision_records_who_where_and_answers(app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app, questions=[{"id": "backup", "label": "Saved?"}])
    created = await open_session(client, desk)
    token = consent_token(created)
    unknown = await client.post(
        f"/api/v1/consent/{token}/decision",
        json={"decision": "approve", "name": "Erika", "answers": {"other": "x"}},
    )
    assert unknown.status_code == 422
    response = await client.post(
        f"/api/v1/consent/{token}/decision",
        json={"decision": "approve", "name": "Erika M.", "answers": {"backup": "ja"}},
        headers={"user-agent": "TestBrowser/1.0"},
    )
    assert response.status_code == 200, response.text
    async with app.state.sessionmaker() as db:
        request = await db.scalar(select(ConsentRequest))
    assert request is not None
    assert request.decision == "approve"
    assert request.decided_by == "Erika M."
    assert request.decided_from == "198.51.100.10"
    assert request.user_agent == "TestBrowser/1.0"
    assert request.decided_at is not None
    receipt = next(
        p for t, p in await audit_events(app, "helpdesk:HD-4711") if t == "consent.decided"
    )
    assert receipt["actor"]["kind"] == "end_user"
    assert receipt["data"]["user_agent"] == "TestBrowser/1.0"
    assert receipt["data"]["technician"]["name"] == desk.tech.display_name


async def test_unknown_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/consent/not-a-token")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    post = await client.post(
        "/api/v1/consent/not-a-token/decision", json={"decision": "approve", "name": "x"}
    )
    assert post.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "maybe", "name": "Erika"},
        {"decision": "approve"},
        {"decision": "approve", "name": ""},
        {"decision": "approve", "name": "Eri\x1bka"},
        {"decision": "approve", "name": "Erika", "answers": {"q": 5}},
        {"decision": "approve", "name": "Erika", "admin": True},
    ],
)
async def test_decision_bad_input_changes_nothing(
    client: httpx.AsyncClient, desk: Desk, body: dict[str, Any]
) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    response = await client.post(f"/api/v1/consent/{token}/decision", json=body)
    assert response.status_code == 422, response.text
    view = (await client.get(f"/api/v1/consent/{token}")).json()
    assert view["state"] == "awaiting_consent"
    assert view["decision"] is None


async def test_end_user_cannot_revoke_before_approving(
    client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    response = await client.post(f"/api/v1/consent/{consent_token(created)}/revoke")
    assert response.status_code == 409
    assert "deny it instead" in response.json()["detail"]
