"""Golden vectors for the RFC 9162 Merkle tree, against a naive reference written here.

The reference follows RFC 9162 §2.1.1 (MTH), §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF)
literally, recursively, with ``hashlib`` only; the library's iterative frontier, proof
generation and proof verification must agree with it for every size 1..64 and every pair.
"""

from __future__ import annotations

import hashlib

import pytest

from audit.errors import VerificationError
from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = k_of(len(d))
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


DATA = [bytes([i]) * (i % 3) + i.to_bytes(2, "big") for i in range(64)]
LEAVES = [sha(b"\x00" + d) for d in DATA]


def test_leaf_and_node_hash_vectors() -> None:
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"") == sha(b"\x00")
    left, right = leaf_hash(b"\x00"), leaf_hash(b"\x10")
    assert node_hash(left, right) == sha(b"\x01" + left + right)
    assert (
        bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        == EMPTY_ROOT
    )
    assert root_of([]) == EMPTY_ROOT


def test_fixed_small_trees() -> None:
    # RFC 6962's test inputs (the first entries of its reference test vectors).
    inputs = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43"]
    leaves = [leaf_hash(x) for x in inputs]
    expected = {
        1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    }
    for n, hex_root in expected.items():
        assert root_of(leaves[:n]).hex() == hex_root
        assert mth(inputs[:n]).hex() == hex_root


@pytest.mark.parametrize("n", range(1, 65))
def test_roots_and_inclusion_match_reference(n: int) -> None:
    frontier = Frontier()
    for leaf in LEAVES[:n]:
        frontier.append(leaf)
    root = mth(DATA[:n])
    assert frontier.root() == root
    assert Frontier.unpack(frontier.size, frontier.pack()).root() == root
    assert frontier.copy().root() == root
    for m in range(n):
        proof = inclusion_proof(m, LEAVES[:n])
        assert proof == path(m, DATA[:n])
        verify_inclusion(LEAVES[m], m, n, proof, root)
        with pytest.raises(VerificationError):
            verify_inclusion(LEAVES[(m + 1) % 64], m, n, proof, root)


@pytest.mark.parametrize("n", range(1, 65))
def test_consistency_matches_reference(n: int) -> None:
    new_root = mth(DATA[:n])
    for m in range(1, n + 1):
        old_root = mth(DATA[:m])
        proof = consistency_proof(m, LEAVES[:n])
        assert proof == subproof(m, DATA[:n], True)
        verify_consistency(m, n, old_root, new_root, proof)
        if m < n:
            with pytest.raises(VerificationError):
                verify_consistency(m, n, new_root, new_root, proof)
            with pytest.raises(VerificationError):
                verify_consistency(m, n, old_root, old_root, proof)


def test_inclusion_refusals() -> None:
    leaves = LEAVES[:5]
    root = root_of(leaves)
    proof = inclusion_proof(2, leaves)
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(5, leaves)
    with pytest.raises(VerificationError, match="outside"):
        verify_inclusion(leaves[2], 5, 5, proof, root)
    with pytest.raises(VerificationError, match="longer"):
        verify_inclusion(leaves[2], 2, 5, [*proof, root], root)
    with pytest.raises(VerificationError, match="shorter"):
        verify_inclusion(leaves[2], 2, 5, proof[:-1], root)
    with pytest.raises(VerificationError, match="signed root"):
        verify_inclusion(leaves[2], 2, 5, proof, EMPTY_ROOT)


def test_consistency_refusals() -> None:
    leaves = LEAVES[:7]
    r3, r7 = root_of(leaves[:3]), root_of(leaves)
    proof = consistency_proof(3, leaves)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(0, leaves)
    with pytest.raises(VerificationError, match="cannot prove"):
        verify_consistency(0, 7, r3, r7, proof)
    with pytest.raises(VerificationError, match="must be empty"):
        verify_consistency(7, 7, r7, r7, proof)
    with pytest.raises(VerificationError, match="forked"):
        verify_consistency(7, 7, r3, r7, [])
    verify_consistency(7, 7, r7, r7, [])
    with pytest.raises(VerificationError, match="is empty"):
        verify_consistency(3, 7, r3, r7, [])
    with pytest.raises(VerificationError, match="longer"):
        verify_consistency(3, 7, r3, r7, [*proof, r7, r7])
    with pytest.raises(VerificationError, match="shorter"):
        verify_consistency(3, 7, r3, r7, proof[:-1])


def test_frontier_refuses_inconsistent_state() -> None:
    with pytest.raises(VerificationError, match="inconsistent"):
        Frontier(3, [EMPTY_ROOT])


def test_ranges_must_be_aligned() -> None:
    from audit.merkle import perfect_chunks

    assert perfect_chunks(16, 27) == [(3, 2), (1, 12), (0, 26)]
    with pytest.raises(ValueError, match="not aligned"):
        perfect_chunks(3, 7)
