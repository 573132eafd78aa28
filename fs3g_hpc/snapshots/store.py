"""Writing and reading catalog snapshots (layout and format: model/snapshots.py).

    write_snapshot(policy, catalog_file, client, work)   the catalog's records cut into chunks, each a record file
                                                         (records.py's encoding, carried as is), PUT one after the
                                                         other with its SHA-256, then manifest.json last
    snapshot_ids / read_manifest                         what the bucket holds (manifests validated as untrusted)
    download_catalog(policy, client, sid, dest, work)    the snapshot back into one local catalog file; a chunk whose
                                                         size or SHA-256 differs from its manifest line is refused
                                                         (SnapshotError naming the chunk key: exit 2)
    chosen_snapshot / iter_snapshot / snapshot_to_file   what restore and compare read instead of a local catalog
                                                         (the newest, or --as-of's), streamed a chunk at a time

Safety: nothing is deleted from the bucket; a snapshot without its manifest (a merge killed half-way) is ignored by
readers. Memory: one chunk at a time, on disk in the owner-only work directory (at most `snapshots.chunk_bytes` of
records), plus the manifest's one line per chunk.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from ..config import Policy
from ..model.catalog import CatalogError, checked_order
from ..model.keys import encode_path
from ..model.records import FORMAT_VERSION, Entry, EntryKind, RecordFormatError, RecordWriter, read_records
from ..model.snapshots import (MANIFEST_MAX_BYTES, CatalogOrigin, ChunkInfo, SnapshotCounts, SnapshotError,
                               SnapshotManifest, chunk_key, chunk_name, is_snapshot_id, manifest_key, new_snapshot_id,
                               select_snapshot, snapshots_prefix)
from ..runs.catalog import catalog_origin_path, record_catalog_target
from ..runs.layout import read_json, write_json_atomic

log = logging.getLogger(__name__)

RECORD_OVERHEAD_BYTES = 64  # a record's fixed header, roughly: what counts towards chunk_bytes beside its key


def _record_bytes(entry: Entry) -> int:
    return RECORD_OVERHEAD_BYTES + sum(len(f) for f in entry if isinstance(f, bytes))


def write_snapshot(policy: Policy, catalog_file: Path, client: Any, work: Path, *, now: datetime | None = None,
                   run_id: str = "", source: str = "merge", supersedes: str = "") -> SnapshotManifest:
    """Write `catalog_file` to the bucket as a new snapshot; its manifest (written last). `supersedes`: the id of
    the snapshot this one replaces (pack compaction: the same records, some packed locations moved)."""
    from ..transfer.snapshots import bucket_versioned, put_file, sha256_file

    now = now or datetime.now(timezone.utc)
    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    sid = new_snapshot_id(now, secrets.token_hex(4))
    limit = policy.snapshots.chunk_bytes
    chunks: list[ChunkInfo] = []
    files = file_bytes = symlinks = directories = entries = 0

    def upload(path: Path, count: int, first: str) -> None:
        name = chunk_name(len(chunks))
        sha = sha256_file(path)
        put_file(client, bucket, chunk_key(prefix, sid, name), path, sha, "application/gzip")
        chunks.append(ChunkInfo(name, count, path.stat().st_size, sha, first))
        path.unlink()

    writer: RecordWriter | None = None
    count = size = 0
    first = ""
    try:
        for entry in read_records(catalog_file):
            if writer is None:
                writer = RecordWriter(work / chunk_name(len(chunks)))
                count = size = 0
                first = encode_path(entry.path)
            writer.write(entry)
            count += 1
            size += _record_bytes(entry)
            kind = entry.kind
            entries += 1
            if kind is EntryKind.FILE:
                files += 1
                file_bytes += entry.size_bytes
            elif kind is EntryKind.SYMLINK:
                symlinks += 1
            elif kind is EntryKind.DIRECTORY:
                directories += 1
            if size >= limit:
                writer.close()
                upload(writer.path, count, first)
                writer = None
        if writer is None and not chunks:  # an empty catalog is one empty chunk: a snapshot always has one
            writer = RecordWriter(work / chunk_name(0))
            count, first = 0, ""
        if writer is not None:
            writer.close()
            upload(writer.path, count, first)
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    manifest = SnapshotManifest(sid, now.astimezone(timezone.utc).isoformat(), policy.lab.name, tuple(policy.roots),
                                SnapshotCounts(files, file_bytes, symlinks, directories, entries), tuple(chunks),
                                __version__, bucket_versioned(client, bucket), FORMAT_VERSION, run_id, source, supersedes)
    path = work / "manifest.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(), f, indent=1)
        f.write("\n")
    put_file(client, bucket, manifest_key(prefix, sid), path, sha256_file(path), "application/json")
    path.unlink()
    return manifest


def snapshot_ids(policy: Policy, client: Any) -> list[str]:
    """The ids of the lab's snapshots in the bucket, oldest first (names that are no id are ignored)."""
    from ..transfer.snapshots import list_snapshot_ids

    names = list_snapshot_ids(client, policy.s3.bucket, snapshots_prefix(policy.s3.prefix))
    return sorted(n for n in names if is_snapshot_id(n))


