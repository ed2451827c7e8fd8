"""The client→server filter on arbitrary byte streams (Hypothesis) and on real messages.

What must hold for any input, cut anywhere: the filter either passes a sequence of whole,
valid messages or raises RfbViolation; it never passes input for a view-only viewer, never
an encoding outside the allowlist, and the result does not depend on how the stream was cut.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.gateway.rfb import (
    ALLOWED_ENCODINGS,
    ClientFilter,
    RfbViolation,
    accept_viewer,
    read_server_init,
)

PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
NOVNC_ENCODINGS = [
    7, -260, 21, 50, 16, 5, 2, 6, 1, 0,  # real encodings
    -26, -254, -223, -224, -239, -258, -261, -307, -308, -309, -312, -313, -316,
    0x574D5664, struct.unpack(">i", struct.pack(">I", 0xC0A1E5CE))[0],
]  # fmt: skip


def parse(stream: bytes) -> list[tuple[int, bytes]]:
    """An independent reading of a filtered stream: it must be whole messages only."""
    out, pos = [], 0
    while pos < len(stream):
        kind = stream[pos]
        if kind == 0:
            size = 20
        elif kind == 2:
            size = 4 + 4 * struct.unpack_from(">H", stream, pos + 2)[0]
        elif kind == 3:
            size = 10
        elif kind == 4:
            size = 8
        elif kind == 5:
            size = 6
        elif kind == 6:
            size = 8 + struct.unpack_from(">I", stream, pos + 4)[0]
        else:
            raise AssertionError(f"the filter passed type {kind}")
        assert pos + size <= len(stream), "the filter passed a cut message"
        out.append((kind, stream[pos : pos + size]))
        pos += size
    return out


def run(chunks: list[bytes], *, may_input: bool) -> tuple[bytes, str | None]:
    """Feed ``chunks``; (what passed, the violation if one ended the stream)."""
    flt, passed = ClientFilter(may_input=may_input), b""
    for chunk in chunks:
        passed += flt.feed(chunk)
        if flt.violation is not None:
            with pytest.raises(RfbViolation):  # and nothing after it, ever
                flt.feed(b"\x03" + b"\0" * 9)
            return passed, flt.violation
    return passed, None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def check_output(passed: bytes, *, may_input: bool) -> None:
    for kind, message in parse(passed):
        if not may_input:
            assert kind not in (4, 5, 6), "input passed for a view-only viewer"
        if kind == 2:
            (count,) = struct.unpack_from(">H", message, 2)
            assert set(struct.unpack_from(f">{count}i", message, 4)) <= ALLOWED_ENCODINGS


# --- arbitrary bytes ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8), st.booleans())
def test_any_bytes_pass_only_whole_valid_messages(
    data: bytes, points: list[int], may_input: bool
) -> None:
    passed, _ = run(cut(data, points), may_input=may_input)
    check_output(passed, may_input=may_input)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_how_the_stream_is_cut_does_not_matter(
    data: bytes, points: list[int], may_input: bool
) -> None:
    assert run(cut(data, points), may_input=may_input) == run([data], may_input=may_input)


# --- streams of real messages -------------------------------------------------------------

coords = st.integers(0, 0xFFFF)
message = st.one_of(
    st.just(b"\x00\x00\x00\x00" + PIXEL_FORMAT),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=30).map(
        lambda e: struct.pack(f">BxH{len(e)}i", 2, len(e), *e)
    ),
    st.tuples(st.booleans(), coords, coords, coords, coords).map(
        lambda t: struct.pack(">BBHHHH", 3, int(t[0]), *t[1:])
    ),
    st.tuples(st.booleans(), st.integers(0, 2**32 - 1)).map(
        lambda t: struct.pack(">BBxxI", 4, int(t[0]), t[1])
    ),
    st.tuples(st.integers(0, 255), coords, coords).map(lambda t: struct.pack(">BBHH", 5, *t)),
    st.binary(max_size=200).map(lambda b: struct.pack(">BxxxI", 6, len(b)) + b),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(message, max_size=20), st.lists(st.integers(0, 5000), max_size=10))
def test_valid_messages_pass_whole_and_in_order(messages: list[bytes], points: list[int]) -> None:
    stream = b"".join(messages)
    for may_input in (True, False):
        passed, violation = run(cut(stream, points), may_input=may_input)
        assert violation is None
        got = parse(passed)
        want = [m for m in messages if may_input or m[0] not in (4, 5, 6)]
        assert [k for k, _ in got] == [m[0] for m in want]
        for (kind, out), original in zip(got, want, strict=True):
            if kind != 2:
                assert out == original  # only SetEncodings is rewritten
        check_output(passed, may_input=may_input)


# --- the rules, one by one ----------------------------------------------------------------


def test_novnc_encodings_lose_every_extension() -> None:
    flt = ClientFilter(may_input=True)
    msg = struct.pack(f">BxH{len(NOVNC_ENCODINGS)}i", 2, len(NOVNC_ENCODINGS), *NOVNC_ENCODINGS)
    (_kind, out), = parse(flt.feed(msg))  # fmt: skip
    kept = set(struct.unpack_from(f">{(len(out) - 4) // 4}i", out, 4))
    for extension in (-258, -308, -309, -312, -313, -316):  # all enable client messages
        assert extension not in kept
    assert {7, 0, -223, -239} <= kept  # Tight, Raw, DesktopSize, Cursor stay
    assert flt.stats.removed_encodings == 7


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x07" + b"\0" * 20, "unknown client message type 7"),  # x11vnc's file transfer
        (b"\xfa\x00\x01\x02", "unknown client message type 250"),  # xvp: reboot, shutdown
        (b"\xff\x00" + b"\0" * 10, "unknown client message type 255"),  # QEMU
        (b"\xfc" + b"\0" * 10, "unknown client message type 252"),
        (struct.pack(">BxxxI", 6, 0x80000010) + b"x" * 16, "ClientCutText of"),
        (struct.pack(">BxH", 2, 5000), "SetEncodings with 5000"),
        (b"\x00\x00\x00\x00" + bytes([7, 24]) + b"\0" * 14, "SetPixelFormat with 7 bits"),
    ],
)
def test_what_it_cannot_pass_ends_the_stream(data: bytes, why: str) -> None:
    passed, violation = run([data], may_input=True)
    assert passed == b""
    assert violation is not None
    assert why in violation


def test_input_after_a_violation_is_never_passed() -> None:
    good = struct.pack(">BBHH", 5, 0, 10, 10)
    passed, violation = run([good + b"\x09" + good], may_input=True)
    assert passed == good
    assert violation == "unknown client message type 9"


async def test_the_viewer_handshake_offers_none_and_forwards_server_init() -> None:
    server_init = struct.pack(">HH", 800, 600) + PIXEL_FORMAT + struct.pack(">I", 3) + b"box"
    incoming = bytearray(b"RFB 003.008\n\x01\x00")
    sent: list[bytes] = []

    async def read(size: int) -> bytes:
        out = bytes(incoming[:size])
        del incoming[:size]
        return out

    async def send(data: bytes) -> None:
        sent.append(data)

    await accept_viewer(read, send, server_init)
    assert sent == [b"RFB 003.008\n", b"\x01\x01", b"\0\0\0\0", server_init]
    incoming[:] = server_init
    assert await read_server_init(read) == server_init

    incoming[:] = b"RFB 003.003\n"
    with pytest.raises(RfbViolation, match=r"3\.7 or 3\.8"):
        await accept_viewer(read, send, server_init)
