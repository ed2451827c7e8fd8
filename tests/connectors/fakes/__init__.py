"""Fake ticket systems as ``httpx.MockTransport`` handlers implementing the documented shapes.

Each fake keeps tickets and the notes it received, checks the credentials the way the real
system does (401 otherwise) and refuses request bodies that do not match the documented
shape (400), so a connector that drifts from the API fails its tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class FakeBase:
    notes: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to the next n requests
    down: bool = False  # raise a connection error

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.fail_next > 0:
            self.fail_next -= 1
            return httpx.Response(500, json={"error": "boom"})
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError


def body_of(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content or b"null")
    except ValueError:
        return None
