"""`fs3g catalog rebuild --config C`: the lab's catalog (and a snapshot) built from the bucket alone, for a bucket
written per object without snapshots (by the original tool, or by fs3g before snapshots).

    1. list   [PREFIX/]{smallfile,largefile,symlinks}/<root>/ for each root (one request per 1,000 keys), plus the
              shared .fs3g-long/ directories (their pathmap objects say which path each holds), cut by key range
              into shards of `snapshots.rebuild_shard_keys` keys (work/keys-NNNNNN.rec)
    2. shards each shard HEADs its objects (listings carry no metadata: one HEAD per object is unavoidable here) in
              `workers` threads and writes its records sorted (work/shard-NNNNNN.rec)
    3. merge  the shards merged by path (a path under two classes keeps the newer mtime) into
              <run_root>/<lab>/catalog.rec, then a snapshot written as a merge writes one

Records carry the object metadata's mtime, ctime, atime, mode, owner and tree hash (the original tool's float-string
mtimes kept at their precision; model/mtimes.py decides equality), so the next backup uploads only what changed.
An object without readable metadata is left out (so that file is backed up again) and counted. Memory: one listing
page and `workers` HEADs in flight, one shard's records while sorting (rebuild_shard_keys), one record per shard while
merging. Nothing in the bucket is changed except the new snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import Policy
from ..model.keys import LONG_DIR, PATHMAP_MAX_BYTES, KeyClass, encode_path, parse_key, pathmap_key
from ..model.mtimes import text_ns
from ..model.objectmeta import TREEHASH_KEY
from ..model.records import Entry, EntryKind, RecordWriter, by_key, read_records, sorted_stream, write_records
from ..runs.catalog import catalog_path, record_catalog_target
from ..runs.layout import lab_dir
from .store import record_origin, write_snapshot

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 32
_CLASSES = (KeyClass.SMALL, KeyClass.LARGE, KeyClass.SYMLINK)


@dataclass
class RebuildSummary:
    listed: int = 0
    entries: int = 0
    heads: int = 0
    unusable: int = 0
    shards: int = 0
    catalog: str = ""
    snapshot_id: str = ""

    def lines(self) -> list[str]:
        return [f"catalog rebuild: {self.listed:,} objects listed in {self.shards} shard(s), {self.heads:,} HEAD "
                f"requests; {self.entries:,} catalog entries -> {self.catalog}",
                f"  snapshot {self.snapshot_id}" + (f"; {self.unusable:,} objects without readable metadata left "
                                                    "out (backed up again next time)" if self.unusable else "")]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _listed_keys(policy: Policy, client: Any) -> Iterator[Entry]:
    """The objects under the policy's roots as placeholder records (path, class in `dev`, size), key-range order."""
    from ..transfer.objects import list_tree, read_small_object

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    roots = [r.encode("utf-8", "surrogateescape").rstrip(b"/") for r in policy.roots]

    def under_roots(path: bytes) -> bool:
        return any(path == r or path.startswith(r + b"/") for r in roots)

    for klass in _CLASSES:
        for root in roots:
            base = _join(prefix, klass.value, encode_path(root)) + "/"
            for key, listed in list_tree(client, bucket, base):
                _, path, digest = parse_key(prefix, key)
                if path is not None:
                    yield _placeholder(path, klass, listed.size_bytes)
        for key, listed in list_tree(client, bucket, _join(prefix, klass.value, LONG_DIR) + "/"):
            digest = parse_key(prefix, key)[2] or ""
            path = read_small_object(client, bucket, pathmap_key(prefix, digest), PATHMAP_MAX_BYTES)
            if path is not None and hashlib.sha256(path).hexdigest() == digest and under_roots(path):
                yield _placeholder(path, klass, listed.size_bytes)


def _placeholder(path: bytes, klass: KeyClass, size: int) -> Entry:
    kind = EntryKind.SYMLINK if klass is KeyClass.SYMLINK else EntryKind.FILE
    return Entry.of(path, kind, size, 0, 0, 0, 0, 0, 0, _CLASSES.index(klass), 0, 1)


