"""The planner: scan -> diff against the catalog -> shards -> manifest. No S3, no Slurm.

Everything streams. The scan leaves sorted runs on disk; they merge into one stream sorted by path, which is
merge-joined with the catalog (sorted the same way). Planned entries go to a spill file while totals are counted;
hard-linked files go to a second spill sorted by (device, inode) so that each link group reaches one shard. A second
pass cuts shards against a balanced target. Memory is bounded by the scan's `workers × run_records` records plus one
record per open run file, whatever the size of the tree.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Iterable, Iterator

from . import __version__
from .config import Policy, policy_to_dict
from .errors import UsageError
from .manifest import PLAN_FORMAT_VERSION, RunLayout, make_private_dir, write_json_atomic
from .records import (Entry, EntryKind, RecordFormatError, RecordWriter, RunSpiller, read_records, sorted_stream,
                      write_records)
from .scan import ScanSettings, check_roots, scan
from .sizes import GIB, KIB, MIB, TIB, format_size

# What one file costs an array task beyond its bytes (a request round trip, ~3.5 ms of botocore CPU), expressed as
# bytes at ~100 MB/s per task; used only to balance shards, never as a bound.
PER_FILE_COST_BYTES = 256 * KIB
# Upper edges of the size histogram's buckets; the last bucket is open.
HISTOGRAM_EDGES = (0, 1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 128 * KIB, 1 * MIB, 16 * MIB, 128 * MIB, 1 * GIB,
                   16 * GIB, 128 * GIB, 1 * TIB)


class Change(Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


class EntryClass(Enum):
    """The original tool's classes: small files (one PUT), large files (multipart, archived), symlinks."""

    SMALL = "small"
    LARGE = "large"
    SYMLINK = "symlink"


def classify(entry: Entry, small_threshold_bytes: int) -> EntryClass | None:
    """None for what is never uploaded (directories, special files)."""
    if entry.kind is EntryKind.SYMLINK:
        return EntryClass.SYMLINK
    if entry.kind is EntryKind.FILE:
        return EntryClass.SMALL if entry.size_bytes <= small_threshold_bytes else EntryClass.LARGE
    return None


def uploadable(entry: Entry) -> bool:
    return entry.kind in (EntryKind.FILE, EntryKind.SYMLINK)


def differs(now: Entry, before: Entry) -> bool:
    return now.kind is not before.kind or now.size_bytes != before.size_bytes or now.mtime_ns != before.mtime_ns


class CatalogError(UsageError):
    """A catalog that is not sorted, not ours, or truncated."""


def _checked_order(entries: Iterable[Entry], where: str) -> Iterator[Entry]:
    previous = b""
    for entry in entries:
        key = entry.key
        if key <= previous and previous:
            raise CatalogError(f"entries out of order at {entry.path!r}", path=where,
                               hint="the catalog is damaged: rerun with --full")
        previous = key
        yield entry


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
    for entry in scanned:
        key = entry.key
        while old is not None and old.key < key:
            yield Change.DELETED, old
            old = next(old_iter, None)
        if old is not None and old.key == key:
            yield (Change.CHANGED if differs(entry, old) else Change.UNCHANGED), entry
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
        s = self.settings
        n, size = len(unit), unit_bytes(unit)
        cost = size + n * s.per_file_cost_bytes
        directory = unit[0].path.rpartition(b"/")[0]
        if n > s.max_files or size > s.max_bytes:  # alone over a bound: a shard of its own
            self._open()
            self.sealed = True
        else:
            over_hard = self.files + n > s.max_files or self.bytes + size > s.max_bytes
            at_target = self.cost >= self.target_cost
            over_slack = self.cost + cost > self.target_cost * (1 + s.slack)
            if self.sealed or over_hard or (at_target and (directory != self.directory or over_slack)):
                self._open()
        self.files += n
        self.bytes += size
        self.cost += cost
        self.directory = directory
        return self.index


def _hardlink_key(entry: Entry) -> bytes:
    return struct.pack(">QQ", entry.dev, entry.ino) + entry.key


