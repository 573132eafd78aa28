"""Selecting a restore: the catalog's records under the requested paths -- the local catalog when it is usable (and
no --as-of), else the bucket's snapshot (the newest of the policy's lab and roots, or the one --as-of names: its chunks
streamed and checked one at a time, snapshots/store.py), else, with neither, the bucket listing's --
cut into shards (the selected links of one hard-linked file contiguous in one shard), the selected directories deepest
first, refused paths noted; then the header, written last.

From the catalog: a record with a location is a packed file (its pack, header and data offsets, size); one without
is a per-object file, its key derived from its path. Both go to the shards as they are; the task groups the packed ones
by pack.

From the bucket alone (no catalog): the per-object keys (smallfile/ largefile/ symlinks/) and every pack index
(`packs/**.tar.idx`, read as a stream, untrusted: model/packs.read_index checks every field) give candidates; every
name, from a key or an index, is judged like any name from the bucket (restore/paths.py; a name that is not absolute
or holds NUL is refused and noted in refused.jsonl). A hard-link member is restored from its first link's member in
the same pack (a link to a name the pack does not hold before it is refused); it becomes a file of its own name, the
links to one first link linked together. When one path has several copies (in several packs, or packed and as an
object), the newest wins: a packed copy dates from its run's plan time (the `<UTC %Y%m%dT%H%M%SZ>` that starts its
run_id), a per-object copy from its LastModified; on equal times the packed copy wins. Candidates pass through the
external sort (RunSpiller, SPILL_RECORDS in memory; their ctime_ns holds that date, the sort key), never a dict of
paths. Memory: SPILL_RECORDS records, one listing page, one index's file members (to resolve its hard links)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import zlib
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
from ..model.packs import (INDEX_SUFFIX, PACKS_DIR, MemberType, PackFormatError, PackRef, is_index_key, read_index,
                           relative_to_prefix)
from ..model.records import (Entry, EntryKind, RunSpiller, by_key, display_path, group_hard_links, hard_link_sort_key,
                             read_records, sorted_stream, write_records)
from ..model.snapshots import AsOf, snapshot_prefix, snapshots_prefix
from ..model.treehash import LEAF_BYTES
from ..snapshots.baseline import local_catalog_usable
from ..snapshots.store import chosen_snapshot, iter_snapshot
from ..transfer.downloader import open_object
from ..transfer.lister import iter_objects
from ..transfer.objects import read_small_object
from .layout import RestoreLayout, default_client
from .packs import symlink_hash
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
    return _selected(read_records(catalog), selection)


def _selected(records: Iterator[Entry], selection: Selection) -> Iterator[Entry]:
    for entry in records:
        if entry.kind in _FILE_KINDS and selection.covers(entry.path):
            yield entry
        elif entry.kind is EntryKind.DIRECTORY and entry.path != selection.base and selection.covers(entry.path):
            yield entry  # the base itself is the destination: its metadata is the destination's own


def deepest_first_key(entry: Entry) -> bytes:
    """Directories by depth, deepest first: each one comes after everything below it, so its mtime, set last, is
    not changed again by a child being created, and a read-only mode never blocks the making of a child."""
    return struct.pack(">I", 0xFFFFFFFF - entry.path.count(b"/")) + entry.key


Refuse = Callable[[str, str], None]  # (the name as text, the reason): noted in refused.jsonl, never written


def _objects_in_bucket(client: Any, policy: Policy, selection: Selection) -> Iterator[Entry]:
    """The bucket's per-object keys under the requested paths, one listing page at a time; ctime_ns holds each one's
    LastModified (the newest-wins key)."""
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
                    yield Entry.of(path, kind, obj.size_bytes, 0, int(obj.modified_s * 1e9), 0, 0, 0, 0, 0, 0, 1)


def run_time_ns(run_id: str) -> int | None:
    """When a run was planned, from the `<UTC %Y%m%dT%H%M%SZ>` its id starts with; None for anything else."""
    try:
        when = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(when.timestamp()) * 1_000_000_000


def _packs_in_bucket(client: Any, policy: Policy, selection: Selection, refuse: Refuse) -> Iterator[Entry]:
    """Every packed file the indexes under `packs/` name below the requested paths, as a record with its location;
    ctime_ns holds its run's plan time. Index names are untrusted: judged here and again before any write."""
    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    packs_dir = "/".join(p for p in (prefix, PACKS_DIR) if p) + "/"
    for key, _obj in iter_objects(client, bucket, packs_dir):
        if not is_index_key(key):
            continue
        pack = relative_to_prefix(prefix, key[:-len(INDEX_SUFFIX)])
        parts = pack.split("/")
        when = run_time_ns(parts[1]) if len(parts) == 3 else None
        if when is None:
            refuse(key, "not a pack index of the layout packs/<run_id>/<shard>-<n>.tar.idx; not read")
            continue
        try:
            with open_object(client, bucket, key) as stream:
                _header, members = read_index(stream, key, pack=pack)
                yield from _index_entries(pack, when, members, selection, refuse)
        except PackFormatError as e:
            refuse(key, f"{e}; the rest of this index is not read")


