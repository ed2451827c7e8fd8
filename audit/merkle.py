"""The RFC 9162 (RFC 6962) Merkle tree: hashing, an incremental frontier, proofs.

Leaf hash ``H(0x00 || data)``, node hash ``H(0x01 || left || right)``, SHA-256. The tree of
``n`` leaves splits at ``k``, the largest power of two below ``n``. Proof generation and
verification follow RFC 9162 §2.1.3 and §2.1.4.

Proofs are described first as the leaf ranges whose tree hashes they carry
(:func:`inclusion_ranges`, :func:`consistency_ranges`); each range splits into aligned
perfect subtrees (:func:`perfect_chunks`). A store that keeps the roots of the perfect
subtrees at every ``STRIDE``-th level (:meth:`Frontier.extend` reports them as they complete)
answers any proof from O(log n) stored hashes, never a pass over the leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from audit.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
STRIDE = 4
"""Stored subtree roots are those at levels 4, 8, 12, ...: one row per 15 leaves, and a proof's
subtree at any level is at most 2**(STRIDE - 1) = 8 stored hashes (or leaves) combined."""

Node = tuple[int, int, bytes]
"""A perfect subtree's root: (level, index at that level, hash); it covers the leaves
``index * 2**level`` to ``(index + 1) * 2**level - 1``."""


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

    def extend(self, leaves: Sequence[bytes], completed: list[Node] | None = None) -> None:
        """``append`` for many leaves, a level at a time (the append and verify hot paths).

        At each level the frontier's node of that level (if the size has that bit) comes
        first, pairs are hashed in one comprehension, and an odd one out is the new frontier
        node of the level. ``completed`` receives the perfect subtrees at levels that are
        positive multiples of :data:`STRIDE` which these leaves complete.
        """
        sha256, nodes = hashlib.sha256, self.nodes
        items, bits = list(leaves), self.size
        leftovers: list[bytes] = []  # new frontier nodes, lowest level first
        level, first = 0, self.size  # index (at ``level``) of the first new item
        while items:
            if bits & 1:
                items.insert(0, nodes.pop())
                if completed is not None and level and level % STRIDE == 0:
                    completed.extend((level, first + i, h) for i, h in enumerate(items[1:]))
                first -= 1
            elif completed is not None and level and level % STRIDE == 0:
                completed.extend((level, first + i, h) for i, h in enumerate(items))
            leftovers.append(items.pop() if len(items) & 1 else b"")
            # zip of one iterator twice: the pairs without slicing copies (even length here)
            pairs = iter(items)
            items = [
                sha256(b"\x01" + left + right).digest()
                for left, right in zip(pairs, pairs, strict=False)
            ]
            bits >>= 1
            level, first = level + 1, first >> 1
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
    return [root_of(leaves[lo:hi]) for lo, hi in inclusion_ranges(index, len(leaves))]


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) between the first ``old_size`` leaves and all of them (§2.1.4.1)."""
    return [root_of(leaves[lo:hi]) for lo, hi in consistency_ranges(old_size, len(leaves))]


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose tree hashes form PATH(index, D[size]), in order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose tree hashes form PROOF(old_size, D[new_size]), in order."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    out: list[tuple[int, int]] = []

    def sub(m: int, lo: int, hi: int, complete: bool) -> None:
        if m == hi - lo:
            if not complete:
                out.append((lo, hi))
            return
        k = _split(hi - lo)
        if m <= k:
            sub(m, lo, lo + k, complete)
            out.append((lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            out.append((lo, lo + k))

    sub(old_size, 0, new_size, True)
    return out


def perfect_chunks(lo: int, hi: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` as aligned perfect subtrees (level, index), left to right.

    Every range of an RFC 9162 proof starts at a multiple of the power of two at or above
    its length, so its binary decomposition from the left is aligned; the range's tree hash
    is then those subtrees' roots folded from the right, as a frontier's root is."""
    chunks: list[tuple[int, int]] = []
    at, left = lo, hi - lo
    for level in reversed(range(left.bit_length())):
        if left >> level & 1:
            if at % (1 << level):
                raise ValueError(f"range [{lo}, {hi}) is not aligned")
            chunks.append((level, at >> level))
            at += 1 << level
    return chunks


def fold(roots: Sequence[bytes]) -> bytes:
    """The tree hash over consecutive aligned perfect subtrees of decreasing size."""
    acc = roots[-1]
    for node in reversed(roots[:-1]):
        acc = node_hash(node, acc)
    return acc


def stored_parts(level: int, index: int) -> tuple[int, int, int]:
    """Where a store that keeps every :data:`STRIDE`-th level finds a perfect subtree:
    (stored level, first index, count) — level 0 meaning the leaves themselves."""
    base = level - level % STRIDE
    width = 1 << (level - base)
    return base, index * width, width


def combine(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two count of sibling subtree roots."""
    items = list(hashes)
    while len(items) > 1:
        pairs = iter(items)
        items = [node_hash(a, b) for a, b in zip(pairs, pairs, strict=True)]
    return items[0]


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
