"""SIEM export as JSON lines over HTTPS to a local receiver with a certificate from a CA made
here (SQLite and PostgreSQL): the configured CA is what is trusted; refused batches are sent
again and the cursor moves only on a 2xx; payloads go out only to a target allowed them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from broker.siem.service import TargetStatus, status
from tests.siem.helpers import TlsServer, make_certificates, until, write_events


class Receiver:
    """A small HTTPS server keeping each POSTed body per path; answers 503 to the first
    ``refuse`` requests."""

    def __init__(self, tmp: Path, refuse: int) -> None:
        pem = make_certificates(tmp)
        self.ca = pem["ca"]
        self.bodies: dict[str, list[bytes]] = {}
        self.refuse = refuse
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.refused < outer.refuse:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.bodies.setdefault(self.path, []).append(body)
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = TlsServer(Handler, pem)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, path: str) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for body in self.bodies.get(path, [])
            for line in body.decode().splitlines()
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    found = Receiver(tmp_path, refuse=2)
    yield found
    found.close()


@pytest.fixture
def settings_overrides(receiver: Receiver) -> dict[str, Any]:
    ca = str(receiver.ca)
    return {
        "siem_targets": [
            {"name": "meta", "kind": "https", "url": f"{receiver.url}/meta", "ca_file": ca},
            {
                "name": "full",
                "kind": "https",
                "url": f"{receiver.url}/full",
                "ca_file": ca,
                "payloads": True,
            },
            # No CA configured: the system's CAs do not know the receiver's.
            {"name": "untrusting", "kind": "https", "url": f"{receiver.url}/x"},
        ],
        "siem_batch_size": 40,
        "siem_poll_seconds": 0.05,
        "siem_retry_seconds": 0.05,
        "siem_retry_max_seconds": 0.2,
    }


async def _statuses(app: FastAPI) -> dict[str, TargetStatus]:
    async with app.state.sessionmaker() as db:
        return {t.name: t for t in await status(db, app.state.settings)}


async def test_json_lines_reach_the_receiver_in_order(receiver: Receiver, app: FastAPI) -> None:
    await write_events(app.state.sessionmaker, 100, per_transaction=30)

    async def delivered() -> bool:
        found = await _statuses(app)
        return found["meta"].lag == 0 and found["full"].lag == 0 and found["meta"].log_size > 0

    await until(delivered, "both trusting targets to catch up")
    found = await _statuses(app)
    assert receiver.refused == 2  # two batches were refused and sent again
    meta, full = receiver.events("/meta"), receiver.events("/full")
    assert [e["position"] for e in meta] == list(range(100))
    assert [e["position"] for e in full] == list(range(100))
    assert all("payload" not in e for e in meta)
    assert [e["payload"]["data"]["i"] for e in full] == list(range(100))
    assert meta[0]["event_type"] == "ticket.updated"
    assert meta[0]["log_id"] == app.state.settings.audit_log_id
    assert meta[0]["ocsf_class_name"] == "Datastore Activity"

    untrusting = found["untrusting"]
    assert untrusting.next_position == 0
    assert untrusting.lag == 100
    assert untrusting.failures > 0
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusting.last_error or "")
    assert "/x" not in receiver.bodies
