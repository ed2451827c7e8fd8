"""Inclusion and consistency proofs from the stored subtree roots: O(log n) hashes read.

A proof is the tree hashes of O(log n) leaf ranges (:func:`audit.merkle.inclusion_ranges`,
:func:`audit.merkle.consistency_ranges`); each range is O(log n) aligned perfect subtrees,
and each of those is at most ``2**(STRIDE - 1)`` hashes stored at the level at or below it
(``audit_tree_nodes``, or the leaves in ``audit_records`` below the first stored level).
Everything a proof needs is read in two statements, by key. A stored hash that was altered
can only make a proof fail against the signed root, never pass: the proof is checked against
the checkpoint's signature by whoever relies on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.errors import AuditError
from audit.merkle import (
    combine,
    consistency_ranges,
    fold,
    inclusion_ranges,
    perfect_chunks,
    stored_parts,
)
from audit.schema import node_key


async def range_hashes(conn: AsyncConnection, ranges: Iterable[tuple[int, int]]) -> list[bytes]:
    """The RFC 9162 tree hash of each aligned leaf range ``[lo, hi)``, from stored hashes."""
    plans = [[stored_parts(lv, ix) for lv, ix in perfect_chunks(lo, hi)] for lo, hi in ranges]
    positions: set[int] = set()
    keys: set[int] = set()
    for base, first, n in (part for plan in plans for part in plan):
        if base == 0:
            positions.update(range(first, first + n))
        else:
            keys.update(node_key(base, i) for i in range(first, first + n))
    leaves: dict[int, bytes] = {}
    nodes: dict[int, bytes] = {}
    if positions:
        rc = schema.records.c
        rows = await conn.execute(
            select(rc.position, rc.leaf_hash).where(rc.position.in_(positions))
        )
        leaves = {int(p): bytes(h) for p, h in rows}
    if keys:
        nc = schema.tree_nodes.c
        rows = await conn.execute(select(nc.node, nc.hash).where(nc.node.in_(keys)))
        nodes = {int(k): bytes(h) for k, h in rows}
    out = []
    for plan in plans:
        roots = []
        for base, first, n in plan:
            try:
                if base == 0:
                    parts = [leaves[p] for p in range(first, first + n)]
                else:
                    parts = [nodes[node_key(base, i)] for i in range(first, first + n)]
            except KeyError as exc:
                raise AuditError(
                    f"the stored tree lacks a subtree at level {base}: the log is shorter than "
                    "the proof asks, or audit_tree_nodes was not built (run the migrations)"
                ) from exc
            roots.append(combine(parts))
        out.append(fold(roots))
    return out


async def inclusion_proof(conn: AsyncConnection, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1) read from the stored subtrees."""
    return await range_hashes(conn, inclusion_ranges(index, size))


async def consistency_proof(conn: AsyncConnection, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1) read from the stored subtrees."""
    return await range_hashes(conn, consistency_ranges(old_size, new_size))
