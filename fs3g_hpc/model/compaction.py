"""Which packs pack compaction rewrites (prune/compact.py does the I/O): pure rules on facts gathered per pack.

A pack's live members are those some kept snapshot (or the lab's local catalog) references; its live fraction is
their bytes (each member's whole span: headers, data, padding; a member several hard links share counted once) over
its member bytes (the pack's size without the END_OF_ARCHIVE blocks). A pack is compacted when, in this order:

    it has live members at all           none: not compaction's business, the delete pass removes it (NO_LIVE)
    it is no newer than the newest       a pack written after the newest snapshot is a later backup's (YOUNG)
    snapshot
    no kept snapshot but the newest      an older kept snapshot is an immutable point in time: never rewritten, so
    references it                        its packs stay until retention forgets it (HELD, naming the snapshot)
    its live fraction < the threshold    storage.pack_compact_below (ABOVE otherwise; 0 compacts nothing)
    it is readable now                   GLACIER and DEEP_ARCHIVE packs only with --include-archived (ARCHIVED);
                                         then one not yet restored is restore-requested and left for the next prune
                                         (THAW); GLACIER_IR and the other classes are read directly

Memory: one PackFacts per pack the caller judges (a few numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .packs import END_OF_ARCHIVE

# Archive classes whose objects must be restored (thawed) before a GET; GLACIER_IR is read directly.
THAW_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class PackVerdict(Enum):
    COMPACT = "compact"
    NO_LIVE = "no live members (the delete pass's)"
    YOUNG = "newer than the newest snapshot"
    HELD = "held by an older kept snapshot"
    ABOVE = "live fraction at or above storage.pack_compact_below"
    ARCHIVED = "in an archive class (needs --include-archived)"
    THAW = "archived, restore requested: compacted by a later prune"


@dataclass(frozen=True)
class PackFacts:
    pack: str  # relative to the lab prefix
    pack_bytes: int
    live_bytes: int
    live_members: int
    storage_class: str
    young: bool = False
    held_by: str = ""  # the newest older kept snapshot that references it
    restored: bool | None = None  # archived: True a restored copy is readable, False in progress, None never asked

    @property
    def member_bytes(self) -> int:
        return max(0, self.pack_bytes - len(END_OF_ARCHIVE))

    @property
    def live_fraction(self) -> float:
        return min(1.0, self.live_bytes / self.member_bytes) if self.member_bytes else 0.0

    @property
    def archived(self) -> bool:
        return self.storage_class in THAW_CLASSES


def judge(facts: PackFacts, threshold: float, include_archived: bool) -> PackVerdict:
    """The verdict for one pack (see the module's docstring for the order)."""
    if facts.live_members == 0:
        return PackVerdict.NO_LIVE
    if facts.young:
        return PackVerdict.YOUNG
    if facts.held_by:
        return PackVerdict.HELD
    if not facts.live_fraction < threshold:
        return PackVerdict.ABOVE
    if facts.archived:
        if not include_archived:
            return PackVerdict.ARCHIVED
        if facts.restored is not True:
            return PackVerdict.THAW
    return PackVerdict.COMPACT
