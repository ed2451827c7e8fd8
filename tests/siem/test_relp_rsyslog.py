"""SIEM export over RELP to a real rsyslog (``imrelp``), SQLite and PostgreSQL: a receiver
stopped while 10,000 events are written receives every one of them, in log order, once it
is back; the cursor moves only past what rsyslog acknowledged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from broker.siem.service import TargetStatus, status
from tests.siem.helpers import Rsyslog, free_port, until, write_events

WHILE_DOWN = 10_000
POSITION = re.compile(r'^\[sbAudit@32473 log="[^"]*" pos="(\d+)"')


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    workdir = tmp_path / "rsyslog"
    workdir.mkdir()
    receiver = Rsyslog(workdir, free_port())
    yield receiver
    receiver.stop()


@pytest.fixture
def settings_overrides(rsyslog: Rsyslog) -> dict[str, Any]:
    return {
        "siem_targets": [{"name": "soc", "kind": "relp", "port": rsyslog.port}],
        "siem_poll_seconds": 0.05,
        "siem_retry_seconds": 0.05,
        "siem_retry_max_seconds": 0.5,
    }


async def _status(app: FastAPI) -> TargetStatus:
    async with app.state.sessionmaker() as db:
        (found,) = await status(db, app.state.settings)
        return found


def received_positions(rsyslog: Rsyslog) -> list[int]:
    out = []
    for line in rsyslog.out.read_text().splitlines():
        match = POSITION.match(line)
        assert match, line
        out.append(int(match.group(1)))
    return out


def first_occurrences(positions: list[int]) -> list[int]:
    seen: set[int] = set()
    return [p for p in positions if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


@pytest.mark.slow  # a real rsyslogd stopped and started: `make test` runs it
async def test_a_stopped_receiver_gets_every_event_in_order_once_back(
    rsyslog: Rsyslog, app: FastAPI
) -> None:
    maker = app.state.sessionmaker
    rsyslog.start()
    await write_events(maker, 10)

    async def caught_up() -> bool:
        found = await _status(app)
        return found.log_size > 0 and found.lag == 0

    await until(caught_up, "the first events to be acknowledged")
    before = (await _status(app)).next_position

    rsyslog.stop()
    await write_events(maker, WHILE_DOWN)

    async def failing() -> bool:
        return (await _status(app)).failures > 0

    await until(failing, "a failed delivery to the stopped receiver")
    down = await _status(app)
    assert down.next_position == before  # nothing acknowledged, nothing passed
    assert down.lag == WHILE_DOWN
    assert "unreachable" in (down.last_error or "")

    rsyslog.start()
    await until(caught_up, "the backlog to be acknowledged", timeout=80)
    rsyslog.stop()  # flushes rsyslog's queue to the file

    done = await _status(app)
    assert done.failures == 0
    assert done.delivered == done.log_size == before + WHILE_DOWN
    got = received_positions(rsyslog)
    # Repeats are allowed (at least once); after dropping them by position, every record
    # arrived exactly in log order.
    assert first_occurrences(got) == list(range(done.log_size))


async def test_each_message_is_rfc5424_with_the_record_coordinates(
    rsyslog: Rsyslog, app: FastAPI
) -> None:
    import json

    rsyslog.start()
    await write_events(app.state.sessionmaker, 3)

    async def caught_up() -> bool:
        found = await _status(app)
        return found.log_size == 3 and found.lag == 0

    await until(caught_up, "three events")
    rsyslog.stop()
    lines = rsyslog.out.read_text().splitlines()
    assert len(lines) == 3
    sd, _, body = lines[0].partition("] ")
    event = json.loads(body)
    assert f'pos="{event["position"]}"' in sd
    assert f'id="{event["record_id"]}"' in sd
    assert event["event_type"] == "ticket.updated"
    assert event["ocsf_class_uid"] == 6005
    assert "payload" not in event  # metadata only unless the target allows payloads
