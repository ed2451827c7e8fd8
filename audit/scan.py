"""The verification hot loop over stored rows, shared by :class:`audit.verify.LogVerifier`
and the segment workers of :mod:`audit.segments`.

Per record it rebuilds the leaf encoding of :func:`audit.records.leaf_data` with one
``struct`` call up to the ciphertext (a layout per ticket, event type and key id, which
repeat), hashes
it, and checks position, hash and the ticket's chain. The layout assumes what the writer
always produces (36-character record ids, 12-byte nonces, 32-byte hashes; ``struct`` would
silently pad or cut other lengths, so they are checked); a row that breaks the assumption,
like any row that fails a check, goes to ``recheck``, which recomputes the
hash the slow, general way and either names the problem or hands back the right leaf.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from audit.merkle import Frontier
from audit.records import ZERO_HASH, FieldCodec, Layout

Head = tuple[int, bytes]  # a ticket's last sequence number and leaf hash
First = tuple[int, str, str, int, bytes]  # index, record id, stream, sequence, prev_hash
NO_HEAD: Head = (0, ZERO_HASH)

_HASH_LEN = struct.pack(">I", 32)

Recheck = Callable[[Sequence[Any], int, Head | None], bytes]
"""``recheck(row, expected_position, head)``: the row's true leaf hash, or raise the
:class:`~audit.errors.VerificationError` naming what is wrong (``head`` None: do not check
the chain, its first link is checked elsewhere)."""


def leaf_layout(codec: FieldCodec, stream: str, event_type: str, key_id: str) -> Layout:
    """The ``struct`` packer of a leaf input up to the ciphertext, and its string pieces, put
    in ``codec.layouts`` (tickets, event types and key ids repeat: callers look there first)."""
    if len(codec.layouts) >= codec.CACHE_SIZE:
        codec.layouts.clear()
    s, e, k = codec.s(stream), codec.s(event_type), codec.s(key_id)
    fmt = f">{len(codec.leaf_prefix)}sqI36s{len(s)}sq{len(e)}sq{len(k)}sqI12sI"
    layout = codec.layouts[stream, event_type, key_id] = (struct.Struct(fmt).pack, s, e, k)
    return layout


def scan(
    codec: FieldCodec,
    rows: Iterable[Sequence[Any]],
    size: int,
    heads: dict[str, Head],
    firsts: list[First] | None,
    frontier: Frontier,
    marks: Sequence[int],
    on_mark: Callable[[int, int, str], None],
    recheck: Recheck,
) -> int:
    """Verify ``rows`` (``Record`` field order) as the records at ``size``, ``size + 1``, ...

    ``heads`` is updated in place and the leaves go into ``frontier``. With ``firsts`` None a
    ticket without a head must start at sequence 1; otherwise the first record of each such
    ticket is accepted provisionally and listed in ``firsts`` for the caller to link to the
    ticket's head from earlier rows. ``on_mark(size, position, record_id)`` is called with
    the frontier complete whenever the size reaches one of ``marks`` (ascending). Returns the
    size after the last row.
    """
    layouts = codec.layouts
    prefix = codec.leaf_prefix
    sha256, hash_len = hashlib.sha256, _HASH_LEN
    pending = iter([m for m in marks if m > size] + [-1])  # -1: never reached
    next_mark = next(pending)
    leaves: list[bytes] = []  # verified leaves not yet in the frontier
    add, head_of = leaves.append, heads.get
    for row in rows:
        pos, rid, stream, seq, etype, at, key, psize, nonce, ct, prev, leaf = row
        layout = layouts.get((stream, etype, key)) or leaf_layout(codec, stream, etype, key)
        pack, s_enc, e_enc, k_enc = layout
        rid_b = rid.encode()
        try:
            h = sha256(
                pack(
                    prefix, pos, 36, rid_b, s_enc, seq, e_enc, at, k_enc, psize, 12, nonce, len(ct)
                )
            )
            h.update(ct)
            h.update(hash_len + prev)
            node = h.digest()
        except (struct.error, TypeError):  # e.g. a driver's memoryview: the slow path copes
            node = b""
        if len(rid_b) != 36 or len(nonce) != 12 or len(prev) != 32:
            node = b""  # ``struct`` would pad or cut them: an encoding no writer makes
        head = head_of(stream)
        linked = True  # False: the chain's first link is the caller's to check
        if head is None:
            if firsts is None:
                head = NO_HEAD
            else:
                firsts.append((size, rid, stream, seq, prev))
                head, linked = (seq - 1, prev), False
        if pos != size or node != leaf or seq != head[0] + 1 or prev != head[1]:
            frontier.extend(leaves)  # the frontier is at ``size`` for the recheck's report
            leaves = []
            add = leaves.append
            node = recheck(row, size, head if linked else None)
        heads[stream] = (seq, node)
        add(node)
        size += 1
        if size == next_mark:
            frontier.extend(leaves)
            leaves = []
            add = leaves.append
            on_mark(size, pos, rid)
            next_mark = next(pending)
    frontier.extend(leaves)
    return size
