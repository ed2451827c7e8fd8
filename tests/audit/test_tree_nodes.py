"""Stored subtree roots and the proofs read from them; checkpoints signed on a cadence.

Appends of many sizes must leave exactly the perfect subtrees at levels 4, 8, ... in
``audit_tree_nodes``; every inclusion and consistency proof read from them must equal the
one computed over all leaves and verify against a signed root. ``append(sign=False)`` leaves
the tail uncovered, which verification and bundles report as such, and
``sign_checkpoint`` covers it (once).
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import schema
from audit.bundle import verify_bundle
from audit.errors import AuditError
from audit.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from audit.proofs import range_hashes
from audit.schema import node_key
from audit.store import AuditLog, NewEvent


def events(n: int, stream: str = "HD-1") -> list[NewEvent]:
    return [NewEvent(stream, "x.y", {"i": i}) for i in range(n)]


async def test_stored_nodes_and_proofs_match_the_leaves(log: AuditLog, engine: AsyncEngine) -> None:
    rng = random.Random(7)
    roots: dict[int, bytes] = {}
    size = 0
    while size < 300:
        batch = rng.choice([1, 2, 3, 15, 16, 17, 40])
        async with engine.begin() as conn:
            await log.append(conn, events(batch, f"HD-{size % 3}"))
        size += batch
        async with engine.connect() as conn:
            cp = await log.latest_checkpoint(conn)
        assert cp is not None
        roots[cp.size] = cp.root
    async with engine.connect() as conn:
        leaves = await log.leaf_hashes(conn, size)
        stored = {
            int(k): bytes(h)
            for k, h in await conn.execute(
                select(schema.tree_nodes.c.node, schema.tree_nodes.c.hash)
            )
        }
        expected: list[tuple[int, int, bytes]] = []
        Frontier().extend(leaves, expected)
        assert stored == {node_key(lv, ix): h for lv, ix, h in expected}
        assert {lv for lv, _, _ in expected} == {4, 8}
        sizes = sorted(roots)
        for n in sizes:
            for index in sorted({0, n - 1, n // 2, rng.randrange(n)}):
                proof = await log.inclusion_proof(conn, index, n)
                assert proof == inclusion_proof(index, leaves[:n])
                verify_inclusion(leaves[index], index, n, proof, roots[n])
        for old in sizes:
            new = sizes[-1]
            proof = await log.consistency_proof(conn, old, new)
            assert proof == consistency_proof(old, leaves[:new])
            verify_consistency(old, new, roots[old], roots[new], proof)


async def test_a_missing_stored_node_is_an_error_not_a_wrong_proof(
    log: AuditLog, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await log.append(conn, events(40))
        await conn.execute(delete(schema.tree_nodes))
    async with engine.connect() as conn:
        with pytest.raises(AuditError, match="stored tree lacks a subtree at level 4"):
            await log.inclusion_proof(conn, 3, 40)
        with pytest.raises(AuditError, match="stored tree lacks"):
            await range_hashes(conn, [(0, 16)])
        # below the first stored level the leaves themselves are read
        leaves = await log.leaf_hashes(conn, 40)
        assert await range_hashes(conn, [(32, 40)]) == [root_of(leaves[32:40])]


async def test_unsigned_appends_are_reported_then_covered(
    log: AuditLog, engine: AsyncEngine, tmp_path: object
) -> None:
    async with engine.begin() as conn:
        await log.append(conn, events(5))
        await log.append(conn, events(3, "HD-2"), sign=False)
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
        assert report.ok, report.problem
        assert (report.size, report.covered, report.uncovered) == (8, 5, 3)
        assert "NOT YET COVERED: the last 3 records (positions 5-7)" in report.verdict()
        bundle = await log.export_bundle(conn, "HD-1", include_plaintext=False)
        with pytest.raises(AuditError, match="no record of 'HD-2' is covered"):
            await log.export_bundle(conn, "HD-2", include_plaintext=False)
    assert verify_bundle(bundle, log.signer.verifier).ok
    async with engine.begin() as conn:
        await log.append(conn, events(2), sign=False)
    async with engine.connect() as conn:
        partial = await log.export_bundle(conn, "HD-1", include_plaintext=False)
    checked = verify_bundle(partial, log.signer.verifier)
    assert checked.ok
    assert checked.records == 5
    assert checked.not_yet_covered == 2
    assert "NOT YET COVERED: 2 later records" in checked.verdict()
    async with engine.begin() as conn:
        signed = await log.sign_checkpoint(conn)
        assert signed is not None
        assert signed.size == 10
        assert await log.sign_checkpoint(conn) is None  # nothing new to cover
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
        assert report.ok
        assert report.uncovered == 0
        assert report.checkpoint_size == 10
        assert "NOT YET COVERED" not in report.verdict()


async def test_an_empty_log_has_nothing_to_sign(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await log.sign_checkpoint(conn) is None


async def test_a_forged_uncovered_tail_still_fails_its_own_checks(
    log: AuditLog, engine: AsyncEngine
) -> None:
    """Not yet signed is not unchecked: hashes, chains and the tree state still hold."""
    async with engine.begin() as conn:
        await log.append(conn, events(4))
        await log.append(conn, events(2), sign=False)
        await conn.execute(
            schema.records.update()
            .where(schema.records.c.position == 5)
            .values(event_type="forged")
        )
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok
    assert report.position == 5
    assert "was altered" in (report.problem or "")


async def test_a_cut_tail_is_never_signed_again(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await log.append(conn, events(6))
        await log.append(conn, events(2), sign=False)
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position == 7))
    async with engine.begin() as conn:
        with pytest.raises(AuditError, match="not signing: the stored tree has 8 records"):
            await log.sign_checkpoint(conn)
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records))
    async with engine.begin() as conn:
        with pytest.raises(AuditError, match="last record is at position None"):
            await log.sign_checkpoint(conn)
