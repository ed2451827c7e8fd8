"""MeshCentral login cookies: AES-256-GCM, ``base64(iv ‖ tag ‖ ciphertext)`` with ``+/``→``@$``.

Only the authenticated GCM form is minted (the server also accepts an older CBC form).
The key is the first 32 bytes of the server's ``loginCookieEncryptionKey``.
"""

from __future__ import annotations

import base64
import json
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").replace("+", "@").replace("/", "$")


def _decode(cookie: str) -> bytes:
    return base64.b64decode(cookie.replace("@", "+").replace("$", "/"))


def mint_login_cookie(
    key: bytes, username: str, *, domain: str = "", now: float | None = None
) -> str:
    """A login cookie for ``user/<domain>/<username>``; the server accepts it for 60 minutes."""
    if len(key) < 32:
        raise ValueError("the login cookie key must be at least 32 bytes")
    payload = {
        "userid": f"user/{domain}/{username.lower()}",
        "domainid": domain,
        "time": int(now if now is not None else time.time()),
    }
    iv = os.urandom(12)
    sealed = AESGCM(key[:32]).encrypt(iv, json.dumps(payload).encode(), None)
    ciphertext, tag = sealed[:-16], sealed[-16:]  # cryptography appends the tag
    return _encode(iv + tag + ciphertext)


def open_login_cookie(key: bytes, cookie: str) -> dict[str, object]:
    """Decrypt a cookie (tests and diagnostics); raises ``cryptography`` errors when forged."""
    raw = _decode(cookie)
    iv, tag, ciphertext = raw[:12], raw[12:28], raw[28:]
    plain = AESGCM(key[:32]).decrypt(iv, ciphertext + tag, None)
    value: dict[str, object] = json.loads(plain)
    return value
