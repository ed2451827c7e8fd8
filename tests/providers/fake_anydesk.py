"""A fake AnyDesk REST API (ASGI) with the documented shapes that CHECKS request signatures.

Independent of the client's signing code: it recomputes the HMAC-SHA1 itself. Its answers are
built from the shapes in tests/providers/fixtures/anydesk (each citing AnyDesk's REST API page
and the official Python module): ``/sessions`` and ``/clients`` lists, ``/sysinfo``;
:meth:`FakeAnyDesk.from_fixtures` serves the published examples as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.connectors.fixtures import load
from tests.providers import FIXTURES


@dataclass
class FakeAnyDesk:
    license_id: str = "123456789"
    password: str = "fake-api-password-0123"
    clients: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    rejected: int = 0
    down: bool = False

    @classmethod
    def from_fixtures(cls) -> FakeAnyDesk:
        """The fake holding the sessions and clients of the published examples."""
        fake = cls()
        fake.clients = list(load("anydesk", "clients.http", FIXTURES).body["list"])
        for item in load("anydesk", "sessions.http", FIXTURES).body["list"]:
            fake.sessions[str(item["sid"])] = dict(item)
        return fake

    def _verify(self, request: Request, body: bytes) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("AD "):
            return False
        try:
            license_id, ts, token = header[3:].split(":", 2)
        except ValueError:
            return False
        resource = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        body_hash = base64.b64encode(hashlib.sha1(body).digest()).decode()
        message = f"{request.method}\n{resource}\n{ts}\n{body_hash}".encode()
        expected = base64.b64encode(
            hmac.new(self.password.encode(), message, hashlib.sha1).digest()
        ).decode()
        fresh = abs(time.time() - int(ts)) < 300
        return license_id == self.license_id and fresh and hmac.compare_digest(token, expected)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if self.down:
            return Response(status_code=503)
        if not self._verify(request, body):
            self.rejected += 1
            return JSONResponse({"code": "unauthorized"}, status_code=401)
        path, method = request.url.path, request.method
        self.calls.append((method, path))
        query = {k: v[0] for k, v in parse_qs(request.url.query).items()}
        if path == "/auth":
            return JSONResponse(
                {
                    "result": "success",
                    "license-id": self.license_id,
                    "license-name": "Helpdesk Test",
                }
            )
        if path == "/clients":
            return JSONResponse(self._page(self.clients, query))
        if path == "/sysinfo":
            return JSONResponse(load("anydesk", "sysinfo.http", FIXTURES).body)
        if path == "/sessions":
            found = [
                s
                for s in self.sessions.values()
                if (not query.get("cid") or str(s["to"]["cid"]) == query["cid"])
                and int(query.get("from", 0)) <= s["start-time"] < int(query.get("to", 2**40))
            ]
            found.sort(key=lambda s: s["start-time"])
            return JSONResponse(self._page(found, query))
        parts = path.strip("/").split("/")
        if parts[0] == "sessions" and len(parts) >= 2 and parts[1] in self.sessions:
            item = self.sessions[parts[1]]
            if method == "PATCH" and len(parts) == 2:
                item["comment"] = json.loads(body)["comment"]
                return JSONResponse({})
            if method == "POST" and parts[2:] == ["action"]:
                if json.loads(body) != {"action": "close"}:
                    return JSONResponse({"error": "bad action"}, status_code=400)
                item["active"] = False
                item["end-time"] = int(time.time())
                return JSONResponse({})
            return JSONResponse(item)
        return JSONResponse({"error": "not found"}, status_code=404)

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 1000))
        selected = items[offset : offset + limit]
        return {"count": len(items), "selected": len(selected), "list": selected}

    def add_session(
        self,
        sid: str,
        cid: str,
        start: int,
        *,
        active: bool,
        duration: int = 0,
        src: str = "987654321",
        alias: str = "tech@ad",
    ) -> None:
        template = load("anydesk", "sessions.http", FIXTURES).body["list"][0]
        self.sessions[sid] = {
            **template,
            "sid": sid,
            "from": {"cid": src, "alias": alias},
            "to": {"cid": cid, "alias": f"pc-{cid}"},
            "active": active,
            "start-time": start,
            "end-time": None if active else start + duration,
            "duration": duration,
            "comment": None,
        }

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PATCH"])]
        )