def entry_from_metadata(listed: Entry, metadata: dict[str, str]) -> Entry | None:
    """The catalog record an object's metadata describes; None when it has no readable mtime."""
    try:
        mtime = text_ns(metadata["mtime"])
    except (KeyError, ValueError):
        return None

    def number(name: str, parse: Callable[[str], int], default: int) -> int:
        try:
            return parse(metadata[name])
        except (KeyError, ValueError):
            return default

    def octal(text: str) -> int:
        text = text.strip()
        return int(text[2:] if text.lower().startswith("0o") else text, 8)

    is_link = listed.kind is EntryKind.SYMLINK
    mode = number("mode", octal, 0o120777 if is_link else 0o100644)
    tree = metadata.get(TREEHASH_KEY, "").strip().lower()
    tree_hash = bytes.fromhex(tree) if len(tree) == 64 and all(c in "0123456789abcdef" for c in tree) else b""
    return listed._replace(mtime_ns=mtime, ctime_ns=number("ctime", text_ns, 0), atime_ns=number("atime", text_ns, 0),
                           mode=mode, uid=number("owneruid", int, 0), gid=number("groupuid", int, 0), dev=0,
                           tree_hash=tree_hash)


def _head_shard(policy: Policy, client: Any, keys_file: Path, out: Path, workers: int,
                summary: RebuildSummary) -> None:
    from ..compare.join import bounded_map
    from ..model.keys import object_key
    from ..transfer.objects import head_object

    bucket, prefix = policy.s3.bucket, policy.s3.prefix

    def head(entry: Entry) -> Any:
        return head_object(client, bucket, object_key(prefix, _CLASSES[entry.dev], entry.path).key)

    records: list[Entry] = []
    with ThreadPoolExecutor(workers) as pool:
        for listed, info in bounded_map(pool, head, read_records(keys_file), workers * 4):
            summary.heads += 1
            record = None if info is None else entry_from_metadata(listed, dict(info.metadata))
            if record is None:
                summary.unusable += 1
                continue
            records.append(record._replace(size_bytes=info.size_bytes))
    records.sort(key=by_key)
    write_records(out, records)


def _newest_per_path(entries: Iterator[Entry]) -> Iterator[Entry]:
    for _, group in groupby(entries, key=by_key):
        yield max(group, key=lambda e: e.mtime_ns)


def rebuild_catalog(policy: Policy, *, client_factory: Callable[[Policy], Any] | None = None,
                    workers: int = DEFAULT_WORKERS) -> RebuildSummary:
    """Steps 1-3 of the module's docstring; the summary of what was built."""
    if client_factory is None:
        from ..transfer.client import ClientSettings, make_s3_client

        client = make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=workers))
    else:
        client = client_factory(policy)
    summary = RebuildSummary()
    lab = lab_dir(policy)
    lab.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".rebuild-", dir=lab))
    try:
        per_shard = policy.snapshots.rebuild_shard_keys
        key_files: list[Path] = []
        writer: RecordWriter | None = None
        for entry in _listed_keys(policy, client):
            if writer is None or writer.count >= per_shard:
                if writer is not None:
                    writer.close()
                writer = RecordWriter(work / f"keys-{len(key_files):06d}.rec")
                key_files.append(writer.path)
            writer.write(entry)
            summary.listed += 1
        if writer is not None:
            writer.close()
        summary.shards = len(key_files)
        shard_files = []
        for i, keys_file in enumerate(key_files):
            out = work / f"shard-{i:06d}.rec"
            _head_shard(policy, client, keys_file, out, workers, summary)
            keys_file.unlink()
            shard_files.append(out)
        catalog = catalog_path(policy)
        merged = _newest_per_path(sorted_stream(shard_files, work))
        summary.entries = write_records(catalog, merged)
        os.chmod(catalog, 0o600)
        record_catalog_target(policy)
        summary.catalog = str(catalog)
        manifest = write_snapshot(policy, catalog, client, work, source="rebuild")
        record_origin(policy, manifest.snapshot_id, catalog)
        summary.snapshot_id = manifest.snapshot_id
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary
