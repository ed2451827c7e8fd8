"""The server-rendered consent pages: enter a code, read the request, decide, end it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import Desk, consent_token, make_desk, open_session


async def test_code_form_redirects_to_request(
    pages: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    form = await client.get("/consent")
    assert form.status_code == 200
    assert 'name="code"' in form.text
    assert '<label for="code">' in form.text
    created = await open_session(client, desk)
    response = await client.post("/consent", data={"code": created["consent"]["code"]})
    assert response.status_code == 303
    assert response.headers["location"] == f"/consent/{consent_token(created)}"


async def test_wrong_code_shows_error(pages: Any, client: httpx.AsyncClient) -> None:
    response = await client.post("/consent", data={"code": "0000-000000"})
    assert response.status_code == 404
    assert 'role="alert"' in response.text
    assert "not valid" in response.text


async def test_a_waiting_code_form_says_when_to_come_back(
    pages: Any, client: httpx.AsyncClient, settings: Any
) -> None:
    for _ in range(settings.consent_max_attempts):
        assert (await client.post("/consent", data={"code": "0000-000000"})).status_code == 404
    waiting = await client.post("/consent", data={"code": "0000-000000"})
    assert waiting.status_code == 429
    assert int(waiting.headers["retry-after"]) >= 1
    assert 'role="alert"' in waiting.text
    assert "try again in" in waiting.text


async def test_request_page_decide_and_end(pages: Any, app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app, questions=[{"id": "saved", "label": "Is your work saved?"}])
    created = await open_session(client, desk, capabilities=["view", "files"])
    token = consent_token(created)
    page = await client.get(f"/consent/{token}")
    assert page.status_code == 200
    for text in (
        desk.tech.display_name,
        "helpdesk HD-4711",
        "Printer offline",
        "Printer driver keeps crashing",
        "see your screen",
        "copy files",
        "30 minutes",
        "recorded",
        "Is your work saved?",
        'value="approve"',
        'value="deny"',
    ):
        assert text in page.text, text
    assert "End this session now" not in page.text

    decided = await client.post(
        f"/consent/{token}/decide",
        data={"decision": "approve", "name": "Erika", "answer_saved": "yes"},
    )
    assert decided.status_code == 303
    page = await client.get(f"/consent/{token}")
    assert "End this session now" in page.text
    assert 'value="approve"' not in page.text

    again = await client.post(f"/consent/{token}/decide", data={"decision": "deny", "name": "X"})
    assert again.status_code == 409
    assert "already decided" in again.text

    ended = await client.post(f"/consent/{token}/revoke")
    assert ended.status_code == 303
    page = await client.get(f"/consent/{token}")
    assert "Ended by revocation" in page.text
    assert "End this session now" not in page.text


async def test_bad_link_page(pages: Any, client: httpx.AsyncClient) -> None:
    response = await client.get("/consent/nonsense")
    assert response.status_code == 404
    assert "does not work" in response.text


async def test_form_validation_is_shown(pages: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    response = await client.post(f"/consent/{token}/decide", data={"decision": "approve"})
    assert response.status_code == 422
    assert 'role="alert"' in response.text
    view = (await client.get(f"/api/v1/consent/{token}")).json()
    assert view["decision"] is None


async def test_rating_form(pages: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    await client.post(f"/consent/{token}/decide", data={"decision": "approve", "name": "E"})
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    await client.post(f"/api/v1/sessions/{created['id']}/end", headers=desk.headers)
    page = await client.get(f"/consent/{token}")
    assert "How was the support" in page.text
    rated = await client.post(f"/consent/{token}/rate", data={"score": "5", "comment": "great"})
    assert rated.status_code == 303
    assert "you rated this session 5 of 5" in (await client.get(f"/consent/{token}")).text
