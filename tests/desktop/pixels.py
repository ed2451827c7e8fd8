"""Reading pixels out of a PNG screenshot (8-bit RGB or RGBA, not interlaced: what Chromium
writes), with nothing but zlib."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


class Png:
    def __init__(self, data: bytes) -> None:
        assert data.startswith(SIGNATURE), "not a PNG"
        pos, idat = 8, b""
        while pos < len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            kind = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            if kind == b"IHDR":
                self.width, self.height, depth, colour, _, _, interlace = struct.unpack(
                    ">IIBBBBB", body
                )
                assert depth == 8, "unsupported PNG"
                assert colour in (2, 6), "unsupported PNG"
                assert interlace == 0, "unsupported PNG"
                self.channels = 3 if colour == 2 else 4
            elif kind == b"IDAT":
                idat += body
            pos += 12 + length
        self.rows = self._unfilter(zlib.decompress(idat))

    def _unfilter(self, raw: bytes) -> list[bytearray]:
        stride, bpp = self.width * self.channels, self.channels
        rows: list[bytearray] = []
        prev = bytearray(stride)
        pos = 0
        for _ in range(self.height):
            kind, line = raw[pos], bytearray(raw[pos + 1 : pos + 1 + stride])
            pos += 1 + stride
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up = prev[i]
                corner = prev[i - bpp] if i >= bpp else 0
                if kind == 1:
                    line[i] = (line[i] + left) & 0xFF
                elif kind == 2:
                    line[i] = (line[i] + up) & 0xFF
                elif kind == 3:
                    line[i] = (line[i] + (left + up) // 2) & 0xFF
                elif kind == 4:
                    line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
            rows.append(line)
            prev = line
        return rows

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = x * self.channels
        row = self.rows[y]
        return row[i], row[i + 1], row[i + 2]


def close_to(found: tuple[int, int, int], want: tuple[int, int, int], slack: int = 12) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(found, want, strict=True))
