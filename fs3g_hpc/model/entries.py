"""Entry classes: which of the original tool's classes an entry belongs to (small file, large file, symlink), and the
key class each one is stored under. Pure: the planner, uploader, compare, estimate and restore all use this rule."""

from __future__ import annotations

from enum import Enum

from .keys import KeyClass
from .records import Entry, EntryKind


class EntryClass(Enum):
    """The original tool's classes: small files (one PUT), large files (multipart, archived), symlinks."""

    SMALL = "small"
    LARGE = "large"
    SYMLINK = "symlink"


# The key class (top-level key directory) of each entry class, and back.
KEY_CLASS = {EntryClass.SMALL: KeyClass.SMALL, EntryClass.LARGE: KeyClass.LARGE, EntryClass.SYMLINK: KeyClass.SYMLINK}
ENTRY_CLASS = {v: k for k, v in KEY_CLASS.items()}


def classify(entry: Entry, small_threshold_bytes: int) -> EntryClass | None:
    """None for what is never uploaded (directories, special files)."""
    if entry.kind is EntryKind.SYMLINK:
        return EntryClass.SYMLINK
    if entry.kind is EntryKind.FILE:
        return EntryClass.SMALL if entry.size_bytes <= small_threshold_bytes else EntryClass.LARGE
    return None