def _index_entries(pack: str, when: int, members: Iterator[Any], selection: Selection,
                   refuse: Refuse) -> Iterator[Entry]:
    files: dict[bytes, Any] = {}  # this pack's file members so far: a hard-link member's data is at one of them
    for member in members:
        path = member.path
        if member.type is MemberType.FILE:
            files[path] = member
        if b"\0" in path or not path.startswith(b"/"):
            refuse(display_path(path), "an index name must be an absolute path without NUL; not restored")
            continue
        if not selection.covers(path):
            continue
        nlink, ino, kind = 1, 0, EntryKind.FILE
        if member.type is MemberType.HARDLINK:
            target = files.get(member.link)
            if target is None:
                refuse(display_path(path), f"a hard link to {display_path(member.link)}, which this pack does not "
                                           "hold before it; not restored")
                continue
            # Links of one first link are restored as links of each other (their own identity); the data is read
            # at the first link's member, whose name the task accepts for them.
            ref = target.ref(pack)
            nlink, ino, size, sha = 2, (zlib.crc32(pack.encode()) << 32) | (target.header_offset & 0xFFFFFFFF), \
                target.size_bytes, target.sha256
        elif member.type is MemberType.SYMLINK:
            kind, ref, size, sha = EntryKind.SYMLINK, PackRef(pack, member.header_offset, member.data_offset, 0), \
                len(member.link), ""
            # The index's target, as a symlink record's tree hash: the member header's must be the same.
            yield Entry.of(path, kind, size, member.mtime_ns, when, 0, member.mode, member.uid, member.gid, 0, 0,
                           1)._replace(tree_hash=bytes.fromhex(symlink_hash(member.link)), location=ref.encode())
            continue
        else:
            ref = member.ref(pack)
            size, sha = member.size_bytes, member.sha256
        # For a member of one leaf, its SHA-256 is its tree hash: the index's is checked against the data too.
        tree = bytes.fromhex(sha) if sha and size <= LEAF_BYTES else b""
        yield Entry.of(path, kind, size, member.mtime_ns, when, 0, member.mode, member.uid, member.gid, 0, ino,
                       nlink)._replace(tree_hash=tree, location=ref.encode())


def newest_first_key(entry: Entry) -> bytes:
    """By path, then newest copy first (ctime_ns: the copy's date), a packed copy before a per-object one of the
    same date. The copies of one path are contiguous: a key holds one NUL, so no key extends another past it."""
    age = (1 << 63) - 1 - max(min(entry.ctime_ns, (1 << 63) - 1), 0)
    return entry.key + b"\0" + struct.pack(">QB", age, 0 if entry.location else 1) + entry.location


def _from_bucket(client: Any, policy: Policy, selection: Selection, work: Path, refuse: Refuse) -> Iterator[Entry]:
    """The bucket's copies under the requested paths (no catalog: a bucket written by another machine, or by the
    original tool), the newest of each path only, in path order."""
    candidates = RunSpiller(work, "bucket", SPILL_RECORDS, key=newest_first_key)
    for entry in _objects_in_bucket(client, policy, selection):
        candidates.add(entry)
    for entry in _packs_in_bucket(client, policy, selection, refuse):
        candidates.add(entry)
    for copies in group_hard_links(sorted_stream(candidates.finish(), work, key=newest_first_key), identity=by_key):
        yield copies[0]


@dataclass(frozen=True)
class RestoreRequest:
    paths: tuple[str, ...]
    destination: Path
    tier: RestoreTier
    days: int
    overwrite: bool = False
    wait: bool = True  # False: download what is readable now, request the rest (the original tool's way)
    as_of: str | None = None  # a time or snapshot id: select from that snapshot (model/snapshots.select_snapshot)


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
    as_of: AsOf | None = None
    try:
        moved = catalog_target_mismatch(policy) if catalog.is_file() else None
        if moved:
            log.warning("%s: selecting from the bucket listing instead", moved)
        def refuse(name: str, reason: str) -> None:
            nonlocal refused
            refused += 1
            _append_json(layout.refused_file, {"path": name, "reason": reason})
            log.warning("refused %s: %s", name, reason)

        # The sources, in order: the local catalog (when usable, and no --as-of), the bucket's snapshot (the newest
        # of the policy's lab and roots, or --as-of's), the bucket listing (no snapshot either).
        usable = catalog.is_file() and not moved and local_catalog_usable(policy)[0]
        manifest = None
        if request.as_of is not None or not usable:
            client = (client_factory or default_client)(policy)
            manifest = chosen_snapshot(policy, client, work, request.as_of)
            if manifest is None and request.as_of is not None:
                raise UsageError(f"no snapshot of this lab's roots at or before {request.as_of!r} in "
                                 f"s3://{policy.s3.bucket}/{snapshots_prefix(policy.s3.prefix)}",
                                 hint="list them with `fs3g snapshots --config LAB.yaml`")
        if manifest is not None:
            sid = manifest.snapshot_id
            source = f"catalog snapshot {sid} (s3://{policy.s3.bucket}/{snapshot_prefix(policy.s3.prefix, sid)})"
            if request.as_of is not None:
                as_of = AsOf.of(manifest)
            entries = _selected(iter_snapshot(policy, client, manifest, work), selection)
        elif usable:
            source = f"catalog {catalog}"
            entries = _from_catalog(catalog, selection)
        else:
            source = f"bucket listing of s3://{policy.s3.bucket}"
            entries = _from_bucket((client_factory or default_client)(policy), policy, selection, work, refuse)
        for entry in entries:
            try:
                selection.relative(entry.path)
            except Refused as e:
                refuse(os.fsdecode(entry.path), str(e))
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
        **({"as_of": as_of.to_json()} if as_of is not None else {}),
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
