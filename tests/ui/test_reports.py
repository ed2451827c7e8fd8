"""Supervisor reports: exact numbers over a seeded set of sessions, the date range, the CSV
files, the page's charts and tables, and the statistics' definitions."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from broker.auth.models import User
from broker.errors import ValidationFailed
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from broker.ui.reports_service import DateRange, median, p90
from tests.browser_login import form_login
from tests.factories import make_device, make_group, make_user

DAY = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
RANGE = "since=2026-03-10&until=2026-03-10"


def _at(seconds: float) -> datetime:
    return DAY + timedelta(seconds=seconds)


# (technician, provider, state, unattended, approved after s, active after s, over after s,
#  how it ended, rating); times are relative to the request.
SEED: list[tuple[str, str, str, bool, int | None, int | None, int | None, str | None, int | None]]
SEED = [
    ("alice", "meshcentral", "ended", False, 30, 60, 660, "ended", 5),
    ("alice", "meshcentral", "ended", False, 90, 100, 1300, "ended", 4),
    ("alice", "anydesk", "denied", False, None, None, None, None, None),
    ("bob", "agent", "ended", False, 60, 70, 370, "ended", 2),
    ("bob", "agent", "expired", False, None, None, None, None, None),
    ("bob", "agent", "revoked", False, 120, 130, 1030, "revoked", 4),
    ("alice", "agent", "ended", True, 0, 5, 65, "ended", None),
]


async def _seed(app: Any) -> dict[str, User]:
    alice, _ = await make_user(app, "technician", username="alice")
    bob, _ = await make_user(app, "technician", username="bob")
    group = await make_group(app, [alice, bob])
    device = await make_device(app, group)
    techs = {"alice": alice, "bob": bob}
    async with app.state.sessionmaker() as db:
        ticket = Ticket(system="helpdesk", external_id="HD-1", subject="Printer")
        db.add(ticket)
        await db.flush()
        rows = [*SEED, ("alice", "anydesk", "ended", False, 10, 20, 50, "ended", 1)]
        for i, (tech, provider, state, unattended, ok, active, over, how, rating) in enumerate(
            rows
        ):
            # The last row was requested five days earlier: outside the report's range.
            start = DAY + timedelta(minutes=i) - timedelta(days=5 if i == len(SEED) else 0)
            stamps: dict[str, datetime | None] = {"requested_at": start}
            if ok is not None:
                stamps["approved_at"] = start + timedelta(seconds=ok)
            if active is not None:
                stamps["active_at"] = start + timedelta(seconds=active)
            if over is not None and how is not None:
                stamps[f"{how}_at"] = start + timedelta(seconds=over)
            if state == "denied":
                stamps["denied_at"] = start + timedelta(seconds=45)
            if state == "expired":
                stamps["expired_at"] = start + timedelta(seconds=600)
            db.add(
                RemoteSession(
                    ticket_id=ticket.id,
                    technician_id=techs[tech].id,
                    device_id=device.id,
                    provider=provider,
                    reason="seeded for the report",
                    capabilities=["view"],
                    duration_minutes=30,
                    unattended=unattended,
                    state=state,
                    rating=rating,
                    **stamps,
                )
            )
        await db.commit()
    return techs


@pytest.fixture
async def browser(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An auditor's browser, with the seeded sessions in the database."""
    await _seed(app)
    auditor, password = await make_user(app, "auditor")
    transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as client:
        await form_login(client, auditor.username, password)  # as the auditor does
        yield client


