"""The backup's catalog update: the catalog the next plan diffs against, written by the merge from what it verified.

Streams everything: an external sort of the backed-up entries, then a merge-join with the previous catalog.
"""

from __future__ import annotations

import heapq
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import UsageError
from ..model.records import Entry, RunSpiller, read_records, sorted_stream, write_records
from ..runs.layout import DIR_MODE, RunLayout


def write_catalog(previous: Path | None, backed_up: Iterable[Entry], deleted_file: Path | None, target: Path,
                  work_dir: Path, run_records: int = 100_000) -> int:
    """Write the catalog the next plan diffs against; return its entry count.

    new catalog = previous catalog − `deleted_file`'s entries, with every `backed_up` entry (any order) replacing or
    adding to the previous record. A planned entry that was not backed up keeps its previous record, so the next plan
    sees it as changed again. Streams everything: an external sort of `backed_up`, then a merge-join.
    """
    spiller = RunSpiller(work_dir, "catalog", run_records)
    for entry in backed_up:
        spiller.add(entry)
    fresh = sorted_stream(spiller.finish(), work_dir)
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

    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return write_records(target, merged())


def update_catalog(previous: Path | None, layout: RunLayout, target: Path, work_dir: Path,
                   backed_up: Callable[[Entry], bool] = lambda entry: True, run_records: int = 100_000) -> int:
    """`write_catalog` with the run's planned entries that `backed_up` accepts, as the plan recorded them."""
    if not layout.plan_file.is_file():
        raise UsageError("no plan.json: not a complete run directory", path=str(layout.run_dir))
    entries = (e for shard in sorted(layout.shards_dir.glob("shard-*.rec")) for e in read_records(shard)
               if backed_up(e))
    return write_catalog(previous, entries, layout.deleted_file, target, work_dir, run_records)
