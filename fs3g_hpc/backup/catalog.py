"""The backup's catalog update: the catalog the next plan diffs against, written by the merge from what it verified.

Streams everything: an external sort of the backed-up entries, then a merge-join with the previous catalog. Then the
lab's packs.jsonl (runs/catalog.PackUsage) is recomputed from the new catalog: memory one counter per pack (and the
offsets of hard-linked packed files, which share one member's bytes), never one per file.
"""

from __future__ import annotations

import heapq
import json
import os
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import UsageError
from ..model.packs import BLOCK, PackRef
from ..model.records import Entry, RunSpiller, read_records, write_records
from ..runs.catalog import PackUsage
from ..runs.layout import DIR_MODE, FILE_MODE, RunLayout


def write_catalog(previous: Path | None, backed_up: Iterable[Entry], deleted_file: Path | None, target: Path,
                  work_dir: Path, run_records: int = 100_000, *, observe: Callable[[Entry], None] | None = None) -> int:
    """Write the catalog the next plan diffs against; return its entry count.

    new catalog = previous catalog − `deleted_file`'s entries, with every `backed_up` entry (any order) replacing or
    adding to the previous record. A planned entry that was not backed up keeps its previous record, so the next plan
    sees it as changed again. Streams everything: an external sort of `backed_up` (RunSpiller.sorted), then a
    merge-join. `observe` sees every record written, in order (the pack usage counts them in the same pass).
    """
    spiller = RunSpiller(work_dir, "catalog", run_records)
    for entry in backed_up:
        spiller.add(entry)
    return write_sorted_catalog(previous, spiller.sorted(), deleted_file, target, observe=observe)


def write_sorted_catalog(previous: Path | None, fresh: Iterator[Entry], deleted_file: Path | None, target: Path, *,
                         observe: Callable[[Entry], None] | None = None) -> int:
    """`write_catalog` of entries already in key order (`fresh`, one record per key)."""
    old = read_records(previous) if previous is not None and previous.is_file() else iter(())
    gone = (e.key for e in read_records(deleted_file)) if deleted_file and deleted_file.is_file() else iter(())

    def merged() -> Iterator[Entry]:
        next_gone = next(gone, None)
        tagged = heapq.merge(((e.key, 1, e) for e in old), ((e.key, 0, e) for e in fresh), key=itemgetter(0, 1))
        for key, group in groupby(tagged, key=itemgetter(0)):
            first = next(group)  # the fresh record sorts first (tag 0) when both exist
            while next_gone is not None and next_gone < key:
                next_gone = next(gone, None)
            if first[1] == 1 and next_gone == key:
                continue  # deleted from disk since the last catalog
            yield first[2]

    def observed() -> Iterator[Entry]:
        assert observe is not None
        for entry in merged():
            observe(entry)
            yield entry

    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return write_records(target, merged() if observe is None else observed())


def update_catalog(previous: Path | None, layout: RunLayout, target: Path, work_dir: Path,
                   backed_up: Callable[[Entry], bool] = lambda entry: True, run_records: int = 100_000) -> int:
    """`write_catalog` with the run's planned entries that `backed_up` accepts, as the plan recorded them."""
    if not layout.plan_file.is_file():
        raise UsageError("no plan.json: not a complete run directory", path=str(layout.run_dir))
    entries = (e for shard in sorted(layout.shards_dir.glob("shard-*.rec")) for e in read_records(shard)
               if backed_up(e))
    return write_catalog(previous, entries, layout.deleted_file, target, work_dir, run_records)


class PackUsageCounter:
    """The live members and bytes of each pack, counted from catalog records (`observe`, in catalog order), then
    written as packs.jsonl with the packs' totals (`write`). Memory: one counter per pack (and the offsets of
    hard-linked packed files, which share one member's bytes), never one per file."""

    def __init__(self, where: Path):
        self.where = where
        self.live: dict[str, list[int]] = {}
        self._linked: set[tuple[str, int]] = set()

    def observe(self, entry: Entry) -> None:
        if not entry.location:
            return
        ref = PackRef.decode(entry.location, f"{self.where}: {entry.path!r}")
        counts = self.live.get(ref.pack)
        if counts is None:
            counts = self.live[ref.pack] = [0, 0]
        counts[0] += 1
        if entry.nlink > 1:
            if (ref.pack, ref.data_offset) in self._linked:
                return
            self._linked.add((ref.pack, ref.data_offset))
        counts[1] += -(-ref.data_end // BLOCK) * BLOCK - ref.header_offset

    def write(self, known: Iterable[PackUsage], written: dict[str, tuple[int, int]], target: Path) -> int:
        """packs.jsonl: every pack of `known` (the previous file's lines) and `written` (this run's packs: members,
        bytes) with its live counts; a pack only the records name has its totals unknown (0). The number of packs."""
        usage: dict[str, list[int]] = {u.pack: [u.members, u.bytes, 0, 0] for u in known}
        for pack, (members, size) in written.items():
            usage[pack] = [members, size, 0, 0]
        for pack, (members, size) in self.live.items():
            usage.setdefault(pack, [0, 0, 0, 0])[2:] = [members, size]
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for pack in sorted(usage):
                f.write(json.dumps(PackUsage(pack, *usage[pack]).to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return len(usage)


def write_packs_usage(catalog: Path, known: Iterable[PackUsage], written: dict[str, tuple[int, int]],
                      target: Path) -> int:
    """Write packs.jsonl: every pack of `known` (the previous file's lines) and `written` (this run's packs:
    members, bytes), with its live members and bytes counted from `catalog`; returns the number of packs.

    A live member's bytes are its whole span in the pack (headers, data, padding); hard links pointing at one
    member's data count it once."""
    counter = PackUsageCounter(catalog)
    for entry in read_records(catalog):
        counter.observe(entry)
    return counter.write(known, written, target)
