"""Restores: select, stage (Glacier restore requests and readiness polls), download in shards, merge.

    <run_root>/<lab>/restore-<UTC time>/          one restore run (0700)
        restore.json                              header: policy snapshot, destination, tier, days, shards; written last
        shards/shard-000000.rec ...               what each array task restores (the catalog's records, or the
                                                  bucket listing's when there is no catalog); the selected links of
                                                  one hard-linked file are contiguous in one shard
        directories.rec                           the selected directories, deepest first (from the catalog only)
        refused.jsonl                             keys that would land outside the destination: never written
        stage/state.json, stage/shard-N.json      restore requests made, objects still in progress, polls so far
        results/shard-N.journal|json|failures.jsonl
        report.json, summary.txt, failures.jsonl  written by the merge

What comes back: every file's bytes (verified), mode, mtime and atime to the nanosecond (0 and negative times
included), owner and group when run as root; symlinks as symlinks; the links of a hard-linked file (same inode in the
catalog, same size, mtime and tree hash) as hard links: the first one is downloaded and verified, the others are
linked to it (linkat, both names below the destination, no symlink followed), and only the selected links are made;
blocks of zeros are not written (the file is sized first), so sparse files keep their holes; directories, empty ones
included, with their mode, times and owner, set by the merge after every shard, deepest first (a directory's mtime
changes when a file is created in it, so it is set last). Directories and hard links come from the catalog: a
restore from the bucket listing (no catalog) makes the directories its files need, with default metadata, and
restores every link as a separate file.

Safety: every path is made relative to the requested directory and refused when a component is empty, `.`, `..` or
holds NUL; the destination is walked one component at a time with O_NOFOLLOW, so a symlink inside it (one a restore
made, or anyone else) is never followed (directories are opened the same way before their metadata is set); data
goes to a temporary file beside the target and is renamed over it only when complete and verified against its
SHA-256 tree hash; a hard link is made under a temporary name, checked to be the restored file's inode, and renamed
likewise; an existing file is left alone unless `overwrite`.

Memory of one restore task: download_workers × max(small_file_threshold_bytes, 1 MiB) (whole small objects, 1 MiB
pieces of large ones) plus one shard's journal (bounded by shards.max_files). Selecting hard links and directories
spills sorted runs of SPILL_RECORDS records; the merge streams directories.rec.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import struct
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__
from .config import ARCHIVED_CLASSES, Policy, RestoreTier, StorageClass, policy_from_snapshot, policy_to_dict
from .errors import Fs3gError, UsageError
from .runs.catalog import catalog_path, catalog_target_mismatch
from .runs.layout import (RunLayout, default_run_dir, ensure_private_dir, failures_file, journal_file,
                          make_private_dir, read_json, shard_result_file, write_json_atomic)
from .runs.shards import SequentialShardCutter
from .model.keys import LONG_DIR, PATHMAP_MAX_BYTES, KeyClass, object_key, parse_key, pathmap_key
from .model.objectmeta import TREEHASH_KEY, parse_ns
from .model.records import (Entry, EntryKind, RunSpiller, display_path, group_hard_links, hard_link_identity,
                            hard_link_sort_key, read_records, sorted_stream, write_records)
from .model.s3limits import part_size_for
from .model.sizes import format_size
from .model.treehash import LEAF_BYTES, TreeHasher
from .runs.progress import Counters, ShardProgress, progress_file, timing_fields, timing_line
from .signals import StopOnSignals
from .transfer.client import ClientSettings, make_s3_client
from .transfer.downloader import (DirectGetter, NotRestored, ObjectMissing, RequestOutcome, WholeObject, get_range,
                                  get_whole, list_with_restore_status, request_restore)
from .transfer.objects import ObjectAccessError, head_object, object_tag, read_small_object
from .transfer.lister import iter_objects

log = logging.getLogger(__name__)

RESTORE_FORMAT_VERSION = 1
LIST_THREADS = 16
JOURNAL_FLUSH_INTERVAL_S = 1.0
_FILE_KINDS = (EntryKind.FILE, EntryKind.SYMLINK)
# Blocks of zeros this long (and aligned to it) are not written, so that a sparse file comes back sparse: a multiple of
# every common filesystem block size, and few enough comparisons per GiB to cost nothing next to the download.
SPARSE_BLOCK_BYTES = 64 * 1024
_ZERO_BLOCK = bytes(SPARSE_BLOCK_BYTES)
SPILL_RECORDS = 100_000
_NO_LINK_ERRNOS = {errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP}  # records a selection spill (hard links, directories) holds in memory before writing a run


class Refused(Exception):
    """A path the restore will not write: it would leave the destination or pass through a symlink."""


class DiskFull(Exception):
    pass


# -- paths ------------------------------------------------------------------------------------------------------------

def unsafe_reason(relative: bytes) -> str | None:
    """Why a relative path may not be written under the destination, or None when it is safe."""
    if not relative:
        return "empty path"
    if relative.startswith(b"/"):
        return "absolute path"
    if b"\0" in relative:
        return "NUL byte in path"
    for part in relative.split(b"/"):
        if part in (b"", b".", b".."):
            return f"path component {part.decode() or '(empty)'!r} would leave or confuse the destination"
    return None


def _normal_request(path: str | bytes) -> bytes:
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raise UsageError("restore paths are absolute paths of the backed-up tree", path=os.fsdecode(raw))
    return os.path.normpath(raw).replace(b"//", b"/")


class Selection:
    """Which backed-up paths a restore takes, and where each one goes below the destination.

    One requested path P: a file below P goes to DEST/<its path relative to P>; P itself, when it is a file, to
    DEST/<its name>. Several: relative to their longest common directory. None: the policy's roots, likewise.
    """

    def __init__(self, requests: Iterable[str | bytes]):
        self.requests = sorted({_normal_request(p) for p in requests})
        if not self.requests:
            raise UsageError("nothing to restore: no paths and no roots")
        if len(self.requests) == 1:
            self.base = self.requests[0]
        else:
            self.base = os.path.commonpath(self.requests)

    def covers(self, path: bytes) -> bool:
        return any(path == r or path.startswith(r if r == b"/" else r + b"/") for r in self.requests)

    def relative(self, path: bytes) -> bytes:
        if path == self.base:
            relative = os.path.basename(path)
        elif self.base == b"/":
            relative = path[1:]
        elif path.startswith(self.base + b"/"):
            relative = path[len(self.base) + 1:]
        else:
            raise Refused(f"not under {display_path(self.base)}")
        reason = unsafe_reason(relative)
        if reason:
            raise Refused(reason)
        return relative


# -- run directory ----------------------------------------------------------------------------------------------------

class RestoreLayout(RunLayout):
    """A restore run."""

    @property
    def header_file(self) -> Path:
        return self.run_dir / "restore.json"

    @property
    def refused_file(self) -> Path:
        return self.run_dir / "refused.jsonl"

    @property
    def directories_file(self) -> Path:
        """The selected directories, deepest first: the merge creates them and puts their metadata back."""
        return self.run_dir / "directories.rec"

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / "stage"

    @property
    def stage_state(self) -> Path:
        return self.stage_dir / "state.json"

    def stage_file(self, index: int) -> Path:
        return self.stage_dir / f"shard-{index:06d}.json"

    def journal(self, index: int) -> Path:
        return journal_file(self, index)

    def result(self, index: int) -> Path:
        return shard_result_file(self, index)

    def failures(self, index: int) -> Path:
        return failures_file(self, index)

    @property
    def chain_file(self) -> Path:
        """The Slurm jobs of this restore so far (poll jobs, then the download arrays and the merge)."""
        return self.run_dir / "jobs" / "chain.json"


def default_restore_dir(policy: Policy, now: datetime) -> Path:
    return default_run_dir(policy, now, "restore")


def load_header(run_dir: Path) -> tuple[RestoreLayout, dict, Policy]:
    layout = RestoreLayout(run_dir)
    header = read_json(layout.header_file)
    return layout, header, policy_from_snapshot(header["policy"], f"{layout.header_file}: policy")


def _default_client(policy: Policy) -> Any:
    return make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=max(
        LIST_THREADS, 2 * policy.restore.download_workers)))


def _append_json(path: Path, record: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as f:
        f.write(json.dumps(record) + "\n")


# -- selection and shards ---------------------------------------------------------------------------------------------

def _from_catalog(catalog: Path, selection: Selection) -> Iterator[Entry]:
    for entry in read_records(catalog):
        if entry.kind in _FILE_KINDS and selection.covers(entry.path):
            yield entry
        elif entry.kind is EntryKind.DIRECTORY and entry.path != selection.base and selection.covers(entry.path):
            yield entry  # the base itself is the destination: its metadata is the destination's own


def deepest_first_key(entry: Entry) -> bytes:
    """Directories by depth, deepest first: each one comes after everything below it, so its mtime, set last, is
    not changed again by a child being created, and a read-only mode never blocks the making of a child."""
    return struct.pack(">I", 0xFFFFFFFF - entry.path.count(b"/")) + entry.key


def _from_bucket(client: Any, policy: Policy, selection: Selection) -> Iterator[Entry]:
    """The bucket's objects under the requested paths, one listing page at a time (no catalog: a bucket written by
    another machine, or by the original tool)."""
    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    for klass in KeyClass:
        kind = EntryKind.SYMLINK if klass is KeyClass.SYMLINK else EntryKind.FILE
        prefixes = [object_key(prefix, klass, r).key for r in selection.requests]
        long_dir = "/".join(p for p in (prefix, klass.value, LONG_DIR) if p) + "/"
        if b"/" not in selection.requests:
            prefixes.append(long_dir)  # hashed long paths live in one flat directory per class
        for list_prefix in prefixes:
            for key, obj in iter_objects(client, bucket, list_prefix):
                try:
                    _, path, digest = parse_key(prefix, key)
                except ValueError:
                    continue
                if digest is not None:
                    path = read_small_object(client, bucket, pathmap_key(prefix, digest), PATHMAP_MAX_BYTES)
                    if path is None:
                        log.warning("%s: no pathmap object for this hashed key; skipped", key)
                        continue
                elif key.startswith(long_dir):
                    continue
                if path is not None and selection.covers(path):
                    yield Entry.of(path, kind, obj.size_bytes, 0, 0, 0, 0, 0, 0, 0, 0, 1)


@dataclass(frozen=True)
class RestoreRequest:
    paths: tuple[str, ...]
    destination: Path
    tier: RestoreTier
    days: int
    overwrite: bool = False
    wait: bool = True  # False: download what is readable now, request the rest (the original tool's way)


def prepare_restore(policy: Policy, request: RestoreRequest, run_dir: Path, *,
                    client_factory: Callable[[Policy], Any] | None = None,
                    now: datetime | None = None) -> tuple[RestoreLayout, dict]:
    """Select, shard and write the run directory of a restore. Bad input fails before anything is written."""
    if policy.storage.archive_storage_class is StorageClass.DEEP_ARCHIVE and request.tier is RestoreTier.EXPEDITED:
        raise UsageError("DEEP_ARCHIVE has no Expedited retrieval", key="restore.tier",
                         hint="use --tier Standard (<= 12 h) or Bulk (<= 48 h)")
    selection = Selection(request.paths or policy.roots)
    if request.destination.exists() and not request.destination.is_dir():
        raise UsageError("the destination exists and is not a directory", path=str(request.destination))
    now = now or datetime.now(timezone.utc)
    layout = RestoreLayout(make_private_dir(run_dir))
    make_private_dir(layout.shards_dir)
    catalog = catalog_path(policy)
    cutter = SequentialShardCutter(layout.shards_dir, policy.shards.max_files, policy.shards.max_bytes)
    work = make_private_dir(layout.run_dir / ".work")
    # Hard-linked files and directories wait in sorted spills: links by file (one group, one shard), directories
    # deepest first (applied once, by the merge, after every file).
    links = RunSpiller(work, "links", SPILL_RECORDS, key=hard_link_sort_key)
    directories = RunSpiller(work, "dirs", SPILL_RECORDS, key=deepest_first_key)
    refused = 0
    dir_count = 0
    try:
        moved = catalog_target_mismatch(policy) if catalog.is_file() else None
        if moved:
            log.warning("%s: selecting from the bucket listing instead", moved)
        if catalog.is_file() and not moved:
            source = f"catalog {catalog}"
            entries = _from_catalog(catalog, selection)
        else:
            source = f"bucket listing of s3://{policy.s3.bucket}"
            entries = _from_bucket((client_factory or _default_client)(policy), policy, selection)
        for entry in entries:
            try:
                selection.relative(entry.path)
            except Refused as e:
                refused += 1
                _append_json(layout.refused_file, {"path": os.fsdecode(entry.path), "reason": str(e)})
                log.warning("refused %s: %s", display_path(entry.path), e)
                continue
            if entry.kind is EntryKind.DIRECTORY:
                directories.add(entry)
                dir_count += 1
            elif entry.kind is EntryKind.FILE and entry.nlink > 1:
                links.add(entry)
            else:
                cutter.add(entry)
        for group in group_hard_links(sorted_stream(links.finish(), work, key=hard_link_sort_key)):
            cutter.add_group(group)
        shards = cutter.finish()
        write_records(layout.directories_file, sorted_stream(directories.finish(), work, key=deepest_first_key))
    except BaseException:
        cutter.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not shards and not refused and not dir_count:
        shutil.rmtree(layout.run_dir, ignore_errors=True)
        raise UsageError(f"nothing is backed up under {', '.join(map(os.fsdecode, selection.requests))}",
                         path=source, hint="check the paths: they are the absolute paths the backup saw")
    header = {
        "format": RESTORE_FORMAT_VERSION,
        "tool_version": __version__,
        "created": now.isoformat(),
        "lab": policy.lab.name,
        "source": source,
        "requests": [os.fsdecode(r) for r in selection.requests],
        "base": os.fsdecode(selection.base),
        "destination": str(request.destination),
        "tier": request.tier.value,
        "days": request.days,
        "overwrite": request.overwrite,
        "wait": request.wait,
        "refused": refused,
        "shard_count": len(shards),
        # Bytes count a hard-linked file once: its other links are made, not downloaded.
        "planned": {"files": sum(s["files"] for s in shards), "bytes": sum(s["bytes"] for s in shards)},
        "directories": dir_count,
        "shards": shards,
        "policy": policy_to_dict(policy),
    }
    write_json_atomic(layout.header_file, header)
    return layout, header


# -- stage: restore requests and readiness ----------------------------------------------------------------------------

class StageVerdict(str, Enum):
    READY = "ready"  # every archived object is readable: download
    WAITING = "waiting"  # some are still being restored: poll again later
    GAVE_UP = "gave-up"  # the wait limit passed: download what is ready, report the rest


@dataclass(frozen=True)
class StageReport:
    verdict: StageVerdict
    requested: int
    pending: int
    polls: int


def _link_or_self(entry: Entry) -> object:
    return hard_link_identity(entry) if entry.kind is EntryKind.FILE and entry.nlink > 1 else object()


def restore_units(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    """A shard's entries as units: one entry, or the selected links of one file (contiguous in a shard)."""
    return group_hard_links(entries, identity=_link_or_self)


