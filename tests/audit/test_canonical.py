"""Canonical JSON agrees byte for byte with the ``rfc8785`` reference package (RFC 8785 JCS)."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from audit.canonical import MAX_SAFE_INT, canonical_json, parse
from audit.errors import CanonicalError

# Text including non-BMP characters (their UTF-16 order differs from code-point order).
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x10FFFF), max_size=12
)
keys = st.one_of(text, st.sampled_from(["\U0001f600", "\uffff", "\ue000", "a", "A", "é"]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


@given(json_values)
def test_matches_rfc8785(value: Any) -> None:
    ours = canonical_json(value)
    assert ours == rfc8785.dumps(value)
    assert parse(ours) == value


def test_utf16_key_order() -> None:
    value = {"\U0001f600": 1, "\uffff": 2, "a": 3}
    # U+1F600 is D83D DE00 in UTF-16, before U+FFFF; code-point order says the opposite.
    assert canonical_json(value) == '{"a":3,"\U0001f600":1,"\uffff":2}'.encode()
    assert canonical_json(value) == rfc8785.dumps(value)


def test_tuples_are_arrays() -> None:
    assert canonical_json({"t": (1, "x")}) == b'{"t":[1,"x"]}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"f": 1.5}, "floats"),
        ({"n": 2**53}, "outside"),
        ([-(2**53)], "outside"),
        ({1: "x"}, "keys must be strings"),
        ({"s": {1, 2}}, "is not JSON"),
        ({"s": b"bytes"}, "is not JSON"),
        ({"s": "\ud800"}, "not valid Unicode"),
        ({"\udc00": 1}, "not valid Unicode"),
    ],
)
def test_refusals(value: Any, message: str) -> None:
    with pytest.raises(CanonicalError, match=message):
        canonical_json(value)
