"""RFB (RFC 6143) as the broker speaks it: the browser's handshake, and the filter that every
byte the browser sends to the device passes through.

The broker, not the viewer, enforces the rights. :class:`ClientFilter` cuts the
client→server stream into messages (§7.5) and passes only messages it can delimit:
SetPixelFormat (0), SetEncodings (2), FramebufferUpdateRequest (3) always; KeyEvent (4),
PointerEvent (5) and ClientCutText (6) only when input is allowed (``control`` granted and
the viewer is the technician or an invited expert). SetEncodings is rewritten to the
encodings in :data:`ALLOWED_ENCODINGS`: every pseudo-encoding that would switch on an
extension message (QEMU key events, fences, continuous updates, xvp, extended desktop size,
extended clipboard and mouse buttons, ...) is removed before the server sees it, so the
server never enables a message this parser cannot cut. Anything else (an unknown type, a
malformed or oversized message) raises :class:`RfbViolation` and the connection is closed.

The browser authenticated to the broker already (a one-time ticket over the login cookie),
so its RFB security type is None; the agent authenticates to the device's server itself.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
INPUT_TYPES = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT})
FIXED_LENGTH = {
    SET_PIXEL_FORMAT: 20,
    FRAMEBUFFER_UPDATE_REQUEST: 10,
    KEY_EVENT: 8,
    POINTER_EVENT: 6,
}
MAX_CUT_TEXT = 1 << 20
MAX_ENCODINGS = 1024
MAX_NAME = 1 << 16
SERVER_VERSION = b"RFB 003.008\n"
CLIENT_VERSIONS = {b"RFB 003.007\n": 7, b"RFB 003.008\n": 8}
SECURITY_NONE = 1

# Encodings that change only how the server encodes what it sends: rectangles, their
# compression and quality, and pseudo-rectangles the server sends inside a framebuffer
# update (cursor, desktop size and name, LED state, last rectangle). None of them lets the
# client send a new message type, so the parser above stays complete.
ALLOWED_ENCODINGS = frozenset(
    {
        0,  # Raw
        1,  # CopyRect
        2,  # RRE
        5,  # Hextile
        6,  # zlib
        7,  # Tight
        16,  # ZRLE
        21,  # JPEG
        50,  # H.264
        -260,  # TightPNG
        -223,  # DesktopSize
        -224,  # LastRect
        -239,  # Cursor
        -240,  # XCursor
        -261,  # QEMU LED state
        -307,  # DesktopName
        0x574D5664,  # VMware cursor
        *range(-32, -22),  # JPEG quality levels 0-9
        *range(-256, -246),  # compression levels 0-9
    }
)


class RfbViolation(ValueError):
    """The client sent something the broker will not pass: the connection ends."""


@dataclass
class FilterStats:
    forwarded: int = 0  # messages passed to the device
    dropped_input: int = 0  # input messages dropped for a view-only viewer
    removed_encodings: int = 0  # encodings taken out of SetEncodings


class ClientFilter:
    """Incremental: :meth:`feed` takes any slice of the stream and returns the bytes to pass
    (whole messages only; an incomplete tail waits for the next slice). The messages before
    a violation still pass; the violation is then kept in :attr:`violation` and every later
    :meth:`feed` raises it, so nothing after it ever passes, however the stream was cut."""

    def __init__(self, *, may_input: bool) -> None:
        self.may_input = may_input
        self.stats = FilterStats()
        self.violation: str | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.violation is not None:
            raise RfbViolation(self.violation)
        self._buf += data
        out = bytearray()
        pos = 0
        try:
            pos = self._cut(out)
        except RfbViolation as exc:
            self.violation = str(exc)
            self._buf.clear()
            return bytes(out)
        del self._buf[:pos]
        return bytes(out)

    def _cut(self, out: bytearray) -> int:
        """Append the whole messages in the buffer to ``out``; how far it got."""
        pos = 0
        buf = self._buf
        while pos < len(buf):
            size = self._size(buf, pos)
            if size is None or pos + size > len(buf):
                break
            kind = buf[pos]
            message = bytes(buf[pos : pos + size])
            pos += size
            if kind in INPUT_TYPES and not self.may_input:
                self.stats.dropped_input += 1
                continue
            if kind == SET_ENCODINGS:
                message = self._rewrite_encodings(message)
            elif kind == SET_PIXEL_FORMAT:
                _check_pixel_format(message)
            self.stats.forwarded += 1
            out += message
        return pos

    @staticmethod
    def _size(buf: bytearray, pos: int) -> int | None:
        """The whole message's length at ``pos``; None while its header is incomplete."""
        kind = buf[pos]
        fixed = FIXED_LENGTH.get(kind)
        if fixed is not None:
            return fixed
        if kind == SET_ENCODINGS:
            if len(buf) - pos < 4:
                return None
            count: int = struct.unpack_from(">H", buf, pos + 2)[0]
            if count > MAX_ENCODINGS:
                raise RfbViolation(f"SetEncodings with {count} encodings")
            return 4 + 4 * count
        if kind == CLIENT_CUT_TEXT:
            if len(buf) - pos < 8:
                return None
            length: int = struct.unpack_from(">I", buf, pos + 4)[0]
            if length > MAX_CUT_TEXT:
                # Also what an extended-clipboard message looks like (negative length): that
                # extension is never enabled, so it is refused like any oversized text.
                raise RfbViolation(f"ClientCutText of {length} bytes")
            return 8 + length
        raise RfbViolation(f"unknown client message type {kind}")

    def _rewrite_encodings(self, message: bytes) -> bytes:
        (count,) = struct.unpack_from(">H", message, 2)
        wanted = struct.unpack_from(f">{count}i", message, 4)
        kept = [e for e in wanted if e in ALLOWED_ENCODINGS]
        self.stats.removed_encodings += count - len(kept)
        return struct.pack(f">BxH{len(kept)}i", SET_ENCODINGS, len(kept), *kept)


def _check_pixel_format(message: bytes) -> None:
    """A pixel format the server can honour (§7.4); anything else is refused, not passed."""
    bpp, depth, big_endian, true_colour = message[4], message[5], message[6], message[7]
    if bpp not in (8, 16, 32) or not 0 < depth <= bpp or big_endian > 1 or true_colour > 1:
        raise RfbViolation(f"SetPixelFormat with {bpp} bits per pixel, depth {depth}")


ReadExactly = Callable[[int], Awaitable[bytes]]
Send = Callable[[bytes], Awaitable[None]]


async def accept_viewer(read: ReadExactly, send: Send, server_init: bytes) -> None:
    """Be the RFB server to the browser up to and including ServerInit (§7.1-7.3.2).

    Security type None (the browser's ticket authenticated it); the viewer's shared flag is
    ignored, the device connection is always shared (several viewers, one desktop)."""
    await send(SERVER_VERSION)
    version = CLIENT_VERSIONS.get(await read(12))
    if version is None:
        raise RfbViolation("the viewer does not speak RFB 3.7 or 3.8")
    await send(bytes([1, SECURITY_NONE]))
    if (await read(1))[0] != SECURITY_NONE:
        raise RfbViolation("the viewer chose a security type that was not offered")
    if version == 8:
        await send(struct.pack(">I", 0))  # SecurityResult: OK
    await read(1)  # ClientInit
    await send(server_init)


async def read_server_init(read: ReadExactly) -> bytes:
    """ServerInit (§7.3.2) as the device's server sent it: the header and the name."""
    header = await read(24)
    (length,) = struct.unpack_from(">I", header, 20)
    if length > MAX_NAME:
        raise RfbViolation(f"ServerInit with a {length}-byte name")
    return header + await read(length)