def large_key(policy: Policy, entry: Entry) -> str | None:
    if entry.kind is not EntryKind.FILE or entry.size_bytes <= policy.storage.small_file_threshold_bytes:
        return None
    return object_key(policy.s3.prefix, KeyClass.LARGE, entry.path).key


def _directory(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/"


def stage(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None,
          now_s: Callable[[], float] = time.time) -> StageReport:
    """Request a restore of every archived object once, then check which are readable. Idempotent: run it again to
    poll; objects already requested are not requested again."""
    layout, header, policy = load_header(run_dir)
    ensure_private_dir(layout.stage_dir)
    state = read_json(layout.stage_state) if layout.stage_state.exists() else {"started": now_s(), "polls": 0,
                                                                                 "requested": 0}
    client = (client_factory or _default_client)(policy)
    tier, days = header["tier"], header["days"]
    pending_total = 0
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header["shards"]:
            path = layout.stage_file(shard["index"])
            if path.exists():
                record = read_json(path)
                record["pending"] = _still_pending(client, policy.s3.bucket, record["pending"], pool)
            else:
                record = _request_shard(client, policy, layout.shard_file(shard["index"]), tier, days, pool)
                state["requested"] += record["requested"]
                record["pending"] = _still_pending(client, policy.s3.bucket, record["pending"], pool)
            write_json_atomic(path, record)
            pending_total += len(record["pending"])
    state["polls"] += 1
    state["last_poll"] = now_s()
    state["pending"] = pending_total
    waited = now_s() - state["started"]
    if pending_total == 0:
        verdict = StageVerdict.READY
    elif waited >= policy.restore.wait_limit_s or not header.get("wait", True):
        verdict = StageVerdict.GAVE_UP
    else:
        verdict = StageVerdict.WAITING
    state["verdict"] = verdict.value
    write_json_atomic(layout.stage_state, state)
    log.info("stage: %d restore requests so far, %d still in progress after poll %d: %s", state["requested"],
             pending_total, state["polls"], verdict.value)
    return StageReport(verdict, state["requested"], pending_total, state["polls"])


def _request_shard(client: Any, policy: Policy, shard_file: Path, tier: str, days: int,
                   pool: ThreadPoolExecutor) -> dict:
    """List the directories of the shard's large objects, and request a restore of each archived one."""
    bucket = policy.s3.bucket
    # One object per link group: the other links are made from the first file, never downloaded.
    keys = [k for k in (large_key(policy, unit[0]) for unit in restore_units(read_records(shard_file))) if k]
    directories = sorted({_directory(k) for k in keys if f"/{LONG_DIR}/" not in k})
    classes: dict[str, str] = {}
    for listing in pool.map(lambda d: list_with_restore_status(client, bucket, d), directories):
        classes.update((k, r.obj.storage_class) for k, r in listing.items())
    for key in (k for k in keys if f"/{LONG_DIR}/" in k):
        found = head_object(client, bucket, key)
        if found is not None:
            classes[key] = found.storage_class
    archived = [k for k in keys if classes.get(k) in {c.value for c in ARCHIVED_CLASSES}]
    refused: dict[str, str] = {}
    to_request = []
    for key in archived:
        if classes[key] == StorageClass.DEEP_ARCHIVE.value and tier == RestoreTier.EXPEDITED.value:
            refused[key] = "DEEP_ARCHIVE has no Expedited retrieval: restore it again with --tier Standard or Bulk"
        else:
            to_request.append(key)
    outcomes = list(pool.map(lambda k: request_restore(client, bucket, k, days, tier), to_request))
    pending = [k for k, o in zip(to_request, outcomes) if o in (RequestOutcome.REQUESTED, RequestOutcome.IN_PROGRESS)]
    requested = sum(o is RequestOutcome.REQUESTED for o in outcomes)
    return {"archived": len(archived), "requested": requested, "pending": pending, "refused": refused}


def _still_pending(client: Any, bucket: str, keys: list[str], pool: ThreadPoolExecutor) -> list[str]:
    """Which of `keys` are not readable yet: by listing with RestoreStatus, by HEAD where the listing cannot say."""
    if not keys:
        return []
    known: dict[str, bool | None] = {}
    wanted = set(keys)
    directories = sorted({_directory(k) for k in keys if f"/{LONG_DIR}/" not in k})
    for listing in pool.map(lambda d: list_with_restore_status(client, bucket, d), directories):
        known.update((k, r.ready) for k, r in listing.items() if k in wanted)
    unknown = [k for k in keys if known.get(k) is None]

    def by_head(key: str) -> bool | None:
        found = head_object(client, bucket, key)
        if found is None:
            return True  # gone: the download reports it missing
        if found.storage_class not in {c.value for c in ARCHIVED_CLASSES}:
            return True
        return found.restore_ready

    for key, ready in zip(unknown, pool.map(by_head, unknown)):
        known[key] = ready
    return [k for k in keys if not known.get(k)]


@dataclass
class StagePreview:
    """What the stage of a restore would do, found by reads only (`restore --dry-run`): per selected object, whether
    it can be downloaded now or needs a Glacier restore first. Counts of (files, bytes)."""

    tier: str
    days: int
    standard: list[int] = field(default_factory=lambda: [0, 0])  # small files, symlinks, large ones not archived
    to_request: list[int] = field(default_factory=lambda: [0, 0])  # archived, never requested: one RestoreObject each
    in_progress: list[int] = field(default_factory=lambda: [0, 0])  # archived, a restore already under way
    restored: list[int] = field(default_factory=lambda: [0, 0])  # archived, a restored copy readable now
    refused: list[int] = field(default_factory=lambda: [0, 0])  # DEEP_ARCHIVE asked for with Expedited
    missing: list[int] = field(default_factory=lambda: [0, 0])  # large objects the bucket does not list
    archived_by_class: dict[str, list[int]] = field(default_factory=dict)
    to_request_by_class: dict[str, list[int]] = field(default_factory=dict)  # what the retrieval is billed for

    @property
    def ready(self) -> list[int]:
        """Downloadable now, without a restore request."""
        return [self.standard[0] + self.restored[0], self.standard[1] + self.restored[1]]

    def to_json(self) -> dict[str, Any]:
        pair = lambda c: {"files": c[0], "bytes": c[1]}  # noqa: E731
        return {"tier": self.tier, "days": self.days, "ready": pair(self.ready), "standard": pair(self.standard),
                "restore_requests": pair(self.to_request), "in_progress": pair(self.in_progress),
                "restored": pair(self.restored), "refused": pair(self.refused), "missing": pair(self.missing),
                "archived_by_class": {k: pair(v) for k, v in sorted(self.archived_by_class.items())}}


def preview_stage(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None) -> StagePreview:
    """Classify a prepared restore's objects as `stage` would find them, by listings (and HEAD where a listing cannot
    say), without requesting any restore, downloading or writing anything. Memory: one shard's keys at a time."""
    layout, header, policy = load_header(run_dir)
    client = (client_factory or _default_client)(policy)
    bucket, tier = policy.s3.bucket, header["tier"]
    archived_classes = {c.value for c in ARCHIVED_CLASSES}
    preview = StagePreview(tier, header["days"])

    def count(which: list[int], size: int) -> None:
        which[0] += 1
        which[1] += size

    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header["shards"]:
            large: dict[str, int] = {}
            for entry in read_records(layout.shard_file(shard["index"])):
                key = large_key(policy, entry)
                if key is None:
                    count(preview.standard, entry.size_bytes)
                else:
                    large[key] = entry.size_bytes
            found: dict[str, tuple[str, bool | None]] = {}
            directories = sorted({_directory(k) for k in large if f"/{LONG_DIR}/" not in k})
            for listing in pool.map(lambda d: list_with_restore_status(client, bucket, d), directories):
                found.update((k, (r.obj.storage_class, r.ready)) for k, r in listing.items() if k in large)
            unsure = [k for k in large if k not in found or
                      (found[k][0] in archived_classes and found[k][1] is None)]
            for key, info in zip(unsure, pool.map(lambda k: head_object(client, bucket, k), unsure)):
                if info is not None:
                    found[key] = (info.storage_class, info.restore_ready)
                else:
                    found.pop(key, None)
            for key, size in large.items():
                if key not in found:
                    count(preview.missing, size)
                    continue
                klass, ready = found[key]
                if klass not in archived_classes:
                    count(preview.standard, size)
                    continue
                count(preview.archived_by_class.setdefault(klass, [0, 0]), size)
                if ready:
                    count(preview.restored, size)
                elif ready is False:
                    count(preview.in_progress, size)
                elif klass == StorageClass.DEEP_ARCHIVE.value and tier == RestoreTier.EXPEDITED.value:
                    count(preview.refused, size)
                else:
                    count(preview.to_request, size)
                    count(preview.to_request_by_class.setdefault(klass, [0, 0]), size)
    return preview


# -- destination ------------------------------------------------------------------------------------------------------

class Destination:
    """Writes below one directory and nowhere else: components opened with O_NOFOLLOW, files created beside their
    target under a temporary name and renamed into place."""

    DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.root_fd)

    def parent(self, relative: bytes) -> tuple[int, bytes]:
        """An open fd of the target's directory (created as needed) and the target's name; the caller closes it."""
        reason = unsafe_reason(relative)
        if reason:
            raise Refused(reason)
        *dirs, name = relative.split(b"/")
        fd = os.dup(self.root_fd)
        try:
            for part in dirs:
                try:
                    child = os.open(part, self.DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass  # another thread made it
                    child = os.open(part, self.DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Refused(f"{display_path(part)} in the destination is a symlink or not a directory; "
                                      "not followed") from e
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, name

    @staticmethod
    def existing(dir_fd: int, name: bytes) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def temp_name(name: bytes) -> bytes:
        # Short and fixed-length: the target's own name may already be 255 bytes.
        return b".fs3g-restore-" + secrets.token_hex(8).encode()


@dataclass(frozen=True)
class FileMeta:
    mtime_ns: int | None
    atime_ns: int | None
    mode: int | None
    uid: int | None
    gid: int | None

    @classmethod
    def of(cls, metadata: dict[str, str], entry: Entry, *, catalog_times: bool) -> "FileMeta":
        def number(key: str, parse: Callable[[str], int]) -> int | None:
            try:
                return parse(metadata[key])
            except (KeyError, ValueError):
                return None

        # 0 and negative times are times like any other (`touch -d @0`): test for absence, never for truth. A
        # catalog's mtime is the uploaded version's, as an exact integer: it comes first. An entry from a bucket
        # listing knows no times (its fields are 0): there only the object's metadata can say.
        mtime = entry.mtime_ns if catalog_times else number("mtime", parse_ns)
        atime = number("atime", parse_ns)
        if atime is None and catalog_times:
            atime = entry.atime_ns
        return cls(mtime, atime, number("mode", lambda t: int(t, 8)), number("owneruid", int), number("groupuid", int))

    @property
    def times(self) -> tuple[int, int]:
        """(atime, mtime) for os.utime; the mtime stands in for a missing atime. Only when mtime_ns is known."""
        assert self.mtime_ns is not None
        return (self.mtime_ns if self.atime_ns is None else self.atime_ns, self.mtime_ns)


# -- one restore task -------------------------------------------------------------------------------------------------

class Outcome(str, Enum):
    RESTORED = "restored"
    PRESENT = "already-present"
    FAILED = "failed"
    REFUSED = "refused"
    NOT_READY = "not-ready"
    INTERRUPTED = "interrupted"


class ShardState(str, Enum):
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass
class _Tally:
    restored: int = 0
    present: int = 0
    failed: int = 0
    bytes_restored: int = 0
    bytes_present: int = 0  # for progress only: what the shard has behind it
    linked: int = 0  # restored as a hard link to another restored file


class _ShardRestorer:
    def __init__(self, client: Any, policy: Policy, header: dict, layout: RestoreLayout, shard: int,
                 stop: threading.Event, dest: Destination):
        self.client, self.policy, self.header, self.layout, self.shard = client, policy, header, layout, shard
        self.dest = dest
        self.halted: str | None = None
        self.bucket = policy.s3.bucket
        self.stop = stop
        self.selection = Selection(header["requests"])
        self.overwrite = bool(header["overwrite"])
        self.from_catalog = str(header["source"]).startswith("catalog ")
        self.as_root = os.geteuid() == 0
        self.tally = _Tally()
        self.lock = threading.Lock()
        self.parts = ThreadPoolExecutor(policy.restore.download_workers, thread_name_prefix="fs3g-part")
        self.direct = DirectGetter(client, policy.uploader.max_attempts)
        self.errors: list[BaseException] = []
        stage_file = layout.stage_file(shard)
        self.stage_refused: dict[str, str] = read_json(stage_file).get("refused", {}) if stage_file.exists() else {}
        self.journal_path = layout.journal(shard)
        self.journal_flushed_s = 0.0
        self.done = self._read_journal()
        self.journal = open(os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a",
                            encoding="ascii")
        self.failures = open(os.open(layout.failures(shard), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                             encoding="ascii")

    def _read_journal(self) -> dict[bytes, tuple[int, int]]:
        done: dict[bytes, tuple[int, int]] = {}
        if self.journal_path.exists():
            for line in self.journal_path.read_text(encoding="ascii").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut short by a kill: that file is checked again
                done[os.fsencode(item["p"])] = (item["s"], item["m"])
        return done

    def close(self) -> None:
        self.parts.shutdown(wait=True, cancel_futures=True)
        self.journal.close()
        self.failures.close()

    def _record(self, entry: Entry, outcome: Outcome, detail: str = "", size: int = 0, mtime_ns: int = 0,
                linked: bool = False) -> None:
        with self.lock:
            if outcome in (Outcome.RESTORED, Outcome.PRESENT):
                if outcome is Outcome.RESTORED:
                    self.tally.restored += 1
                    if linked:
                        self.tally.linked += 1  # no bytes: the data came with its first link
                    else:
                        self.tally.bytes_restored += size
                else:
                    self.tally.present += 1
                    self.tally.bytes_present += size
                self.journal.write(json.dumps({"p": os.fsdecode(entry.path), "s": size, "m": mtime_ns}) + "\n")
                now = time.monotonic()
                if now - self.journal_flushed_s >= JOURNAL_FLUSH_INTERVAL_S:
                    # A record lost to a kill only means that file is checked again (and found in place).
                    self.journal.flush()
                    self.journal_flushed_s = now
                return
            if outcome is not Outcome.INTERRUPTED:
                self.tally.failed += 1
                log.warning("%s: %s: %s", display_path(entry.path), outcome.value, detail)
            self.failures.write(json.dumps({"path": os.fsdecode(entry.path), "outcome": outcome.value,
                                            "reason": detail}) + "\n")
            self.failures.flush()

    def run(self, entries: Iterable[Entry]) -> None:
        """`download_workers` threads take units (a file, or the links of one) from the shard in turn: no queue, no
        future per file (at 5,000 small files a second, each synchronisation object costs measurable CPU in futex
        calls)."""
        source = restore_units(entries)
        take = threading.Lock()

        def work() -> None:
            while not self.errors:
                with take:
                    unit = next(source, None)
                if unit is None:
                    return
                try:
                    self._unit(unit)
                except BaseException as e:  # _guarded reports every file's failure; this one is ours (the journal's disk)
                    self.errors.append(e)
                    self.stop.set()
                    return

        threads = [threading.Thread(target=work, name=f"fs3g-restore-{i}", daemon=True)
                   for i in range(self.policy.restore.download_workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def _unit(self, unit: list[Entry]) -> None:
        """The first link of a file that restores is downloaded and verified; the others become hard links to it
        (should it fail, the next one is downloaded instead)."""
        first: Entry | None = None
        for entry in unit:
            if self._guarded(entry, first) and first is None:
                first = entry

    def _guarded(self, entry: Entry, link_to: Entry | None = None) -> bool:
        """Restore one entry (or link it to `link_to`, already restored); True when it is in place."""
        if self.halted:
            self._record(entry, Outcome.FAILED, self.halted)
            return False
        if self.stop.is_set():
            self._record(entry, Outcome.INTERRUPTED, "stopped before it started")
            return False
        try:
            if link_to is None:
                self._restore(entry)
            else:
                self._link(entry, link_to)
            return True
        except Refused as e:
            self._record(entry, Outcome.REFUSED, str(e))
        except NotRestored as e:
            key = self._key(entry)[0]
            self._record(entry, Outcome.NOT_READY, self.stage_refused.get(key) or (
                f"{e}; the Glacier restore was requested: run the same restore again once it is ready"))
        except ObjectMissing as e:
            self._record(entry, Outcome.FAILED, str(e))
        except DiskFull as e:
            # Every other file would fail the same way: stop, and name them all as not restored.
            self.halted = "not attempted: the destination is full"
            self.stop.set()
            self._record(entry, Outcome.FAILED, str(e))
        except Exception as e:  # noqa: BLE001 - one file's failure never stops the shard; it is reported by name
            log.debug("restore of %s failed", display_path(entry.path), exc_info=True)
            self._record(entry, Outcome.FAILED, f"{type(e).__name__}: {e}")
        return False

    def _link(self, entry: Entry, first: Entry) -> None:
        """`entry` as a hard link to `first` (restored a moment ago): both names below the destination, neither
        symlink followed; the link is made under a temporary name and renamed over the target."""
        relative = self.selection.relative(entry.path)
        src_fd, src_name = self.dest.parent(self.selection.relative(first.path))
        try:
            dir_fd, name = self.dest.parent(relative)
            try:
                source = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
                if not stat.S_ISREG(source.st_mode):
                    raise Fs3gError(f"its link {display_path(first.path)} is no longer a regular file")
                present = Destination.existing(dir_fd, name)
                if present is not None and (present.st_dev, present.st_ino) == (source.st_dev, source.st_ino):
                    self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                    return
                if present is not None and stat.S_ISDIR(present.st_mode):
                    raise Refused("a directory is in the way")
                if self._blocked(present):
                    raise Refused("a different file exists at the target; restore with --overwrite to replace it")
                tmp = Destination.temp_name(name)
                try:
                    os.link(src_name, tmp, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in _NO_LINK_ERRNOS:
                        raise
                    # No hard links here (EMLINK: too many already; or the filesystem has none): a copy of its own.
                    log.warning("%s: cannot be linked (%s); downloaded as a separate file", display_path(entry.path),
                                e.strerror)
                    linked = False
                else:
                    linked = True
                if not linked:
                    self._restore(entry)
                    return
                try:
                    made = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
                    if (made.st_dev, made.st_ino) != (source.st_dev, source.st_ino):
                        raise Fs3gError(f"{display_path(first.path)} was replaced while it was linked; not linked")
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    _unlink_quietly(dir_fd, tmp)
                    raise
            finally:
                os.close(dir_fd)
        finally:
            os.close(src_fd)
        self._record(entry, Outcome.RESTORED, size=source.st_size, mtime_ns=source.st_mtime_ns, linked=True)

    def _key(self, entry: Entry) -> tuple[str, KeyClass]:
        if entry.kind is EntryKind.SYMLINK:
            klass = KeyClass.SYMLINK
        elif entry.size_bytes <= self.policy.storage.small_file_threshold_bytes:
            klass = KeyClass.SMALL
        else:
            klass = KeyClass.LARGE
        return object_key(self.policy.s3.prefix, klass, entry.path).key, klass

    def _restore(self, entry: Entry) -> None:
        relative = self.selection.relative(entry.path)
        key, klass = self._key(entry)
        dir_fd, name = self.dest.parent(relative)
        try:
            present = Destination.existing(dir_fd, name)
            journaled = self.done.get(entry.path)
            if present is not None and journaled is not None and stat.S_ISREG(present.st_mode) and (
                    present.st_size, present.st_mtime_ns) == journaled:
                self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                return
            if present is not None and stat.S_ISDIR(present.st_mode):
                raise Refused("a directory is in the way")
            if klass is KeyClass.LARGE:
                self._large(entry, key, dir_fd, name, present)
            else:
                self._whole(entry, key, klass, dir_fd, name, present)
        finally:
            os.close(dir_fd)

    def _same_as(self, present: os.stat_result | None, size: int, meta: FileMeta, symlink: bool) -> bool:
        if present is None:
            return False
        kind_ok = stat.S_ISLNK(present.st_mode) if symlink else stat.S_ISREG(present.st_mode)
        return kind_ok and present.st_size == size and meta.mtime_ns is not None and present.st_mtime_ns == meta.mtime_ns

    def _blocked(self, present: os.stat_result | None) -> bool:
        return present is not None and not self.overwrite

    def _whole(self, entry: Entry, key: str, klass: KeyClass, dir_fd: int, name: bytes,
               present: os.stat_result | None) -> None:
        try:
            obj = self._get_whole(key)
        except ObjectMissing:
            if klass is KeyClass.SYMLINK:
                raise
            # The small-file threshold may have changed since this file was backed up.
            other = object_key(self.policy.s3.prefix, KeyClass.LARGE, entry.path).key
            try:
                obj = self._get_whole(other)
            except ObjectMissing:
                raise ObjectMissing(f"{key} is not in the bucket (nor {other})") from None
            key = other
        meta = FileMeta.of(obj.metadata, entry, catalog_times=self.from_catalog)
        symlink = klass is KeyClass.SYMLINK
        if self._same_as(present, len(obj.data), meta, symlink) and (
                not symlink or os.readlink(name, dir_fd=dir_fd) == obj.data):
            self._record(entry, Outcome.PRESENT, size=len(obj.data), mtime_ns=meta.mtime_ns or 0)
            return
        if self._blocked(present):
            raise Refused("a different file exists at the target; restore with --overwrite to replace it")
        expected = entry.tree_hash.hex() if entry.tree_hash else obj.metadata.get(TREEHASH_KEY)
        hasher = TreeHasher()
        hasher.update(obj.data)
        self._check_hash(key, expected, hasher.hexdigest())
        tmp = Destination.temp_name(name)
        if symlink:
            os.symlink(obj.data, tmp, dir_fd=dir_fd)
            try:
                self._apply_link_meta(dir_fd, tmp, meta)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                _unlink_quietly(dir_fd, tmp)
                raise
        else:
            fd = self._create(dir_fd, tmp)
            try:
                os.ftruncate(fd, len(obj.data))  # before the data: blocks of zeros are left as holes
                pwrite_sparse(fd, obj.data, 0, self.dest.root)
                self._apply_meta(fd, meta)
                os.close(fd)
                fd = -1
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                _unlink_quietly(dir_fd, tmp)
                raise
        self._record(entry, Outcome.RESTORED, size=len(obj.data), mtime_ns=meta.mtime_ns or 0)

    def _tag(self, key: str) -> str | None:
        """The tree hash a multipart upload left as a tag (its metadata was fixed before the hash was known)."""
        try:
            return object_tag(self.client, self.bucket, key, TREEHASH_KEY)
        except ObjectAccessError:
            return None  # refused (an archived object on some stores): reported as "no tree hash" by the caller

    def _get_whole(self, key: str) -> WholeObject:
        if self.direct.available:
            return self.direct.get_whole(self.bucket, key)
        return get_whole(self.client, self.bucket, key)

    def _large(self, entry: Entry, key: str, dir_fd: int, name: bytes, present: os.stat_result | None) -> None:
        head = head_object(self.client, self.bucket, key)
        if head is None:
            raise ObjectMissing(f"{key} is not in the bucket")
        if head.storage_class in {c.value for c in ARCHIVED_CLASSES} and not head.restore_ready:
            raise NotRestored(f"{key} is archived ({head.storage_class}) and not restored (yet)")
        meta = FileMeta.of(head.metadata, entry, catalog_times=self.from_catalog)
        if self._same_as(present, head.size_bytes, meta, False):
            self._record(entry, Outcome.PRESENT, size=head.size_bytes, mtime_ns=meta.mtime_ns or 0)
            return
        if self._blocked(present):
            raise Refused("a different file exists at the target; restore with --overwrite to replace it")
        expected = (entry.tree_hash.hex() if entry.tree_hash else head.metadata.get(TREEHASH_KEY)
                    or self._tag(key))
        if not expected:
            raise Fs3gError(f"{key} carries no SHA-256 tree hash to verify against; not restored")
        size = head.size_bytes
        part = part_size_for(size, self.policy.uploader.buffer_size_bytes)
        tmp = Destination.temp_name(name)
        fd = self._create(dir_fd, tmp)
        try:
            os.ftruncate(fd, size)
            starts = list(range(0, size, part))
            futures = [self.parts.submit(self._part, key, head.etag, fd, start, min(part, size - start))
                       for start in starts]
            hasher = TreeHasher()
            try:
                for future in futures:
                    hasher.add_leaves(future.result())
            except BaseException:
                self.stop_parts(futures)
                raise
            self._check_hash(key, expected, hasher.hexdigest())
            self._apply_meta(fd, meta)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            _unlink_quietly(dir_fd, tmp)
            raise
        self._record(entry, Outcome.RESTORED, size=size, mtime_ns=meta.mtime_ns or 0)

    @staticmethod
    def stop_parts(futures: list[Future]) -> None:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                try:
                    f.result()
                except BaseException:  # noqa: BLE001 - the first failure is the one reported
                    pass

    def _part(self, key: str, etag: str, fd: int, start: int, length: int) -> list[bytes]:
        """One ranged GET written at its offset; its 1 MiB leaf digests, for the tree hash."""
        if self.stop.is_set():
            raise InterruptedError("stopped")
        leaves: list[bytes] = []
        leaf = hashlib.sha256()
        fill = 0
        offset = start
        pieces = (self.direct.get_range(self.bucket, key, start, length, etag) if self.direct.available
                  else get_range(self.client, self.bucket, key, start, length, etag))
        for piece in pieces:
            pwrite_sparse(fd, piece, offset, self.dest.root)
            offset += len(piece)
            view = memoryview(piece)
            while view:
                take = min(LEAF_BYTES - fill, len(view))
                leaf.update(view[:take])
                fill += take
                view = view[take:]
                if fill == LEAF_BYTES:
                    leaves.append(leaf.digest())
                    leaf, fill = hashlib.sha256(), 0
        if offset != start + length:
            raise Fs3gError(f"{key}: range at {start} returned {offset - start} bytes, expected {length}")
        _start_writeback(fd, start, length)
        if fill:
            leaves.append(leaf.digest())
        return leaves

    @staticmethod
    def _check_hash(key: str, expected: str | None, actual: str) -> None:
        if not expected:
            raise Fs3gError(f"{key} carries no SHA-256 tree hash to verify against; not restored")
        if expected != actual:
            raise Fs3gError(f"{key}: SHA-256 tree hash {actual} does not match the recorded {expected}; not restored")

    @staticmethod
    def _create(dir_fd: int, tmp: bytes) -> int:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=dir_fd)

    def _apply_meta(self, fd: int, meta: FileMeta) -> None:
        if self.as_root and meta.uid is not None and meta.gid is not None:
            os.fchown(fd, meta.uid, meta.gid)
        if meta.mode is not None:
            os.fchmod(fd, stat.S_IMODE(meta.mode))  # after chown, which clears set-id bits
        if meta.mtime_ns is not None:
            os.utime(fd, ns=meta.times)

    def _apply_link_meta(self, dir_fd: int, name: bytes, meta: FileMeta) -> None:
        if self.as_root and meta.uid is not None and meta.gid is not None:
            os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
        if meta.mtime_ns is not None:
            os.utime(name, ns=meta.times, dir_fd=dir_fd, follow_symlinks=False)


def _unlink_quietly(dir_fd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _full(e: OSError, root: Path) -> DiskFull:
    return DiskFull(f"no space left on the destination {root} ({e.strerror}); nothing partial was kept: free space "
                    "and run the same restore again (it skips what is already restored)")



_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range's dirty pages, do not wait


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Callable[..., int] | None:
    """libc's sync_file_range(2) (Linux), which the os module does not offer; None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a finished part to disk while the other parts download, so that the fsync before the rename
    waits for little (it took 0.4 s for 1 GiB written in one go). Best effort: a failure here only moves the work
    to the fsync, which reports errors."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, root: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _full(e, root) from e
        raise


def pwrite_sparse(fd: int, data: bytes | memoryview, offset: int, root: Path) -> None:
    """`data` at `offset`, except its all-zero SPARSE_BLOCK_BYTES-aligned blocks, which are skipped (seeked over):
    the file is new and already sized with ftruncate, so they read back as zeros, and stay holes where the
    filesystem keeps holes. Consecutive data blocks go in one write. (The caller hashes every byte, zeros too.)"""
    view = memoryview(data).cast("B")
    size = len(view)
    pos = 0
    pending = 0  # start of the data not yet written
    while pos < size:
        end = min(size, pos + SPARSE_BLOCK_BYTES - (offset + pos) % SPARSE_BLOCK_BYTES)
        # Data blocks mostly fail on their end bytes; then bytes == bytes is a memcmp (comparing memoryviews walks
        # the elements one by one).
        if view[pos] == 0 and view[end - 1] == 0 and view[pos:end].tobytes() == _ZERO_BLOCK[:end - pos]:
            if pending < pos:
                _pwrite_all(fd, view[pending:pos], offset + pending, root)
            pending = end
        pos = end
    if pending < size:
        _pwrite_all(fd, view[pending:size], offset + pending, root)


@dataclass(frozen=True)
class ShardResult:
    state: ShardState
    restored: int
    present: int
    failed: int
    signal_name: str | None


def resolve_restore_shard(header: dict, shard: int | None, environ: dict[str, str]) -> int:
    if shard is None:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.isdigit():
            raise UsageError("no shard given: pass --shard N or run as a Slurm array task (SLURM_ARRAY_TASK_ID)")
        shard = int(task) + int(environ.get("FS3G_SHARD_OFFSET", "0"))
    if not 0 <= shard < header["shard_count"]:
        raise UsageError(f"shard {shard} does not exist (the restore has {header['shard_count']} shards)")
    return shard


def restore_shard(run_dir: Path, shard: int | None, *, environ: dict[str, str] | None = None,
                  on_requeue: Callable[[], None] | None = None,
                  client_factory: Callable[[Policy], Any] | None = None) -> ShardResult:
    """Download, verify and put in place one shard of a restore; resumes from its journal when run again."""
    env = dict(os.environ if environ is None else environ)
    layout, header, policy = load_header(run_dir)
    shard = resolve_restore_shard(header, shard, env)
    ensure_private_dir(layout.results_dir)
    try:
        dest = Destination(Path(header["destination"]))
    except OSError as e:
        raise UsageError(f"cannot use the destination: {e.strerror}", path=header["destination"]) from e
    try:
        with StopOnSignals() as signals:
            restorer = _ShardRestorer((client_factory or _default_client)(policy), policy, header, layout, shard,
                                      signals.stop, dest)
            planned = header["shards"][shard]
            tally = restorer.tally

            def counters() -> Counters:
                return Counters(tally.restored + tally.present + tally.failed, planned["files"],
                                tally.bytes_restored + tally.bytes_present, planned.get("bytes", 0), tally.failed)

            try:
                with ShardProgress(f"restore shard {shard}", counters, sys.stderr, progress_file(layout, shard)):
                    restorer.run(read_records(layout.shard_file(shard)))
            finally:
                restorer.close()
    finally:
        dest.close()
    tally = restorer.tally
    interrupted = signals.first is not None
    state = ShardState.INTERRUPTED if interrupted else ShardState.FAILED if tally.failed else ShardState.DONE
    write_json_atomic(layout.result(shard), {
        "shard": shard, "status": state.value, "signal": signals.first,
        "files": header["shards"][shard]["files"], "restored": tally.restored, "already_present": tally.present,
        "failed": tally.failed, "bytes_restored": tally.bytes_restored, "linked": tally.linked,
    })
    if signals.first == "SIGUSR1" and on_requeue is not None:
        on_requeue()
    return ShardResult(state, tally.restored, tally.present, tally.failed, signals.first)


# -- merge ------------------------------------------------------------------------------------------------------------

@dataclass
class RestoreReport:
    run_dir: Path
    data: dict

    @property
    def ok(self) -> bool:
        return (self.data["failed"]["files"] == 0 and self.data["refused"] == 0
                and self.data.get("directories", {}).get("failed", 0) == 0)

    def lines(self) -> list[str]:
        d = self.data
        return [
            f"restore: {self.run_dir} -> {d['destination']}",
            f"  planned   {d['planned']['files']:,} files {format_size(d['planned']['bytes'])}",
            f"  restored  {d['restored']['files']:,} files {format_size(d['restored']['bytes'])} (verified by "
            "SHA-256 tree hash)",
            *([f"  linked    {d['restored']['linked']:,} of them as hard links (bytes counted once)"]
              if d["restored"].get("linked") else []),
            *([f"  dirs      {d['directories']['restored']:,} of {d['directories']['planned']:,} directories "
               "(mode, times, empty ones)" + (f", {d['directories']['failed']:,} failed (see failures.jsonl)"
                                              if d["directories"]["failed"] else "")]
              if d.get("directories", {}).get("planned") else []),
            f"  present   {d['already_present']:,} already restored (skipped)",
            *([f"  glacier   {d['stage']['requested']:,} restore requests, {d['stage']['polls']} polls"]
              if d["stage"]["requested"] else []),
            f"  refused   {d['refused']:,}" + (" (see refused.jsonl)" if d["refused"] else ""),
            f"  failed    {d['failed']['files']:,}" + (" (see failures.jsonl)" if d["failed"]["files"] else ""),
            "  shards    " + ", ".join(f"{k} {v}" for k, v in sorted(d["shard_states"].items())),
            timing_line(d),
        ]


@dataclass
class DirectoryTally:
    restored: int = 0
    failed: int = 0


def restore_directories(layout: RestoreLayout, header: dict, failures: Any) -> DirectoryTally:
    """Create every selected directory (empty ones included) and put back its mode, times and (as root) owner,
    deepest first, once every file is in place: the files created in a directory change its mtime, so it is set
    last. Walks the destination as the shards do (O_NOFOLLOW, one component at a time): a symlink is never followed.
    Streams directories.rec: memory does not grow with the number of directories."""
    tally = DirectoryTally()
    if not layout.directories_file.is_file():
        return tally
    selection = Selection(header["requests"])
    as_root = os.geteuid() == 0
    try:
        dest = Destination(Path(header["destination"]))
    except OSError as e:
        raise UsageError(f"cannot use the destination: {e.strerror}", path=header["destination"]) from e
    try:
        for entry in read_records(layout.directories_file):
            try:
                _restore_directory(dest, selection.relative(entry.path), entry, as_root)
                tally.restored += 1
            except (Refused, OSError) as e:
                tally.failed += 1
                outcome = Outcome.REFUSED if isinstance(e, Refused) else Outcome.FAILED
                reason = str(e) if isinstance(e, Refused) else f"directory not restored: {e.strerror or e}"
                log.warning("%s: %s: %s", display_path(entry.path), outcome.value, reason)
                failures.write(json.dumps({"path": os.fsdecode(entry.path), "outcome": outcome.value,
                                           "reason": reason}) + "\n")
    finally:
        dest.close()
    return tally


def _restore_directory(dest: Destination, relative: bytes, entry: Entry, as_root: bool) -> None:
    dir_fd, name = dest.parent(relative)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)  # an empty directory: no file made it
        except FileExistsError:
            pass
        try:
            fd = os.open(name, Destination.DIR_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused("a symlink or a file is in the way of this directory; not followed") from e
            raise
    finally:
        os.close(dir_fd)
    try:
        if as_root:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, stat.S_IMODE(entry.mode))  # after chown, which clears set-id bits
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
    finally:
        os.close(fd)


def merge_restore(run_dir: Path) -> RestoreReport:
    layout, header, _policy = load_header(run_dir)
    restored_files = restored_bytes = present = failed = linked = 0
    states: dict[str, int] = {}
    fail_path = layout.run_dir / "failures.jsonl"
    fd = os.open(fail_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        if layout.refused_file.exists():
            with open(layout.refused_file, encoding="ascii") as f:
                for line in f:
                    item = json.loads(line)
                    out.write(json.dumps({"path": item["path"], "outcome": "refused", "reason": item["reason"]}) + "\n")
        for shard in header["shards"]:
            index = shard["index"]
            result = read_json(layout.result(index)) if layout.result(index).exists() else None
            state = result["status"] if result else "never reported"
            states[state] = states.get(state, 0) + 1
            if result:
                restored_files += result["restored"]
                restored_bytes += result["bytes_restored"]
                linked += result.get("linked", 0)
                present += result["already_present"]
            shard_failed = 0
            if layout.failures(index).exists():
                with open(layout.failures(index), encoding="ascii") as f:
                    for line in f:
                        out.write(line)
                        shard_failed += 1
            # Files a task never reached (killed, never started) are failures too, by count; a rerun finds them.
            done = (result["restored"] + result["already_present"]) if result else 0
            failed += max(shard_failed, shard["files"] - done)
        # Last, once: after every shard's files, so that the directories' mtimes stay as set.
        directories = restore_directories(layout, header, out)
    stage = read_json(layout.stage_state) if layout.stage_state.exists() else {"requested": 0, "polls": 0}
    data = {
        "tool_version": __version__,
        "merged": datetime.now(timezone.utc).isoformat(),
        "lab": header["lab"],
        "run_dir": str(layout.run_dir),
        "destination": header["destination"],
        "source": header["source"],
        "planned": header["planned"],
        "restored": {"files": restored_files, "bytes": restored_bytes, "linked": linked},
        "directories": {"planned": header.get("directories", 0), "restored": directories.restored,
                        "failed": directories.failed},
        "already_present": present,
        "refused": header["refused"],
        "failed": {"files": failed},
        "failures_file": fail_path.name,
        "stage": {"requested": stage.get("requested", 0), "polls": stage.get("polls", 0),
                  "verdict": stage.get("verdict")},
        "shard_states": states,
        # Elapsed from the restore's selection (a Glacier wait included); throughput of what was restored.
        **timing_fields(layout, header["shard_count"], header.get("created"), restored_files, restored_bytes),
    }
    write_json_atomic(layout.report_file, data)
    report = RestoreReport(layout.run_dir, data)
    text_fd = os.open(layout.run_dir / "summary.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(text_fd, "w", encoding="utf-8") as f:
        f.write("\n".join(report.lines()) + "\n")
    return report


# -- job chain --------------------------------------------------------------------------------------------------------

def record_chain(layout: RestoreLayout, *, stage_job: str | None = None, arrays: list[str] | None = None,
                 merge_job: str | None = None) -> dict:
    """Note a job of this restore in jobs/chain.json, so `--wait` and `status` can follow a chain whose poll jobs
    replace each other."""
    ensure_private_dir(layout.chain_file.parent)
    chain = read_json(layout.chain_file) if layout.chain_file.exists() else {"stages": []}
    if stage_job:
        chain["stages"].append(stage_job)
    if arrays is not None:
        chain["arrays"] = arrays
    if merge_job:
        chain["merge"] = merge_job
    write_json_atomic(layout.chain_file, chain)
    return chain
