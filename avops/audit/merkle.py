"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Leaves are hashed as ``SHA-256(0x00 || entry)`` and interior nodes as ``SHA-256(0x01 || left || right)``
(domain separation: a leaf can never be passed off as a node). Proof *generation* follows RFC 6962
section 2.1 (PATH and SUBPROOF); proof *verification* follows the iterative algorithms of RFC 9162
sections 2.1.3.2 and 2.1.4.2, so the two sides are independent implementations that must agree. The
published Certificate Transparency test vectors pin both (tests/test_audit.py).

:class:`Tree` keeps every level of the tree (leaf hashes, then pairs, an odd node carried up
unchanged, which yields exactly RFC 6962's MTH), so a proof costs O(log n) hash look-ups instead of
re-hashing the log: 1,000 proofs over 100k events take milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """A Merkle tree over leaf hashes, with every level kept for fast proofs; append-only."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        self._dirty: int | None = 0 if self.levels[0] else None  # first leaf whose ancestors are stale

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash; ancestors are recomputed lazily, once per batch of appends (amortised O(1))."""
        if self._dirty is None:
            self._dirty = self.size
        self.levels[0].append(leaf)

    def _ensure(self) -> None:
        if self._dirty is None:
            return
        start, level = self._dirty, 0
        while len(self.levels[level]) > 1:
            nodes = self.levels[level]
            if level + 1 == len(self.levels):
                self.levels.append([])
            up, first = self.levels[level + 1], start // 2
            del up[first:]
            for i in range(2 * first, len(nodes), 2):
                up.append(node_hash(nodes[i], nodes[i + 1]) if i + 1 < len(nodes) else nodes[i])
            start, level = first, level + 1
        self._dirty = None

    def _range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for the ranges proofs need: aligned subtrees, or a suffix ending at this tree's size."""
        self._ensure()
        if end - start == 1:
            return self.levels[0][start]
        k = (end - start - 1).bit_length()  # smallest k with 2**k >= end - start
        if start % (1 << k) == 0 and (end - start == 1 << k or end == self.size) and k < len(self.levels):
            return self.levels[k][start >> k]
        mid = start + _split(end - start)
        return node_hash(self._range(start, mid), self._range(mid, end))

    def root(self, size: int | None = None) -> bytes:
        """The tree head of the first ``size`` leaves (default: all of them)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")
        if size == 0:
            return EMPTY_ROOT
        return self._sub(0, size)

    def _sub(self, start: int, end: int) -> bytes:
        if end == self.size or (end - start) & (end - start - 1) == 0:
            return self._range(start, end)
        mid = start + _split(end - start)
        return node_hash(self._sub(start, mid), self._sub(mid, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size]): the sibling hashes from the leaf up to the root."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:  # walk down, collecting the subtree on the other side each time
            mid = start + _split(end - start)
            if index < mid:
                proof.append(self._sub(mid, end))
                end = mid
            else:
                proof.append(self._sub(start, mid))
                start = mid
        return proof[::-1]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(old_size, D[0:new_size]): that the old tree is a prefix of the new one."""
        new_size = self.size if new_size is None else new_size
        if not 0 < old_size <= new_size <= self.size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size} (log size {self.size})")
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [self._sub(start, end)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, start, start + k, whole) + [self._sub(start + k, end)]
        return self._subproof(m - k, start + k, end, False) + [self._sub(start, start + k)]


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    return Tree(leaf_hashes).root()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` put leaf hash ``leaf`` at ``index`` of the tree of ``size`` with head ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> bool:
    """RFC 9162 2.1.4.2: is the tree of ``old_size`` with ``old_root`` a prefix of the one with ``new_root``?"""
    if old_size == new_size:
        return not proof and old_root == new_root
    if not 0 < old_size < new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself the first node of the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