def _group_hardlinks(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    group: list[Entry] = []
    for entry in entries:
        if group and (entry.dev, entry.ino) != (group[0].dev, group[0].ino):
            yield group
            group = []
        group.append(entry)
    if group:
        yield group


@dataclass
class ClassTotals:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class PlanTotals:
    changes: dict[str, ClassTotals] = field(default_factory=lambda: {c.value: ClassTotals() for c in Change})
    planned_by_class: dict[str, ClassTotals] = field(
        default_factory=lambda: {c.value: ClassTotals() for c in EntryClass})
    histogram: list[ClassTotals] = field(default_factory=lambda: [ClassTotals() for _ in range(len(HISTOGRAM_EDGES) + 1)])

    def add_histogram(self, size: int) -> None:
        for i, edge in enumerate(HISTOGRAM_EDGES):
            if size <= edge:
                self.histogram[i].add(size)
                return
        self.histogram[-1].add(size)


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
    result = scan(policy.roots, policy.exclude, work, options.scan)
    catalog_file = None if options.full else options.catalog
    if catalog_file is not None and not catalog_file.is_file():
        catalog_file = None
    catalog_stream = None
    if catalog_file is not None:
        catalog_stream = _checked_order(read_records(catalog_file), str(catalog_file))

    totals = PlanTotals()
    scanned = (e for e in sorted_stream(result.runs, work) if uploadable(e))
    hardlinks = RunSpiller(work, "hardlinks", options.scan.run_records, key=_hardlink_key)
    planned_count = planned_bytes = 0
    try:
        with RecordWriter(work / "planned.rec") as planned, RecordWriter(layout.deleted_file) as deleted:
            for change, entry in diff(scanned, catalog_stream):
                totals.changes[change.value].add(entry.size_bytes)
                if change is Change.DELETED:
                    deleted.write(entry)
                    continue
                if entry.kind is EntryKind.FILE:
                    totals.add_histogram(entry.size_bytes)
                if change is Change.UNCHANGED:
                    continue
                klass = classify(entry, threshold)
                assert klass is not None  # `scanned` holds uploadable entries only
                totals.planned_by_class[klass.value].add(entry.size_bytes)
                planned_count += 1
                if entry.kind is EntryKind.FILE and entry.nlink > 1:
                    hardlinks.add(entry)
                else:
                    planned.write(entry)
                    planned_bytes += entry.size_bytes
    except RecordFormatError as e:
        raise CatalogError(str(e), path=str(catalog_file), hint="rerun with --full") from e

    link_file: Path | None = None
    link_runs = hardlinks.finish()
    if link_runs:  # one sorted file, read twice: once for the bytes (an inode counts once), once to cut shards
        link_file = work / "hardlinks.rec"
        write_records(link_file, sorted_stream(link_runs, work, key=_hardlink_key))
        planned_bytes += _unique_inode_bytes(read_records(link_file))

    assigner = ShardAssigner(ShardSettings(policy.shards.max_files, policy.shards.max_bytes),
                             planned_count, planned_bytes)
    units = _units(read_records(work / "planned.rec"), read_records(link_file) if link_file else ())
    shards = _write_shards(layout, assigner, units, threshold)

    skipped = _copy_issues(result.issues_files, layout.skipped_file)
    arrays = math.ceil(len(shards) / options.max_array_size) if shards else 0
    header = {
        "format": PLAN_FORMAT_VERSION,
        "tool_version": __version__,
        "created": now.astimezone(timezone.utc).isoformat(),
        "lab": policy.lab.name,
        "policy_files": list(policy.source_files),
        "policy": policy_to_dict(policy),
        "roots": list(policy.roots),
        "full": options.full,
        "catalog": None if catalog_file is None else {
            "path": str(catalog_file), "size_bytes": catalog_file.stat().st_size,
            "mtime": datetime.fromtimestamp(catalog_file.stat().st_mtime, timezone.utc).isoformat()},
        "small_file_threshold_bytes": threshold,
        "scan": vars(result.counts),
        "changes": {k: vars(v) for k, v in totals.changes.items()},
        "planned": {"files": planned_count, "bytes": planned_bytes},  # hard-linked inodes once
        "planned_by_class": {k: vars(v) for k, v in totals.planned_by_class.items()},
        "size_histogram": [{"bucket": label, **vars(b)} for label, b in zip(histogram_labels(), totals.histogram)],
        "skipped": skipped,
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


def _units(planned: Iterable[Entry], linked: Iterable[Entry]) -> Iterator[list[Entry]]:
    for entry in planned:
        yield [entry]
    yield from _group_hardlinks(linked)


def _write_shards(layout: RunLayout, assigner: ShardAssigner, units: Iterable[list[Entry]],
                  threshold: int) -> list[dict]:
    make_private_dir(layout.shards_dir)
    shards: list[dict] = []
    writer: RecordWriter | None = None
    current = -1
    try:
        for unit in units:
            index = assigner.assign(unit)
            if index != current:
                if writer is not None:
                    writer.close()
                writer = RecordWriter(layout.shard_file(index))
                current = index
                shards.append({"index": index, "file": layout.shard_file(index).name, "files": 0, "bytes": 0,
                               **{f"{c.value}_files": 0 for c in EntryClass}})
            info = shards[-1]
            info["bytes"] += unit_bytes(unit)
            for entry in unit:
                writer.write(entry)  # type: ignore[union-attr]
                info["files"] += 1
                info[f"{classify(entry, threshold).value}_files"] += 1  # type: ignore[union-attr]
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return shards


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
