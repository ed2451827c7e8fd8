"""Canonical JSON for payloads: RFC 8785 (JCS) for the values we allow.

Allowed: objects with string keys, arrays, strings, booleans, null, and integers within
±(2**53 - 1) (beyond that JCS would print them as doubles and lose digits). Floats are refused:
their text form is where implementations disagree, and evidence must hash the same everywhere.
Keys are sorted by their UTF-16 code units, as JCS requires (this differs from code-point
order only for characters outside the Basic Multilingual Plane).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from json import encoder as _json_encoder
from typing import Any

from audit.errors import CanonicalError

MAX_SAFE_INT = 2**53 - 1
_STDLIB = json.JSONEncoder()  # its ``default`` refuses every foreign type


def _encoder(*, sort_keys: bool) -> Callable[[Any, int], Iterable[str]]:
    """The C encoder, built once (``json.dumps`` builds it on every call), or the pure Python
    one where the C one is missing. Only values that passed ``_plain`` or ``_normalise`` reach
    it, so it never meets a float, a cycle or a foreign type."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        python = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False
        )
        return lambda value, _level: python.iterencode(value)
    chunks: Callable[[Any, int], Iterable[str]] = make(
        None,
        _STDLIB.default,
        _json_encoder.encode_basestring,
        None,
        ":",
        ",",
        sort_keys,
        False,
        False,
    )
    return chunks


_SORTED = _encoder(sort_keys=True)  # plain values: code-point order is JCS order
_AS_IS = _encoder(sort_keys=False)  # normalised values: keys already in UTF-16 order


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _normalise(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise CanonicalError(f"{path}: integer {value} is outside ±(2**53-1)")
        return value
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats are not allowed in audit payloads ({value!r})")
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object keys must be strings, not {key!r}")
        return {
            key: _normalise(value[key], f"{path}.{key}") for key in sorted(value, key=_utf16_key)
        }
    if isinstance(value, (list, tuple)):
        return [_normalise(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise CanonicalError(f"{path}: {type(value).__name__} is not JSON")


def _plain(value: Any) -> bool:
    """True if ``value`` needs no normalising: exact JSON types, in-range integers and ASCII
    keys (for which ``sort_keys``' code-point order is JCS's UTF-16 order). Anything else,
    including what must be refused, takes the checking path of :func:`_normalise`."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            t = type(item)  # scalars inline: most payloads are flat or nearly
            if t is str or t is bool or item is None:
                continue
            if t is int and -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                continue
            if t is int or not _plain(item):  # an int here is out of range
                return False
        return True
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is str or kind is bool or value is None:
        return True
    return kind is int and bool(-MAX_SAFE_INT <= value <= MAX_SAFE_INT)


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value``; raises CanonicalError for what JCS cannot fix."""
    try:
        if _plain(value):  # the common case: no normalised copy, about twice as fast
            return "".join(_SORTED(value, 0)).encode("utf-8")
        return "".join(_AS_IS(_normalise(value, "$"), 0)).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"string is not valid Unicode: {exc.reason}") from exc


def parse(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))
