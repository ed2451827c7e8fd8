"""The RFC 9162 (RFC 6962) Merkle tree: hashing, an incremental frontier, proofs.

Leaf hash ``H(0x00 || data)``, node hash ``H(0x01 || left || right)``, SHA-256. The tree of
``n`` leaves splits at ``k``, the largest power of two below ``n``. Proof generation and
verification follow RFC 9162 §2.1.3 and §2.1.4.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from audit.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves.

    Appending is O(log n) amortised O(1); the root folds the roots right to left, which is
    exactly RFC 9162's MTH for a left-balanced tree.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise VerificationError(
                f"tree state is inconsistent: size {size} needs {bin(size).count('1')} "
                f"subtree roots, found {len(nodes)}"
            )
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        self.nodes.append(leaf)
        size = self.size
        # Each trailing 1 bit of the old size is a complete subtree the new leaf pairs up with.
        while size & 1:
            right = self.nodes.pop()
            left = self.nodes.pop()
            self.nodes.append(hashlib.sha256(b"\x01" + left + right).digest())
            size >>= 1
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """``append`` for many leaves, a level at a time (the append and verify hot paths).

        At each level the frontier's node of that level (if the size has that bit) comes
        first, pairs are hashed in one comprehension, and an odd one out is the new frontier
        node of the level.
        """
        sha256, nodes = hashlib.sha256, self.nodes
        items, bits = list(leaves), self.size
        leftovers: list[bytes] = []  # new frontier nodes, lowest level first
        while items:
            if bits & 1:
                items.insert(0, nodes.pop())
            leftovers.append(items.pop() if len(items) & 1 else b"")
            # zip of one iterator twice: the pairs without slicing copies (even length here)
            pairs = iter(items)
            items = [
                sha256(b"\x01" + left + right).digest()
                for left, right in zip(pairs, pairs, strict=False)
            ]
            bits >>= 1
        nodes.extend(node for node in reversed(leftovers) if node)
        self.size += len(leaves)

    def joined(self, size: int, nodes: Sequence[bytes]) -> Frontier:
        """This tree followed by the ``size`` leaves whose own frontier is ``nodes``.

        Only right when this tree's size is a multiple of a power of two ``>= size`` (the new
        leaves' subtrees are then the big tree's): equal neighbours merge, as carries do.
        """
        merged = list(self.nodes)
        sizes = [1 << b for b in reversed(range(self.size.bit_length())) if self.size >> b & 1]
        new = [1 << b for b in reversed(range(size.bit_length())) if size >> b & 1]
        for node, width in zip(nodes, new, strict=True):
            merged.append(node)
            sizes.append(width)
            while len(sizes) > 1 and sizes[-1] == sizes[-2]:
                right = merged.pop()
                merged.append(node_hash(merged.pop(), right))
                sizes.pop()
                sizes[-1] *= 2
        return Frontier(self.size + size, merged)

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        acc = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            acc = node_hash(node, acc)
        return acc

    def pack(self) -> bytes:
        return b"".join(self.nodes)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> Frontier:
        nodes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
        return cls(size, nodes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with the 0x00 prefix)."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) for leaf ``index`` in the tree over ``leaves`` (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)} leaves")
    proof: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            proof.append(root_of(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root_of(leaves[lo : lo + k]))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) between the first ``old_size`` leaves and all of them (§2.1.4.1)."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to {n}")
    return _subproof(old_size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_of(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root_of(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root_of(leaves[:k])]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises VerificationError unless ``leaf`` is at ``index``."""
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    acc = leaf
    for node in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            acc = node_hash(node, acc)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            acc = node_hash(acc, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree needs")
    if acc != root:
        raise VerificationError("inclusion proof does not lead to the signed root")


def verify_consistency(  # noqa: PLR0912 - RFC 9162's algorithm, kept step for step
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises VerificationError unless the old tree is a prefix of the new."""
    if not 0 < old_size <= new_size:
        raise VerificationError(f"cannot prove size {old_size} against size {new_size}")
    if old_size == new_size:
        if proof:
            raise VerificationError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise VerificationError("same size, different roots: the log forked")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the trees need")
    if fr != old_root:
        raise VerificationError("consistency proof does not match the old root")
    if sr != new_root:
        raise VerificationError("consistency proof does not match the new root")