def read_manifest(policy: Policy, client: Any, sid: str, work: Path) -> SnapshotManifest | None:
    """A snapshot's manifest, validated; None when it has none (a snapshot never finished)."""
    from ..transfer.snapshots import get_file

    key = manifest_key(policy.s3.prefix, sid)
    path = work / f"manifest-{sid}.json"
    try:
        if get_file(client, policy.s3.bucket, key, path, MANIFEST_MAX_BYTES) is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise SnapshotError(f"s3://{policy.s3.bucket}/{key}: not JSON ({e})") from e
        return SnapshotManifest.from_json(data, f"s3://{policy.s3.bucket}/{key}")
    finally:
        path.unlink(missing_ok=True)


def matching_snapshots(policy: Policy, client: Any, work: Path, as_of: str | None = None
                       ) -> Iterator[SnapshotManifest]:
    """The lab's complete snapshots of the policy's roots, newest first (at or before `as_of` when given); those of
    other roots or labs sharing the prefix, and unfinished ones, are passed over."""
    ids = snapshot_ids(policy, client)
    chosen = select_snapshot(ids, as_of)
    if chosen is None:
        return
    for sid in reversed(ids[:ids.index(chosen) + 1]):
        manifest = read_manifest(policy, client, sid, work)
        if manifest is None:
            continue
        if manifest.lab == policy.lab.name and tuple(manifest.roots) == tuple(policy.roots):
            yield manifest


def iter_snapshot(policy: Policy, client: Any, manifest: SnapshotManifest, work: Path) -> Iterator[Entry]:
    """Every record of a snapshot, in order, a chunk at a time; each chunk checked against its manifest line
    (size and SHA-256 before any of its records is handed out; entries and order as they stream: a consumer writes
    through a RecordWriter, which an exception aborts)."""
    from ..transfer.snapshots import get_file, sha256_file

    bucket, prefix, sid = policy.s3.bucket, policy.s3.prefix, manifest.snapshot_id
    previous: bytes = b""
    for chunk in manifest.chunks:
        key = chunk_key(prefix, sid, chunk.name)
        where = f"s3://{bucket}/{key}"
        path = work / f"{sid}-{chunk.name}"
        try:
            size = get_file(client, bucket, key, path, chunk.size_bytes)
            if size is None:
                raise SnapshotError(f"{where}: chunk missing from the bucket", hint=_HINT)
            if size != chunk.size_bytes or sha256_file(path) != chunk.sha256:
                raise SnapshotError(f"{where}: chunk fails its checksum (size {size}, manifest {chunk.size_bytes})",
                                    hint=_HINT)
            count = 0
            try:
                for entry in _checked_chunk(path, where, previous):
                    count += 1
                    previous = entry.key
                    yield entry
            except (RecordFormatError, CatalogError, EOFError, OSError) as e:
                raise SnapshotError(f"{where}: chunk unreadable: {e}", hint=_HINT) from e
            if count != chunk.entries:
                raise SnapshotError(f"{where}: {count} records, manifest says {chunk.entries}", hint=_HINT)
        finally:
            path.unlink(missing_ok=True)


_HINT = "use an older snapshot (`fs3g snapshots`, --as-of), or rebuild with `fs3g catalog rebuild`"


def _checked_chunk(path: Path, where: str, previous: bytes) -> Iterator[Entry]:
    for entry in checked_order(read_records(path), where):
        if previous and entry.key <= previous:
            raise CatalogError(f"{where}: records out of order across chunks")
        yield entry


def download_catalog(policy: Policy, client: Any, manifest: SnapshotManifest, dest: Path, work: Path) -> int:
    """The snapshot as the local catalog file `dest` (replaced atomically only once every chunk passed), with the
    catalog's target and origin recorded; its entry count."""
    with RecordWriter(dest) as writer:
        for entry in iter_snapshot(policy, client, manifest, work):
            writer.write(entry)
        count = writer.count
    record_catalog_target(policy)
    record_origin(policy, manifest.snapshot_id, dest)
    return count


def snapshot_to_file(policy: Policy, client: Any, manifest: SnapshotManifest, dest: Path, work: Path) -> int:
    """The snapshot as a catalog file `dest` (a compare's or restore's own copy: the lab's catalog and its notes are
    not touched); its entry count. Every chunk is checked as `iter_snapshot` checks it."""
    with RecordWriter(dest) as writer:
        for entry in iter_snapshot(policy, client, manifest, work):
            writer.write(entry)
        return writer.count


def chosen_snapshot(policy: Policy, client: Any, work: Path, as_of: str | None) -> SnapshotManifest | None:
    """The snapshot a restore or compare reads: the newest complete one of the policy's lab and roots (at or before
    `as_of`: a time or a snapshot id). None when there is none."""
    return next(matching_snapshots(policy, client, work, as_of), None)


def record_origin(policy: Policy, sid: str | None, catalog_file: Path) -> None:
    """Note which snapshot the local catalog is; None: the catalog is newer than any snapshot (its own failed)."""
    path = catalog_origin_path(policy)
    if sid is None:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(path, CatalogOrigin(sid, catalog_file.stat().st_size).to_json())


def read_origin(policy: Policy) -> CatalogOrigin | None:
    path = catalog_origin_path(policy)
    if not path.is_file():
        return None
    try:
        return CatalogOrigin.from_json(read_json(path), str(path))
    except Exception:  # a damaged note is no note: the catalog is then judged by itself
        return None
