"""Rules for reading a catalog against a scan, shared by the planner and compare: the catalog's order is checked as it
streams, and the paths a scan could not read are known as a set of prefixes.

Both hold O(1) state, or one key per unreadable path (a handful in practice, never the tree).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Iterator

from ..errors import UsageError
from .records import Entry


class CatalogError(UsageError):
    """A catalog that is not sorted, not ours, or truncated."""


def checked_order(entries: Iterable[Entry], where: str) -> Iterator[Entry]:
    """The entries, unchanged; CatalogError at the first one that is not strictly after the one before it."""
    previous = b""
    for entry in entries:
        key = entry[0]
        if key <= previous and previous:
            raise CatalogError(f"entries out of order at {entry.path!r}", path=where,
                               hint="the catalog is damaged: rerun with --full")
        previous = key
        yield entry


class UnreadablePaths:
    """Paths the scan could not read. Catalog entries under them are neither seen nor known to be gone, so they are not
    reported deleted (the catalog keeps them until the path is readable again). Holds one key per unreadable path:
    a handful in practice, never the tree."""

    def __init__(self, paths: Iterable[bytes]):
        self._prefixes = sorted(p.rstrip(b"/") + b"/" for p in paths)

    def covers(self, path: bytes) -> bool:
        if not self._prefixes:
            return False
        probe = path + b"/"
        i = bisect_right(self._prefixes, probe) - 1
        return i >= 0 and probe.startswith(self._prefixes[i])
