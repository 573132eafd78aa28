"""Selecting a restore: the catalog's records (or, with no catalog, the bucket listing's) under the requested paths,
cut into shards (the selected links of one hard-linked file contiguous in one shard), the selected directories deepest
first, refused paths noted; then the header, written last."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..config import Policy, RestoreTier, StorageClass, policy_to_dict
from ..errors import UsageError
from ..runs.catalog import catalog_path, catalog_target_mismatch
from ..runs.layout import default_run_dir, make_private_dir, write_json_atomic
from ..runs.shards import SequentialShardCutter
from ..model.keys import LONG_DIR, PATHMAP_MAX_BYTES, KeyClass, object_key, parse_key, pathmap_key
from ..model.records import (Entry, EntryKind, RunSpiller, display_path, group_hard_links, hard_link_sort_key,
                             read_records, sorted_stream, write_records)
from ..transfer.lister import iter_objects
from ..transfer.objects import read_small_object
from .layout import RestoreLayout, default_client
from .paths import Refused, Selection

log = logging.getLogger(__name__)

RESTORE_FORMAT_VERSION = 1
_FILE_KINDS = (EntryKind.FILE, EntryKind.SYMLINK)
SPILL_RECORDS = 100_000  # records a selection spill (hard links, directories) holds in memory before writing a run


def default_restore_dir(policy: Policy, now: datetime) -> Path:
    return default_run_dir(policy, now, "restore")



def _append_json(path: Path, record: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as f:
        f.write(json.dumps(record) + "\n")



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
            entries = _from_bucket((client_factory or default_client)(policy), policy, selection)
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
