"""AnyDesk REST request signing.

``Authorization: AD <licenseId>:<ts>:<token>`` with token =
``base64(HMAC-SHA1(apiPassword, "METHOD\\nRESOURCE\\nTS\\n" + base64(SHA1(body))))`` where
RESOURCE is the path plus query string exactly as sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Generator

import httpx


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha1(body).digest()).decode("ascii")  # noqa: S324 - AnyDesk's scheme


def token(password: str, method: str, resource: str, timestamp: int, body: bytes) -> str:
    message = f"{method.upper()}\n{resource}\n{timestamp}\n{content_hash(body)}"
    digest = hmac.new(password.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization(
    license_id: str, password: str, method: str, resource: str, *, timestamp: int, body: bytes
) -> str:
    return f"AD {license_id}:{timestamp}:{token(password, method, resource, timestamp, body)}"


class AnyDeskAuth(httpx.Auth):
    """Signs each request over exactly the path, query and body httpx sends."""

    requires_request_body = True

    def __init__(self, license_id: str, password: str) -> None:
        self._license_id = license_id
        self._password = password

    def __repr__(self) -> str:  # keep the password out of reprs and tracebacks
        return f"AnyDeskAuth(license_id={self._license_id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        resource = request.url.raw_path.decode("ascii")
        request.headers["Authorization"] = authorization(
            self._license_id,
            self._password,
            request.method,
            resource,
            timestamp=int(time.time()),
            body=request.content,
        )
        yield request