async def _csv(browser: httpx.AsyncClient, name: str, query: str = RANGE) -> list[list[str]]:
    response = await browser.get(f"/ui/reports/{name}.csv?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


async def test_report_numbers_match_the_seeded_sessions(browser: httpx.AsyncClient) -> None:
    assert await _csv(browser, "technicians") == [
        ["technician", "sessions", "ended", "with_expert", "expert_assists"],
        ["Alice", "4", "3", "0", "0"],
        ["Bob", "3", "1", "0", "0"],
    ]
    assert await _csv(browser, "providers") == [
        ["provider", "sessions"],
        ["agent", "4"],
        ["meshcentral", "2"],
        ["anydesk", "1"],
    ]
    # Attended approvals after 30, 90, 60 and 120 s (the unattended one is left out).
    assert await _csv(browser, "consent_time") == [
        ["statistic", "value"],
        ["sessions", "4"],
        ["median_seconds", "75.0"],
        ["p90_seconds", "120.0"],
    ]
    # Active for 600, 1200, 300, 900 (revoked) and 60 s.
    assert await _csv(browser, "durations") == [
        ["statistic", "value"],
        ["sessions", "5"],
        ["median_seconds", "600.0"],
        ["p90_seconds", "1200.0"],
    ]
    outcomes = {row[0]: row[1:] for row in (await _csv(browser, "outcomes"))[1:]}
    assert outcomes["ended"] == ["4", "0.5714"]
    assert outcomes["denied"] == ["1", "0.1429"]
    assert outcomes["expired"] == ["1", "0.1429"]
    assert outcomes["revoked"] == ["1", "0.1429"]
    assert outcomes["active"] == ["0", "0.0"]
    assert set(outcomes) == {
        "requested",
        "awaiting_approval",
        "awaiting_consent",
        "approved",
        "active",
        "ended",
        "denied",
        "expired",
        "revoked",
        "failed",
    }
    assert await _csv(browser, "satisfaction") == [
        ["score", "sessions"],
        ["1", "0"],
        ["2", "1"],
        ["3", "0"],
        ["4", "2"],
        ["5", "1"],
    ]


async def test_the_range_decides_which_sessions_count(browser: httpx.AsyncClient) -> None:
    # The session five days earlier (anydesk, rated 1) counts once the range includes it.
    wide = "since=2026-03-05&until=2026-03-10"
    assert await _csv(browser, "providers", wide) == [
        ["provider", "sessions"],
        ["agent", "4"],
        ["anydesk", "2"],
        ["meshcentral", "2"],
    ]
    assert (await _csv(browser, "satisfaction", wide))[1] == ["1", "1"]
    empty = "since=2026-03-11&until=2026-03-12"
    assert await _csv(browser, "technicians", empty) == [
        ["technician", "sessions", "ended", "with_expert", "expert_assists"]
    ]
    assert await _csv(browser, "consent_time", empty) == [
        ["statistic", "value"],
        ["sessions", "0"],
        ["median_seconds", ""],
        ["p90_seconds", ""],
    ]


async def test_page_draws_every_report_with_chartjs(browser: httpx.AsyncClient) -> None:
    page = await browser.get(f"/ui/reports?{RANGE}")
    assert page.status_code == 200, page.text
    assert '<script src="/vendor/chart.js/chart.umd.min.js"></script>' in page.text
    assert '<script src="/static/reports.js"></script>' in page.text
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page.text)
    assert found is not None
    charts = {c["name"]: c for c in json.loads(found.group(1))}
    assert set(charts) == {
        "technicians",
        "providers",
        "consent_time",
        "durations",
        "outcomes",
        "satisfaction",
    }
    assert charts["technicians"]["labels"] == ["Alice", "Bob"]
    assert charts["technicians"]["values"] == [4, 3]
    assert charts["consent_time"]["labels"] == ["Median", "90th percentile"]
    assert charts["consent_time"]["values"] == [75.0, 120]
    # Shares are drawn and shown as percentages, durations with their unit (4 of 7 ended).
    assert charts["outcomes"]["unit"] == "% of sessions"
    assert (
        dict(zip(charts["outcomes"]["labels"], charts["outcomes"]["values"], strict=True))["ended"]
        == 57.1
    )
    assert "<td>57.1 %</td>" in page.text
    assert "<td>1 min 15 s</td>" in page.text
    assert "<td>2 min 0 s</td>" in page.text
    assert "median_seconds" not in page.text
    assert "0.5714" not in page.text
    assert '<strong id="average-rating">3.75</strong>' in page.text
    for name in charts:
        assert f'href="/ui/reports/{name}.csv?{RANGE.replace("&", "&amp;")}"' in page.text
    script = await browser.get("/static/reports.js")
    assert script.status_code == 200
    assert "new window.Chart(" in script.text


async def test_bad_range_and_unknown_report(browser: httpx.AsyncClient) -> None:
    backwards = await browser.get("/ui/reports?since=2026-03-10&until=2026-03-01")
    assert backwards.status_code == 422
    assert "before its start" in backwards.text
    garbled = await browser.get("/ui/reports?since=yesterday")
    assert garbled.status_code == 422
    unknown = await browser.get(f"/ui/reports/salaries.csv?{RANGE}")
    assert unknown.status_code == 404
    assert "no report &#39;salaries&#39;" in unknown.text


def test_statistics_definitions() -> None:
    assert median([]) is None
    assert p90([]) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert p90([float(v) for v in range(1, 11)]) == 9.0  # ceil(9.0) = 9th of 10
    assert p90([float(v) for v in range(1, 12)]) == 10.0  # ceil(9.9) = 10th of 11
    assert p90([7.0]) == 7.0


def test_default_range_is_the_last_thirty_days() -> None:
    rng = DateRange.parse("", "", today=date(2026, 3, 31))
    assert (rng.first, rng.last) == (date(2026, 3, 2), date(2026, 3, 31))
    assert rng.until == datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(ValidationFailed):
        DateRange.parse("2000-01-01", "2030-01-01")
