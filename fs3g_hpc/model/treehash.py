"""SHA-256 tree hash (Glacier's algorithm): SHA-256 of each 1 MiB leaf, then adjacent pairs hashed together level by
level (an odd node is carried up unchanged) until one root remains. The empty input hashes to SHA-256 of nothing.

`TreeHasher` is fed the data in order, in pieces of any size, as it is read for upload, so the hash never needs a
second read. It keeps O(log n) digests (a binary-counter stack of complete subtrees), so a 48 TiB file costs a few KB.
Parts of a multipart upload are whole MiB, so readers working on parts in parallel can hash their own leaves
(`leaf_digests`) and feed them in part order (`add_leaves`).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

LEAF_BYTES = 1024 * 1024


def _pair(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def leaf_digests(data: bytes | bytearray | memoryview) -> list[bytes]:
    """Digests of the 1 MiB leaves of `data`, which must start on a leaf boundary (the last leaf may be short)."""
    view = memoryview(data)
    return [hashlib.sha256(view[i:i + LEAF_BYTES]).digest() for i in range(0, len(view), LEAF_BYTES)]


def tree_hash_and_sha256(data: bytes | bytearray | memoryview) -> tuple[str, str]:
    """(tree hash, SHA-256) of `data`, both hex. Data of one leaf or less has one digest for both (the tree of a
    single leaf is that leaf's SHA-256), so a small file is hashed once, not twice."""
    view = memoryview(data)
    if len(view) <= LEAF_BYTES:
        digest = hashlib.sha256(view).hexdigest()
        return digest, digest
    hasher = TreeHasher()
    hasher.update(view)
    return hasher.hexdigest(), hashlib.sha256(view).hexdigest()


class TreeHasher:
    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (level, digest) of complete subtrees, left to right
        self._leaf = hashlib.sha256()
        self._leaf_fill = 0
        self._any = False

    def add_leaves(self, digests: Iterable[bytes]) -> None:
        """Whole leaves hashed elsewhere, in order; only valid on a leaf boundary."""
        if self._leaf_fill:
            raise ValueError("add_leaves on a partial leaf")
        for digest in digests:
            self._push(digest)

    def _push(self, digest: bytes) -> None:
        self._any = True
        level = 0
        stack = self._stack
        while stack and stack[-1][0] == level:
            digest = _pair(stack.pop()[1], digest)
            level += 1
        stack.append((level, digest))

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        if self._leaf_fill:
            take = min(LEAF_BYTES - self._leaf_fill, end)
            self._leaf.update(view[:take])
            self._leaf_fill += take
            pos = take
            if self._leaf_fill == LEAF_BYTES:
                self._push(self._leaf.digest())
                self._leaf, self._leaf_fill = hashlib.sha256(), 0
        while end - pos >= LEAF_BYTES:
            self._push(hashlib.sha256(view[pos:pos + LEAF_BYTES]).digest())
            pos += LEAF_BYTES
        if pos < end:
            self._leaf.update(view[pos:end])
            self._leaf_fill += end - pos

    def digest(self) -> bytes:
        stack = list(self._stack)
        if self._leaf_fill:
            stack.append((0, self._leaf.digest()))
        if not stack:
            return hashlib.sha256(b"").digest()
        # Fold the complete subtrees from the right: the same tree as pairing level by level.
        root = stack[-1][1]
        for _, digest in reversed(stack[:-1]):
            root = _pair(digest, root)
        return root

    def hexdigest(self) -> str:
        return self.digest().hex()


def tree_hash(data: bytes | bytearray | memoryview) -> str:
    hasher = TreeHasher()
    hasher.update(data)
    return hasher.hexdigest()


def tree_hash_reference(data: bytes) -> str:
    """The textbook level-by-level algorithm, kept as the oracle for tests."""
    level = [hashlib.sha256(data[i:i + LEAF_BYTES]).digest() for i in range(0, len(data), LEAF_BYTES)]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        level = [_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0].hex()
