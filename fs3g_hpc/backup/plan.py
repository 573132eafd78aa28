"""The planner: scan -> diff against the catalog -> shards -> plan.json (runs/files.PlanHeader). No S3, no Slurm.

Everything streams. The scan leaves sorted runs on disk; they merge into one stream sorted by path, which is
merge-joined with the catalog (sorted the same way). Planned entries go to a spill file while totals are counted;
hard-linked files go to a second spill sorted by (device, inode) so that each link group reaches one shard;
directories are diffed too (mtime, mode, owner) but never planned: the new and changed ones go to directories.rec,
which the merge records in the catalog (a directory has no object). A second pass cuts shards against a balanced
target.

With `scan.partitions` > 1 (the CLI: one per CPU) the diff runs in one process per partition of the directories
(`PartitionedDiff`: the scan splits its runs by a hash of the parent directory) and shards are cut directory by
directory from what those processes wrote; the outputs hold exactly the records the single-process diff writes.

Without a catalog (a first plan, or `--full`) there is nothing to diff: the walkers plan each directory as they list
it (`NewTreeSink`, the scan's directory sink): its planned entries sorted into one `DirectoryRun`, its
subdirectories and hard-linked files into sorted runs, the tally counted there. No runs of the whole tree are written
or read back; the planning process merges the walkers' DirectoryRun files by directory into the shards (as the
partitioned diff's), and their small runs into directories.rec and the hard-link groups. The outputs are the diff's.

Memory, whatever the size of the tree: the scan's `(workers + 1) × run_records` records; per diff process the merge's
read chunks (`records.MERGE_BUFFER_BYTES`, however many runs) and each merged run's gzip reader (~150 KiB, at most
the fan-in of 64 at once: `zlibs.GzipReader`), one catalog read chunk, one directory's planned entries and
`run_records` hard-linked entries; in the planning process one directory's planned block per partition. Without a
catalog, per walker: one directory's entries + `run_records` entries in all between its pending DirectoryRuns
(compressed), its subdirectories and its hard-linked files; in the planning process one DirectoryRun per file merged
(at most 64 files at once, `merge_directory_run_files`).
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import shutil
import struct
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from operator import attrgetter
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import __version__
from ..config import Policy, policy_to_dict
from ..errors import Fs3gError, UsageError
from ..model.catalog import CatalogError, UnreadablePaths, checked_order
from ..model.entries import EntryClass
from ..model import zlibs
from ..model.mtimes import mtime_matches
from ..model.records import (Entry, EntryKind, RecordFormatError, RecordWriter, RunSpiller, decode_records, encode_many,
                             by_key, group_hard_links, merge_chunk, merge_sorted, read_partition, read_records,
                             sorted_stream, write_records)
from ..model.sizes import GIB, KIB, MIB, TIB, format_size
from ..runs.catalog import catalog_target_mismatch
from ..runs.files import PlanHeader
from ..runs.layout import RunLayout, make_private_dir, read_json, write_json_atomic
from ..scan import IssueKind, ScanResult, ScanSettings, SpillError, check_roots, scan

PLAN_FORMAT_VERSION = 1

log = logging.getLogger(__name__)

# What one file costs an array task beyond its bytes (a request round trip, ~3.5 ms of botocore CPU), expressed as
# bytes at ~100 MB/s per task; used only to balance shards, never as a bound.
PER_FILE_COST_BYTES = 256 * KIB
# Upper edges of the size histogram's buckets; the last bucket is open.
HISTOGRAM_EDGES = (0, 1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 128 * KIB, 1 * MIB, 16 * MIB, 128 * MIB, 1 * GIB,
                   16 * GIB, 128 * GIB, 1 * TIB)


def new_run_id(now: datetime) -> str:
    """A plan's own id, `<UTC %Y%m%dT%H%M%SZ>-<8 random hex>`: names its packs (packs/<run_id>/...); a retry round
    has its own plan, so its own id."""
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{os.urandom(4).hex()}"


class Change(Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


def _catalog_seen(catalog_file: Path) -> dict[str, Any]:
    """Which catalog file the plan diffed against (a rewrite makes a new inode: the merge can tell)."""
    st = catalog_file.stat()
    return {"path": str(catalog_file), "size_bytes": st.st_size, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns,
            "mtime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat()}


def differs(now: Entry, before: Entry) -> bool:
    """Kind, size or mtime differ; an mtime at the precision its writer recorded (model/mtimes.py: the original
    tool's float strings)."""
    return now.kind is not before.kind or now.size_bytes != before.size_bytes or (
        now.mtime_ns != before.mtime_ns and not mtime_matches(now.mtime_ns, before.mtime_ns))


def directory_differs(now: Entry, before: Entry) -> bool:
    """A directory's catalog record is out of date: its mtime (an entry added or removed), mode or owner changed.
    Never a reason to upload anything: a directory has no object."""
    return differs(now, before) or (now.mode, now.uid, now.gid) != (before.mode, before.uid, before.gid)


def diff(scanned: Iterable[Entry], catalog: Iterable[Entry] | None) -> Iterator[tuple[Change, Entry]]:
    """Merge-join two path-sorted streams of uploadable entries; yields each entry once with its change.

    DELETED yields the catalog's entry; every other change yields the scanned one.
    """
    if catalog is None:
        for entry in scanned:
            yield Change.NEW, entry
        return
    old_iter = iter(catalog)
    old = next(old_iter, None)
    dir_kind = EntryKind.DIRECTORY
    for entry in scanned:
        key = entry[0]
        while old is not None and old[0] < key:
            yield Change.DELETED, old
            old = next(old_iter, None)
        if old is not None and old[0] == key:
            changed = directory_differs(entry, old) if entry[1] is dir_kind else differs(entry, old)
            yield (Change.CHANGED if changed else Change.UNCHANGED), entry
            old = next(old_iter, None)
        else:
            yield Change.NEW, entry
    while old is not None:
        yield Change.DELETED, old
        old = next(old_iter, None)


@dataclass(frozen=True)
class ShardSettings:
    max_files: int
    max_bytes: int
    per_file_cost_bytes: int = PER_FILE_COST_BYTES
    # A shard past its balanced target waits for the end of the current directory, up to this much more.
    slack: float = 0.25


def unit_bytes(unit: list[Entry]) -> int:
    """Bytes a unit uploads: hard links share one inode, so its size counts once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for entry in unit:
        if entry.kind is EntryKind.FILE and entry.nlink > 1:
            if (entry.dev, entry.ino) in seen:
                continue
            seen.add((entry.dev, entry.ino))
        total += entry.size_bytes
    return total


class ShardAssigner:
    """Streams units (an entry, or a hard-link group that must stay together) into shard numbers.

    Hard bounds: no shard over `max_files` or `max_bytes`, except a unit that alone exceeds one, which gets a shard of
    its own. Balance: the number of shards the totals need is computed first; each shard aims at an equal share of the
    cost (bytes + per-file cost) and, once there, closes at the next directory boundary (so a directory's small files
    stay together) or when `slack` is used up.
    """

    def __init__(self, settings: ShardSettings, total_files: int, total_bytes: int):
        self.settings = settings
        needed = max(1, math.ceil(total_files / settings.max_files), math.ceil(total_bytes / settings.max_bytes))
        total_cost = total_bytes + total_files * settings.per_file_cost_bytes
        self.target_cost = max(1.0, total_cost / needed)
        self.index = -1
        self.files = self.bytes = 0
        self.cost = 0.0
        self.directory: bytes | None = None
        self.sealed = True  # the next unit opens a new shard

    def _open(self) -> None:
        self.index += 1
        self.files = self.bytes = 0
        self.cost = 0.0
        self.sealed = False

    def assign(self, unit: list[Entry]) -> int:
        return self.place(len(unit), unit_bytes(unit), unit[0].directory)

    def place(self, files: int, size: int, directory: bytes) -> int:
        """Shard number for `files` entries of `size` bytes (counted once) from `directory`."""
        s = self.settings
        cost = size + files * s.per_file_cost_bytes
        if files > s.max_files or size > s.max_bytes:  # alone over a bound: a shard of its own
            self._open()
            self.sealed = True
        elif (self.sealed or self.files + files > s.max_files or self.bytes + size > s.max_bytes
              or (self.cost >= self.target_cost
                  and (directory != self.directory or self.cost + cost > self.target_cost * (1 + s.slack)))):
            self._open()
        self.files += files
        self.bytes += size
        self.cost += cost
        self.directory = directory
        return self.index

    def place_run(self, files: int, size: int, directory: bytes, first_size: int, last_size: int,
                  largest: int) -> int | None:
        """The shard of a directory's consecutive entries (none hard-linked) when `place`, called for each in turn,
        would put all of them in one shard: then the state is what those calls leave. None (nothing changed) when it
        would cut inside them; the caller places them one by one. Exact: costs are integers well inside a float's
        53 bits, and the conditions below bound every entry's test from the run's totals."""
        s = self.settings
        if largest > s.max_bytes:
            return None
        pf = s.per_file_cost_bytes
        opens = (self.sealed or self.files + 1 > s.max_files or self.bytes + first_size > s.max_bytes
                 or (self.cost >= self.target_cost and directory != self.directory))
        f0, b0, c0 = (0, 0, 0.0) if opens else (self.files, self.bytes, self.cost)
        total_cost = size + files * pf
        if f0 + files > s.max_files or b0 + size > s.max_bytes:
            return None
        # After the first entry, one opens a shard only when the cost before it reached the target and the cost with
        # it passes the slack: the cost before any of them is at most c0 + total - last, with it at most c0 + total.
        if not (c0 + total_cost - (last_size + pf) < self.target_cost
                or c0 + total_cost <= self.target_cost * (1 + s.slack)):
            return None
        if opens:
            self._open()
        self.files = f0 + files
        self.bytes = b0 + size
        self.cost = c0 + total_cost
        self.directory = directory
        return self.index


def _hardlink_key(entry: Entry) -> bytes:
    return struct.pack(">QQ", entry.dev, entry.ino) + entry.key


def _group_hardlinks(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    return group_hard_links(entries, identity=lambda e: (e.dev, e.ino))


class _Tally:
    """files and bytes per label; plain lists indexed by position keep the per-entry work in C."""

    def __init__(self, labels: Iterable[str]):
        self.labels = list(labels)
        self.files = [0] * len(self.labels)
        self.bytes = [0] * len(self.labels)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {label: {"files": f, "bytes": b} for label, f, b in zip(self.labels, self.files, self.bytes)}


class DiffTally:
    """What one pass over `diff`'s stream counts, and where it sends each entry: deleted ones to `deleted`, new and
    changed directories to `dir_records`, planned hard-linked files to `hardlinks` (cut at the end with their group),
    every other planned entry to `sink`. The single-process plan runs one; the partitioned diff one per partition,
    summed with `add` (every field is a count)."""

    def __init__(self) -> None:
        self.changes = _Tally(c.value for c in Change)  # new, changed, unchanged, deleted
        self.classes = _Tally(c.value for c in EntryClass)  # small, large, symlink
        self.histogram = _Tally(histogram_labels())
        self.directories = _Tally(c.value for c in Change)  # catalog records only: never planned, never uploaded
        self.dir_kept_unreadable = 0
        self.kept_unreadable = 0
        self.planned_count = 0
        self.planned_bytes = 0  # of the entries sent to `sink` (hard links are counted once, later)

    def run(self, changes: Iterable[tuple[Change, Entry]], threshold: int, unreachable: UnreadablePaths,
            deleted: RecordWriter, dir_records: RecordWriter, sink: Callable[[Entry], object],
            hardlinks: RunSpiller) -> None:
        # Positions in the tallies; the loop compares enum identities only (Enum hashing is a Python call).
        new, changed, unchanged, deleted_change = Change.NEW, Change.CHANGED, Change.UNCHANGED, Change.DELETED
        file_kind, dir_kind = EntryKind.FILE, EntryKind.DIRECTORY
        tally, klasses, histogram, directories = self.changes, self.classes, self.histogram, self.directories
        edges = HISTOGRAM_EDGES
        planned_count = planned_bytes = kept_unreadable = dir_kept_unreadable = 0
        try:
            for change, entry in changes:
                size = entry[2]
                if entry[1] is dir_kind:
                    slot = 0 if change is new else 1 if change is changed else 2 if change is unchanged else 3
                    directories.files[slot] += 1
                    if change is deleted_change:
                        if unreachable.covers(entry.path):
                            dir_kept_unreadable += 1
                        else:
                            deleted.write(entry)
                    elif change is not unchanged:
                        dir_records.write(entry)  # the merge puts it in the catalog
                    continue
                slot = 0 if change is new else 1 if change is changed else 2 if change is unchanged else 3
                tally.files[slot] += 1
                tally.bytes[slot] += size
                if change is deleted_change:
                    if unreachable.covers(entry.path):
                        kept_unreadable += 1  # not seen, not gone: the catalog keeps it
                    else:
                        deleted.write(entry)
                    continue
                is_file = entry[1] is file_kind
                if is_file:
                    bucket = bisect_left(edges, size)
                    histogram.files[bucket] += 1
                    histogram.bytes[bucket] += size
                if change is unchanged:
                    continue
                klass = (0 if size <= threshold else 1) if is_file else 2
                klasses.files[klass] += 1
                klasses.bytes[klass] += size
                planned_count += 1
                if is_file and entry[11] > 1:  # hard-linked: cut at the end with its group
                    hardlinks.add(entry)
                else:
                    sink(entry)
                    planned_bytes += size
        finally:
            self.planned_count += planned_count
            self.planned_bytes += planned_bytes
            self.kept_unreadable += kept_unreadable
            self.dir_kept_unreadable += dir_kept_unreadable

    def add(self, other: "DiffTally") -> None:
        for mine, theirs in ((self.changes, other.changes), (self.classes, other.classes),
                             (self.histogram, other.histogram), (self.directories, other.directories)):
            mine.files = [a + b for a, b in zip(mine.files, theirs.files)]
            mine.bytes = [a + b for a, b in zip(mine.bytes, theirs.bytes)]
        self.dir_kept_unreadable += other.dir_kept_unreadable
        self.kept_unreadable += other.kept_unreadable
        self.planned_count += other.planned_count
        self.planned_bytes += other.planned_bytes


def histogram_labels() -> list[str]:
    labels = ["0 B"]
    for low, high in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:]):
        labels.append(f"{format_size(low + 1) if low else '1 B'} - {format_size(high)}")
    labels.append(f"> {format_size(HISTOGRAM_EDGES[-1])}")
    return labels


@dataclass(frozen=True)
class PlanOptions:
    full: bool = False
    catalog: Path | None = None  # None: no catalog, everything is new
    scan: ScanSettings = ScanSettings()
    max_array_size: int = 1001
    max_array_size_source: str = "default"
    # Called once the roots and the run directory are checked, before the scan: the catalog to diff against, made
    # current from the bucket's snapshots (snapshots/baseline.py); None keeps `catalog` as it is.
    prepare_catalog: Callable[[], Path] | None = None
    # Without a catalog, plan in the walkers (NewTreeSink); False diffs the scan's runs as with a catalog (the tests
    # compare the two).
    plan_in_walk: bool = True


@dataclass
class PlanSummary:
    run_dir: Path
    header: dict

    def lines(self) -> list[str]:
        h = self.header
        t, ch, cls = h["scan"], h["changes"], h["planned_by_class"]
        planned = h["planned"]
        return [
            f"plan: {self.run_dir}",
            f"  scanned  {t['entries']:,} entries: {t['files']:,} files {format_size(t['file_bytes'])}, "
            f"{t['symlinks']:,} symlinks, {t['directories']:,} directories",
            f"  planned  {planned['files']:,} entries {format_size(planned['bytes'])} "
            f"(new {ch['new']['files']:,}, changed {ch['changed']['files']:,}); unchanged {ch['unchanged']['files']:,}; "
            f"deleted {ch['deleted']['files']:,}; skipped {h['skipped']:,}"
            + (f" (see {RunLayout(self.run_dir).skipped_file.name})" if h["skipped"] else ""),
            f"  classes  small {cls['small']['files']:,} ({format_size(cls['small']['bytes'])}), "
            f"large {cls['large']['files']:,} ({format_size(cls['large']['bytes'])}), "
            f"symlinks {cls['symlink']['files']:,}",
            f"  shards   {h['shard_count']:,} (at most {h['shard_bounds']['max_files']:,} files / "
            f"{format_size(h['shard_bounds']['max_bytes'])} each); arrays {h['arrays']['count']} "
            f"(MaxArraySize {h['arrays']['max_array_size']}, {h['arrays']['source']})",
        ]


def make_plan(policy: Policy, run_dir: Path, options: PlanOptions, now: datetime | None = None) -> PlanSummary:
    """Scan the policy's roots and write a complete run directory. Raises UsageError for bad input."""
    now = now or datetime.now(timezone.utc)
    check_roots(policy.roots)  # before anything is written
    existed = run_dir.exists()
    layout = RunLayout(make_private_dir(run_dir))
    try:
        work = make_private_dir(layout.work_dir)
        try:
            return _make_plan(policy, layout, work, options, now)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        # A run directory without plan.json is no plan: leave nothing half-written behind.
        if existed:
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _make_plan(policy: Policy, layout: RunLayout, work: Path, options: PlanOptions, now: datetime) -> PlanSummary:
    threshold = policy.storage.small_file_threshold_bytes
    if options.prepare_catalog is not None:
        options = replace(options, catalog=options.prepare_catalog(), prepare_catalog=None)
    if not options.full and options.catalog is not None and options.catalog.is_file():
        moved = catalog_target_mismatch(policy)
        if moved:
            raise UsageError(moved, path=str(options.catalog),
                             hint="an incremental backup would skip files the new place lacks: run with --full")
    catalog_file = None if options.full else options.catalog
    if catalog_file is not None and not catalog_file.is_file():
        catalog_file = None
    started = time.monotonic()
    run_records = options.scan.run_records
    sink_factory: Callable[[str], NewTreeSink] | None = None
    if catalog_file is None and options.plan_in_walk:
        sink_factory = lambda tag: NewTreeSink(work, tag, threshold, run_records)  # noqa: E731
    result = scan(policy.roots, policy.exclude, work, options.scan, directory_sink=sink_factory)
    log.info("scan: %d entries in %.1f s", result.counts.entries, time.monotonic() - started)

    catalog_stream = None
    if catalog_file is not None:
        catalog_stream = checked_order(read_records(catalog_file), str(catalog_file))

    tally = DiffTally()
    unreachable = UnreadablePaths(i.path for i in result.issues() if i.kind is IssueKind.UNREADABLE)
    shard_settings = ShardSettings(policy.shards.max_files, policy.shards.max_bytes)
    # A walk held in memory (a small tree) is diffed here; a walk in runs, one process per partition.
    partitions = options.scan.partitions if result.runs else 1
    cutter: ShardCutter | None = None
    planned: RecordWriter | None = None
    partitioned: PartitionedDiff | None = None
    walked: list[NewTreeResult] = result.sink_results
    try:
        if sink_factory is not None:
            for done in walked:
                tally.add(done.tally)
            write_records(layout.deleted_file, ())
            write_records(layout.directories_file,
                          sorted_stream([r for done in walked for r in done.directory_runs], work))
            link_runs = [r for done in walked for r in done.hardlink_runs]
        elif partitions > 1:
            partitioned = PartitionedDiff(result, catalog_file, work, threshold, unreachable, options.scan)
            tally = partitioned.run(layout)
            link_runs = partitioned.hardlink_runs
        else:
            scanned = (e for e in result.sorted_entries(work)
                       if e[1] is EntryKind.FILE or e[1] is EntryKind.SYMLINK or e[1] is EntryKind.DIRECTORY)
            hardlinks = RunSpiller(work, "hardlinks", options.scan.run_records, key=_hardlink_key)
            # Without a catalog everything scanned is planned, so the scan's totals set the balance target now and
            # shards are cut in this same pass. With one, planned entries are spilled first and cut once their totals
            # are known (a pass over what changed, not over the tree).
            if catalog_stream is None:
                c = result.counts
                cutter = ShardCutter(layout, ShardAssigner(shard_settings, c.files + c.symlinks, c.file_bytes),
                                     threshold)
                sink = cutter.add
            else:
                planned = RecordWriter(work / "planned.rec")
                sink = planned.write
            with RecordWriter(layout.deleted_file) as deleted, RecordWriter(layout.directories_file) as dir_records:
                tally.run(diff(scanned, catalog_stream), threshold, unreachable, deleted, dir_records, sink, hardlinks)
            link_runs = hardlinks.finish()
        planned_count, planned_bytes = tally.planned_count, tally.planned_bytes
        log.info("diff: %d planned, %.1f s since start", planned_count, time.monotonic() - started)

        link_file: Path | None = None
        if link_runs:  # one sorted file, read twice: once for the bytes (an inode counts once), once to cut shards
            link_file = work / "hardlinks.rec"
            write_records(link_file, sorted_stream(link_runs, work, key=_hardlink_key))
            planned_bytes += _unique_inode_bytes(read_records(link_file))
        if partitioned is not None or sink_factory is not None:
            c = result.counts
            totals = (c.files + c.symlinks, c.file_bytes) if catalog_file is None else (planned_count, planned_bytes)
            cutter = ShardCutter(layout, ShardAssigner(shard_settings, *totals), threshold)
            if partitioned is not None:
                partitioned.cut(cutter)
            else:
                cut_directory_runs([r for done in walked for r in done.block_files], work, cutter)
        elif planned is not None:
            planned.close()
            planned = None
            cutter = ShardCutter(layout, ShardAssigner(shard_settings, planned_count, planned_bytes), threshold)
            for entry in read_records(work / "planned.rec"):
                cutter.add(entry)
        assert cutter is not None
        if link_file is not None:
            for group in _group_hardlinks(read_records(link_file)):
                cutter.add_group(group)
        shards = cutter.finish()
    except RecordFormatError as e:
        raise CatalogError(str(e), path=str(catalog_file), hint="rerun with --full") from e
    finally:
        if planned is not None:
            planned.abort()
        if cutter is not None:
            cutter.abort()

    log.info("shards: %d written, %.1f s since start", len(shards), time.monotonic() - started)
    skipped = _copy_issues(result.issues_files, layout.skipped_file)
    arrays = math.ceil(len(shards) / options.max_array_size) if shards else 0
    header = {
        "format": PLAN_FORMAT_VERSION,
        "tool_version": __version__,
        "created": now.astimezone(timezone.utc).isoformat(),
        "run_id": new_run_id(now),
        "lab": policy.lab.name,
        "policy_files": list(policy.source_files),
        "policy": policy_to_dict(policy),
        "roots": list(policy.roots),
        "full": options.full,
        "catalog": None if catalog_file is None else _catalog_seen(catalog_file),
        "small_file_threshold_bytes": threshold,
        "scan": vars(result.counts),
        "changes": tally.changes.as_dict(),
        "planned": {"files": planned_count, "bytes": planned_bytes},  # hard-linked inodes once
        "planned_by_class": tally.classes.as_dict(),
        "size_histogram": [{"bucket": label, **counts} for label, counts in tally.histogram.as_dict().items()],
        "skipped": skipped,
        "kept_unreadable": tally.kept_unreadable + tally.dir_kept_unreadable,
        # Directories (in the catalog only, see directories.rec): counts per change, never in the totals above.
        "directories": {**{label: n for label, n in zip(tally.directories.labels, tally.directories.files)},
                        "kept_unreadable": tally.dir_kept_unreadable},
        "shard_bounds": {"max_files": policy.shards.max_files, "max_bytes": policy.shards.max_bytes},
        "shard_count": len(shards),
        "shards": shards,
        "arrays": {"count": arrays, "max_array_size": options.max_array_size,
                   "source": options.max_array_size_source},
    }
    write_json_atomic(layout.plan_file, header)
    return PlanSummary(layout.run_dir, header)


def _unique_inode_bytes(entries: Iterable[Entry]) -> int:
    total, last = 0, None
    for entry in entries:
        if (entry.dev, entry.ino) != last:
            total += entry.size_bytes
            last = (entry.dev, entry.ino)
    return total


class ShardCutter:
    """Numbers entries with a ShardAssigner and writes each shard's record file and summary as it goes."""

    def __init__(self, layout: RunLayout, assigner: ShardAssigner, threshold: int):
        self.layout = layout
        self.assigner = assigner
        self.threshold = threshold
        self.summaries: list[dict] = []
        self._writer: RecordWriter | None = None
        self._current = -1
        self._info: dict = {}
        make_private_dir(layout.shards_dir)

    def _switch(self, index: int) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.layout.shard_file(index)
        self._writer = RecordWriter(path)
        self._current = index
        self._info = {"index": index, "file": path.name, "files": 0, "bytes": 0,
                      **{f"{c.value}_files": 0 for c in EntryClass}, "hardlinked_files": 0}
        self.summaries.append(self._info)

    def add(self, entry: Entry) -> None:
        """One entry of the path-ordered stream (not hard-linked)."""
        size, key = entry[2], entry[0]
        index = self.assigner.place(1, size, key[:key.rfind(b"\0")])
        if index != self._current:
            self._switch(index)
        self._writer.write(entry)  # type: ignore[union-attr]
        info = self._info
        info["files"] += 1
        info["bytes"] += size
        if entry[1] is EntryKind.FILE:
            info["small_files" if size <= self.threshold else "large_files"] += 1
        else:
            info["symlink_files"] += 1

    def add_run(self, run: "DirectoryRun", where: str) -> None:
        """A directory's planned entries (not hard-linked), in path order: as `add` of each would place them."""
        index = self.assigner.place_run(run.files, run.bytes, run.directory, run.first_size, run.last_size,
                                        run.largest)
        if index is None:  # a cut inside the directory: entry by entry
            for entry in decode_records(zlibs.decompress(run.blob), where):
                self.add(entry)
            return
        if index != self._current:
            self._switch(index)
        self._writer.write_encoded(zlibs.decompress(run.blob), run.files)  # type: ignore[union-attr]
        info = self._info
        info["files"] += run.files
        info["bytes"] += run.bytes
        info["small_files"] += run.small
        info["large_files"] += run.large
        info["symlink_files"] += run.files - run.small - run.large

    def add_group(self, group: list[Entry]) -> None:
        """A hard-link group: one shard for all its members."""
        index = self.assigner.assign(group)
        if index != self._current:
            self._switch(index)
        info = self._info
        info["bytes"] += unit_bytes(group)
        info["hardlinked_files"] += len(group)  # tells `status` to count their bytes once
        for entry in group:
            self._writer.write(entry)  # type: ignore[union-attr]
            info["files"] += 1
            info["small_files" if entry[2] <= self.threshold else "large_files"] += 1

    def finish(self) -> list[dict]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.summaries

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


# -- the partitioned diff ---------------------------------------------------------------------------------------------

_RUN_HEADER = struct.Struct("<IIQQQQQQI")  # directory length, files, bytes, small, large, first, last, largest, blob


@dataclass(frozen=True)
class DirectoryRun:
    """One directory's planned entries (none hard-linked) as a diff process hands them to the shard cut: the records,
    encoded and compressed, with the totals the cut needs to place them without decoding them."""

    key_prefix: bytes  # directory + NUL: sorts runs as their entries sort
    files: int
    bytes: int
    small: int
    large: int
    first_size: int
    last_size: int
    largest: int
    blob: bytes

    @property
    def directory(self) -> bytes:
        return self.key_prefix[:-1]


class DirectoryRunWriter:
    """Collects a path-ordered stream of planned entries into one DirectoryRun per directory, appended to a work file
    (owner-only). Memory: one directory's planned entries."""

    def __init__(self, path: Path, threshold: int):
        self.path = path
        self.threshold = threshold
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._out = os.fdopen(fd, "wb", buffering=1 << 20)
        self._prefix = b"\0\0"  # no key starts with two NULs
        self._entries: list[Entry] = []

    def add(self, entry: Entry) -> None:
        key = entry[0]
        if not key.startswith(self._prefix):
            if self._entries:
                self._flush()
            self._prefix = key[:key.rfind(b"\0") + 1]
        self._entries.append(entry)

    def _flush(self) -> None:
        entries, self._entries = self._entries, []
        self._out.write(encode_directory_run(self._prefix, entries, self.threshold))

    def close(self) -> None:
        if self._entries:
            self._flush()
        self._out.close()


def encode_directory_run(prefix: bytes, entries: list[Entry], threshold: int) -> bytes:
    """One DirectoryRun as its file holds it: the header, the key prefix, the compressed records of `entries` (one
    directory's planned entries, none hard-linked, sorted, at least one)."""
    sizes = [e[2] for e in entries]
    file_kind = EntryKind.FILE
    file_sizes = [e[2] for e in entries if e[1] is file_kind]
    small = len([size for size in file_sizes if size <= threshold])
    large = len(file_sizes) - small
    blob = zlibs.compress(encode_many(entries), 1)
    return b"".join((_RUN_HEADER.pack(len(prefix), len(entries), sum(sizes), small, large, sizes[0], sizes[-1],
                                      max(sizes), len(blob)), prefix, blob))


def read_directory_runs(path: Path, buffering: int = 1 << 20) -> Iterator[DirectoryRun]:
    """The runs of one DirectoryRunWriter file, in order; holds one at a time."""
    header = _RUN_HEADER
    with open(path, "rb", buffering=buffering) as f:
        while True:
            head = f.read(header.size)
            if not head:
                return
            if len(head) < header.size:
                raise RecordFormatError(f"{path}: truncated directory run")
            n, files, size, small, large, first, last, largest, blob_len = header.unpack(head)
            prefix = f.read(n)
            blob = f.read(blob_len)
            if len(prefix) < n or len(blob) < blob_len:
                raise RecordFormatError(f"{path}: truncated directory run")
            yield DirectoryRun(prefix, files, size, small, large, first, last, largest, blob)


def _write_directory_runs(path: Path, runs: Iterable[DirectoryRun]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb", buffering=1 << 20) as out:
        for run in runs:
            out.write(_RUN_HEADER.pack(len(run.key_prefix), run.files, run.bytes, run.small, run.large,
                                       run.first_size, run.last_size, run.largest, len(run.blob)))
            out.write(run.key_prefix)
            out.write(run.blob)


def merge_directory_run_files(paths: list[Path], work: Path, fan_in: int = 64) -> Iterator[DirectoryRun]:
    """The DirectoryRuns of files each sorted by key prefix, as one stream in that order: merged in groups of
    `fan_in` files until that many remain (at most `fan_in` open at once, each read with its share of
    records.MERGE_BUFFER_BYTES)."""
    level = 0
    while len(paths) > fan_in:
        merged = []
        for i in range(0, len(paths), fan_in):
            out = work / f"blocks-m{level}-{i // fan_in}.runs"
            _write_directory_runs(out, merge_directory_run_files(paths[i:i + fan_in], work, fan_in))
            merged.append(out)
        for p in paths:
            p.unlink()
        paths, level = merged, level + 1
    chunk = merge_chunk(len(paths))
    return heapq.merge(*(read_directory_runs(p, chunk) for p in paths), key=attrgetter("key_prefix"))


def cut_directory_runs(paths: list[Path], work: Path, cutter: "ShardCutter") -> None:
    """Cut the DirectoryRuns of `paths` (files each sorted by key prefix, together in path order) into shards."""
    where = str(work)
    for run in merge_directory_run_files(paths, work):
        cutter.add_run(run, where)


@dataclass
class NewTreeResult:
    """What one walker's NewTreeSink leaves (sent back from its process)."""

    tally: DiffTally
    block_files: list[Path]  # DirectoryRun files, each sorted by key prefix
    directory_runs: list[Path]  # sorted runs of the directories (all new: directories.rec)
    hardlink_runs: list[Path]  # sorted by _hardlink_key


class NewTreeSink:
    """The plan of a tree without a catalog, made in a walker directory by directory (scan.DirectorySink): every
    file and symlink is new and planned; what `DiffTally.run` over `diff(scanned, None)` would count and send, counted
    and sent here. A directory's planned entries (not hard-linked) become one DirectoryRun; pending runs, the
    directories and the hard-linked files together hold at most `run_records` entries before they are written
    (the runs sorted by key prefix into a block file, the others as sorted record runs)."""

    def __init__(self, work: Path, tag: str, threshold: int, run_records: int):
        self.work = work
        self.tag = tag
        self.threshold = threshold
        self.run_records = run_records
        self.tally = DiffTally()
        self.directories = RunSpiller(work, f"dirs-{tag}", run_records)
        self.hardlinks = RunSpiller(work, f"hardlinks-{tag}", run_records, key=_hardlink_key)
        self._blocks: list[tuple[bytes, bytes]] = []  # (key prefix, encoded DirectoryRun)
        self._block_entries = 0
        self.block_files: list[Path] = []

    def directory(self, entries: list[Entry]) -> None:
        # Column at a time (list comprehensions, sorted sizes cut by bisection): a Python loop per entry here would
        # cost as much as the walk's own.
        file_kind, symlink_kind, dir_kind = EntryKind.FILE, EntryKind.SYMLINK, EntryKind.DIRECTORY
        t = self.tally
        files = [e for e in entries if e[1] is file_kind]
        symlinks = [e for e in entries if e[1] is symlink_kind]
        if len(files) + len(symlinks) < len(entries):  # directories (special files: reported, never planned)
            dirs = [e for e in entries if e[1] is dir_kind]
            self.directories.buffer.extend(dirs)
            t.directories.files[0] += len(dirs)
        planned = files
        link_bytes = 0
        if files:
            sizes = sorted([e[2] for e in files])
            hist_files, hist_bytes = t.histogram.files, t.histogram.bytes
            low = 0
            for bucket, edge in enumerate(HISTOGRAM_EDGES):  # bucket b: edges[b-1] < size <= edges[b]
                high = bisect_right(sizes, edge, low)
                if high > low:
                    hist_files[bucket] += high - low
                    hist_bytes[bucket] += sum(sizes[low:high])
                    low = high
            if low < len(sizes):
                hist_files[-1] += len(sizes) - low
                hist_bytes[-1] += sum(sizes[low:])
            small = bisect_right(sizes, self.threshold)
            small_bytes, file_bytes = sum(sizes[:small]), sum(sizes)
            t.classes.files[0] += small
            t.classes.bytes[0] += small_bytes
            t.classes.files[1] += len(sizes) - small
            t.classes.bytes[1] += file_bytes - small_bytes
            links = [e for e in files if e[11] > 1]
            if links:  # hard-linked: cut at the end with its group
                self.hardlinks.buffer.extend(links)
                link_bytes = sum([e[2] for e in links])
                planned = [e for e in files if e[11] <= 1]
        else:
            file_bytes = 0
        if symlinks:
            symlink_bytes = sum([e[2] for e in symlinks])
            t.classes.files[2] += len(symlinks)
            t.classes.bytes[2] += symlink_bytes
            planned = planned + symlinks
        else:
            symlink_bytes = 0
        new_files = len(files) + len(symlinks)
        t.changes.files[0] += new_files
        t.changes.bytes[0] += file_bytes + symlink_bytes
        t.planned_count += new_files
        t.planned_bytes += file_bytes + symlink_bytes - link_bytes
        if planned:
            planned.sort(key=by_key)
            key = planned[0][0]
            prefix = key[:key.rfind(b"\0") + 1]
            self._blocks.append((prefix, encode_directory_run(prefix, planned, self.threshold)))
            self._block_entries += len(planned)
        if self._block_entries + len(self.directories.buffer) + len(self.hardlinks.buffer) >= self.run_records:
            self._spill()

    def _spill(self) -> None:
        try:
            if self._blocks:
                self._blocks.sort(key=by_key)
                path = self.work / f"blocks-{self.tag}-{len(self.block_files):05d}.runs"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                    for _, encoded in self._blocks:
                        out.write(encoded)
                self.block_files.append(path)
                self._blocks, self._block_entries = [], 0
            self.directories.flush()
            self.hardlinks.flush()
        except OSError as e:
            raise SpillError(f"cannot write scan run: {e.strerror or e}", path=str(self.work)) from e

    def finish(self) -> NewTreeResult:
        self._spill()
        return NewTreeResult(self.tally, self.block_files, self.directories.runs, self.hardlinks.runs)


class _PartitionFailed(Exception):
    """A diff process reported a failure; `kind` says which exception to raise in the planning process."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PartitionedDiff:
    """The diff over the cores: one process per partition of the directories (`records.directory_partition`).

    The scan leaves its runs by partition; each process merges its partition's runs, reads the catalog (skipping other
    partitions' directories by their key, without building their entries, and checking the order of its own),
    runs the same `diff` and `DiffTally`,
    and writes its deleted entries, new and changed directories, hard-linked files (a run spill) and one
    `DirectoryRun` per directory of planned entries to work files. The planning process then merges those, all in
    path order: deleted.rec and directories.rec entry by entry (both small unless the tree changed much), the shards
    directory by directory (`ShardCutter.add_run`: a directory that stays in one shard is copied as one block of
    encoded records; one that a cut splits is placed entry by entry). The outputs are the single-process plan's.

    Memory per process: its merge's read chunks (records.MERGE_BUFFER_BYTES) + one catalog read chunk + one
    directory's planned entries + `run_records` hard-linked entries; the planning process holds one DirectoryRun per
    partition. Nothing grows with the tree.
    """

    def __init__(self, result: ScanResult, catalog_file: Path | None, work: Path, threshold: int,
                 unreachable: UnreadablePaths, settings: ScanSettings):
        self.result = result
        self.catalog_file = catalog_file
        self.work = work
        self.threshold = threshold
        self.unreachable = unreachable
        self.settings = settings
        self.partitions = len(result.partition_runs)
        self.hardlink_runs: list[Path] = []

    def _files(self, p: int) -> tuple[Path, Path, Path]:
        return (self.work / f"deleted-p{p}.rec", self.work / f"directories-p{p}.rec",
                self.work / f"planned-p{p}.runs")

    def diff_partition(self, p: int) -> tuple[DiffTally, list[Path]]:
        """Partition p's diff (in a diff process, or in this one)."""
        work, n = self.work, self.partitions
        scanned = (e for e in sorted_stream(self.result.partition_runs[p], work)
                   if e[1] is EntryKind.FILE or e[1] is EntryKind.SYMLINK or e[1] is EntryKind.DIRECTORY)
        catalog: Iterator[Entry] | None = None
        if self.catalog_file is not None:
            # Each process checks the order of what it reads: the merge-join needs its partition sorted, and a damaged
            # catalog fails the plan by name as in one process.
            catalog = checked_order(read_partition(self.catalog_file, p, n), str(self.catalog_file))
        deleted_file, directories_file, runs_file = self._files(p)
        hardlinks = RunSpiller(work, f"hardlinks-p{p}", self.settings.run_records, key=_hardlink_key)
        runs = DirectoryRunWriter(runs_file, self.threshold)
        tally = DiffTally()
        try:
            with RecordWriter(deleted_file) as deleted, RecordWriter(directories_file) as dir_records:
                tally.run(diff(scanned, catalog), self.threshold, self.unreachable, deleted, dir_records, runs.add,
                          hardlinks)
        finally:
            runs.close()
        return tally, hardlinks.finish()

    def _child(self, p: int, results: Any) -> None:
        try:
            tally, links = self.diff_partition(p)
            results.put((p, tally, [str(x) for x in links], None))
        except CatalogError as e:
            results.put((p, None, [], ("catalog", e.args[0] if e.args else str(e))))
        except RecordFormatError as e:
            results.put((p, None, [], ("format", str(e))))
        except BaseException as e:  # report, never hang the parent
            results.put((p, None, [], ("error", f"{type(e).__name__}: {e}")))

    def run(self, layout: RunLayout) -> DiffTally:
        """Diff every partition in its own process, then write deleted.rec and directories.rec; the summed tally."""
        import multiprocessing
        import queue as queue_module

        ctx = multiprocessing.get_context("fork")
        results: Any = ctx.Queue()
        procs = [ctx.Process(target=self._child, args=(p, results), name=f"fs3g-diff-{p}")
                 for p in range(self.partitions)]
        for proc in procs:
            proc.start()
        total = DiffTally()
        failures: list[tuple[str, str]] = []
        try:
            for _ in procs:
                while True:
                    try:
                        p, tally, links, error = results.get(timeout=0.2)
                        break
                    except queue_module.Empty:
                        dead = [x for x in procs if x.exitcode not in (None, 0)]
                        if dead:
                            raise Fs3gError(f"diff process {dead[0].name} died with exit code {dead[0].exitcode}",
                                            hint="rerun; if it persists, run with -vv and report it")
                if error is not None:
                    failures.append(error)
                    continue
                total.add(tally)
                self.hardlink_runs.extend(Path(x) for x in links)
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        for kind, message in sorted(failures, key=lambda f: f[0] != "catalog"):
            if kind == "catalog":
                raise CatalogError(message, path=str(self.catalog_file),
                                   hint="the catalog is damaged: rerun with --full")
            if kind == "format":
                raise RecordFormatError(message)
            raise Fs3gError(f"diff failed: {message}")
        for target, index in ((layout.deleted_file, 0), (layout.directories_file, 1)):
            parts = [self._files(p)[index] for p in range(self.partitions)]
            write_records(target, merge_sorted(parts))
        return total

    def cut(self, cutter: "ShardCutter") -> None:
        """Cut the planned entries of every partition into shards, in path order, directory by directory."""
        cut_directory_runs([self._files(p)[2] for p in range(self.partitions)], self.work, cutter)


def _copy_issues(sources: Iterable[Path], target: Path) -> int:
    count = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        for source in sources:
            with open(source, encoding="ascii") as f:
                for line in f:
                    out.write(line)
                    count += 1
    return count


def make_retry_plan(parent: Path, failed_entries: Path, now: datetime | None = None) -> PlanSummary:
    """A run of exactly what `parent`'s merge failed: `parent/retry-N`, cut into shards like any plan."""
    now = now or datetime.now(timezone.utc)
    parent_file = RunLayout(parent).plan_file
    parent_header = read_json(parent_file)
    policy = PlanHeader.from_json(parent_header, parent_file).policy_snapshot(parent_file)
    round_ = parent_header.get("retry_round", 0) + 1
    root_run = Path(parent_header.get("retry_of") or parent)
    layout = RunLayout(make_private_dir(parent / f"retry-{round_}"))
    threshold = policy.storage.small_file_threshold_bytes
    files = size = 0
    for entry in read_records(failed_entries):  # totals first: the assigner balances against them
        files += 1
        size += entry.size_bytes
    cutter = ShardCutter(layout, ShardAssigner(ShardSettings(policy.shards.max_files, policy.shards.max_bytes),
                                               files, size), threshold)
    try:
        for entry in read_records(failed_entries):
            cutter.add(entry)
        shards = cutter.finish()
    finally:
        cutter.abort()
    write_records(layout.deleted_file, ())
    write_records(layout.directories_file, ())  # the parent's merge recorded its directories
    layout.skipped_file.touch(mode=0o600)
    zero = {"files": 0, "bytes": 0}
    header = {**parent_header, "created": now.isoformat(), "run_id": new_run_id(now), "retry_of": str(root_run),
              "retry_round": round_,
              "full": False, "catalog": parent_header.get("catalog"), "skipped": 0, "kept_unreadable": 0,
              "directories": {**{c.value: 0 for c in Change}, "kept_unreadable": 0},
              "changes": {"new": zero, "changed": {"files": files, "bytes": size}, "unchanged": zero,
                          "deleted": zero},
              "planned": {"files": files, "bytes": size}, "shard_count": len(shards), "shards": shards,
              "arrays": {**parent_header["arrays"],
                         "count": math.ceil(len(shards) / parent_header["arrays"]["max_array_size"])}}
    write_json_atomic(layout.plan_file, header)
    return PlanSummary(layout.run_dir, header)
