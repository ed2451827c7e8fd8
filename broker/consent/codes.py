"""Consent codes and link tokens: generation, normalisation, and the hashes we store.

A code is ``LLLL-SSSSSS``: a 4-digit lookup that finds the request and a 6-digit secret
stored only as an HMAC under the server key. The link token is 32 bytes derived from the
request id with the same key, so a code lookup can hand the link back without the token
ever being stored; the database keeps only its SHA-256 for lookups. The history link's
token (:func:`history_token`) is the request id with an HMAC, stored nowhere.
"""

from __future__ import annotations

import base64
import re
import secrets

from broker.auth.secrets import keyed_hash, token_hash

_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_CODE = re.compile(r"^[0-9]{10}$")
_REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_lookup() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def new_secret() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def format_code(lookup: str, secret: str) -> str:
    return f"{lookup}-{secret}"


def split_code(code: str) -> tuple[str, str] | None:
    """``"4821 093375"``, ``"4821-093375"``, ``"4821093375"`` → ``("4821", "093375")``."""
    compact = _SEPARATORS.sub("", code)
    if not _CODE.match(compact):
        return None
    return compact[:4], compact[4:]


def secret_digest(key: str, request_id: str, secret: str) -> str:
    # Bound to the request id: the same secret on another request hashes differently.
    return keyed_hash(key, f"consent-code:{request_id}:{secret}")


def link_token(key: str, request_id: str) -> str:
    raw = bytes.fromhex(keyed_hash(key, f"consent-link:{request_id}"))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def link_digest(token: str) -> str:
    return token_hash(token)


def history_token(key: str, request_id: str) -> str:
    """The history link's token: the request id and a 256-bit HMAC of it under the server
    key. Nothing is stored: the HMAC is recomputed and compared in constant time, so the
    link cannot be guessed and a new secret key ends every history link at once."""
    raw = bytes.fromhex(keyed_hash(key, f"history-link:{request_id}"))
    return f"{request_id}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


def split_history_token(token: str) -> tuple[str, str] | None:
    """``"<request id>.<mac>"`` → its two parts (None for anything else)."""
    request_id, dot, mac = token.partition(".")
    if not dot or not _REQUEST_ID.match(request_id) or len(mac) != 43:
        return None
    return request_id, mac
