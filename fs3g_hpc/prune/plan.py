"""The planning pass of `fs3g prune` (in the calling process): decide which snapshots are kept, collect what they
reference, and cut the bucket's data key space into key-range shards for the array (prune/task.py).

What it reads: the lab's snapshots (catalog/<id>/manifest.json); the retention rule (model/retention.py) splits them
into kept and forgotten. Snapshots of other labs or roots sharing the prefix, and unfinished ones (no manifest), are
never forgotten, and their records count as references like the kept ones; so does the local catalog
(<run_root>/<lab>/catalog.rec), which may be newer than any snapshot. The referenced set = every key a record of them
names (model/keys.object_key: smallfile/ AND largefile/ for a per-object file, since the threshold may have changed;
symlinks/; pathmap/ for hashed long paths; a packed record's pack and its index). It is spilled to sorted runs of
`SPILL_KEYS` keys in a private work directory and merged (heapq), never held as a set.

The shards: the data prefixes `largefile/ packs/ pathmap/ smallfile/ symlinks/` (DATA_DIRS, in key order) are each
cut at every `shards.max_files`-th referenced key they hold (the sorted references' quantiles: a shard's listing is
about its references plus what no snapshot names any more), so a prefix no snapshot references is one shard and a
large one several. Shard N lists `list_prefix` after `after` up to and including `until` (either may be absent), and
gets its range's referenced keys (shards/shard-N.refs) and the newest snapshot's own (shards/shard-N.newest), both
sorted, written as the merged stream passes. The header (prune.json) is written last.

Memory: one spill run of keys (SPILL_KEYS), one open shard file, one small summary per shard.
"""

from __future__ import annotations

import heapq
import os
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Iterator

from .. import __version__
from ..config import Policy, policy_to_dict
from ..config.pricing import Prices
from ..model.keys import KeyClass, object_key, pathmap_key
from ..model.packs import PACKS_DIR, PackRef, absolute_key, index_key
from ..model.records import EntryKind, Entry, read_records
from ..model.retention import Decision, decide_snapshots as decide_with_supersedes
from ..model.snapshots import SnapshotManifest, snapshot_time
from ..runs.catalog import catalog_path
from ..runs.files import PruneHeader
from ..runs.layout import FILE_MODE, ensure_private_dir, make_private_dir, write_json_atomic
from .files import PruneLayout, decisions_to_json

SPILL_KEYS = 200_000  # keys sorted in memory per run file
DATA_DIRS = sorted([KeyClass.SMALL.value, KeyClass.LARGE.value, KeyClass.SYMLINK.value, PACKS_DIR, "pathmap"])


# -- references ------------------------------------------------------------------------------------------------------

def entry_keys(prefix: str, entry: Entry) -> Iterator[str]:
    """Every key a catalog record may need (conservative: both size classes of a per-object file)."""
    if entry.kind is EntryKind.DIRECTORY or entry.kind is EntryKind.SPECIAL:
        return
    if entry.location:
        ref = PackRef.decode(entry.location, "catalog record")
        pack = absolute_key(prefix, ref.pack)
        yield pack
        yield index_key(pack)
        return
    classes = (KeyClass.SYMLINK,) if entry.kind is EntryKind.SYMLINK else (KeyClass.SMALL, KeyClass.LARGE)
    for klass in classes:
        key = object_key(prefix, klass, entry.path)
        yield key.key
        if key.long_path_sha256 is not None:
            yield pathmap_key(prefix, key.long_path_sha256)


class KeySpill:
    """Keys written to sorted run files of at most `run_keys` each; `sorted_unique()` merges them."""

    def __init__(self, work: Path, tag: str, run_keys: int = SPILL_KEYS):
        self.work, self.tag, self.run_keys = work, tag, run_keys
        self.buffer: list[str] = []
        self.runs: list[Path] = []

    def add(self, key: str) -> None:
        self.buffer.append(key)
        if len(self.buffer) >= self.run_keys:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        path = self.work / f"{self.tag}-{len(self.runs):06d}.keys"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for key in sorted(set(self.buffer)):
                out.write(key + "\n")
        self.runs.append(path)
        self.buffer = []

    def sorted_unique(self) -> Iterator[str]:
        self.flush()
        files = [open(p, encoding="utf-8") for p in self.runs]
        try:
            previous = None
            for line in heapq.merge(*files):
                key = line[:-1]
                if key != previous:
                    previous = key
                    yield key
        finally:
            for f in files:
                f.close()


def data_dir(prefix: str, directory: str) -> str:
    return "/".join(p for p in (prefix, directory) if p) + "/"


# -- the pass ----------------------------------------------------------------------------------------------------------

def all_manifests(policy: Policy, client: Any, work: Path) -> tuple[list[SnapshotManifest], list[str]]:
    """(complete manifests, ids without a manifest) under the prefix, oldest first."""
    from ..snapshots.store import read_manifest, snapshot_ids

    complete, unfinished = [], []
    for sid in snapshot_ids(policy, client):
        manifest = read_manifest(policy, client, sid, work)
        if manifest is None:
            unfinished.append(sid)
        else:
            complete.append(manifest)
    return complete, unfinished


def decide_snapshots(policy: Policy, manifests: list[SnapshotManifest], now: datetime) -> list[Decision]:
    """The retention rule applied to this lab's own snapshots (same lab, same roots), newest first."""
    ours = [m for m in manifests if m.lab == policy.lab.name and tuple(m.roots) == tuple(policy.roots)]
    return decide_with_supersedes([(m.snapshot_id, snapshot_time(m.snapshot_id), m.supersedes) for m in ours],
                                  policy.retention.rule(), now)


def nothing_to_list(policy: Policy, decisions: list[Decision]) -> bool:
    """No snapshot of ours (nothing can be judged unreferenced), or no rule and so nothing forgotten: no listing."""
    return not decisions or (all(d.keep for d in decisions) and policy.retention.rule().empty)


class _ShardWriter:
    """The shards as the sorted references stream past: one open refs file at a time."""

    def __init__(self, layout: PruneLayout, per_shard: int):
        self.layout, self.per_shard = layout, max(1, per_shard)
        self.shards: list[dict[str, Any]] = []
        self._out: IO[str] | None = None
        self._last = ""

    def open(self, directory: str, list_prefix: str, after: str) -> None:
        self.close()
        index = len(self.shards)
        self.shards.append({"index": index, "file": self.layout.refs_file(index).name, "files": 0, "bytes": 0,
                            "dir": directory, "list_prefix": list_prefix, "after": after, "until": ""})
        fd = os.open(self.layout.refs_file(index), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        self._out = os.fdopen(fd, "w", encoding="utf-8")

    def add(self, key: str) -> None:
        assert self._out is not None
        current = self.shards[-1]
        if current["files"] >= self.per_shard:
            current["until"] = self._last
            self.open(current["dir"], current["list_prefix"], self._last)
            current = self.shards[-1]
        self._out.write(key + "\n")
        current["files"] += 1
        self._last = key

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _split_newest(layout: PruneLayout, shards: list[dict[str, Any]], newest: Iterator[str]) -> None:
    """The newest snapshot's references (sorted, a subset of the referenced keys) routed to their shards' files."""
    outs = []
    try:
        for s in shards:
            fd = os.open(layout.newest_file(s["index"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            outs.append(os.fdopen(fd, "w", encoding="utf-8"))
        i = 0
        for key in newest:
            while i < len(shards) and not _in_shard(key, shards[i]):
                i += 1
            if i == len(shards):
                break  # outside every data prefix (it cannot be listed, so it cannot be deleted)
            outs[i].write(key + "\n")
    finally:
        for out in outs:
            out.close()


def _in_shard(key: str, shard: dict[str, Any]) -> bool:
    return key.startswith(shard["list_prefix"]) and (not shard["until"] or key <= shard["until"])


def planning_pass(policy: Policy, client: Any, run_dir: Path, work: Path, *, now: datetime, apply: bool,
                  allow_early_delete: bool, prices: Prices | None, batch_keys: int,
                  manifests: list[SnapshotManifest], decisions: list[Decision]) -> tuple[PruneLayout, PruneHeader]:
    """The run directory of a prune (see the module docstring): shards, their reference files, the header last."""
    from ..snapshots.store import iter_snapshot

    prefix = policy.s3.prefix
    layout = PruneLayout(ensure_private_dir(run_dir))  # with --apply made (empty) by prune/run.planning
    make_private_dir(layout.shards_dir)
    forgotten = {d.snapshot_id for d in decisions if not d.keep}
    newest = decisions[0].snapshot_id
    referenced = KeySpill(work, "ref")
    newest_refs = KeySpill(work, "newest")
    for manifest in manifests:
        if manifest.snapshot_id in forgotten:
            continue
        is_newest = manifest.snapshot_id == newest
        for entry in iter_snapshot(policy, client, manifest, work):
            for key in entry_keys(prefix, entry):
                referenced.add(key)
                if is_newest:
                    newest_refs.add(key)
    local = catalog_path(policy)
    if local.is_file():
        for entry in read_records(local):
            for key in entry_keys(prefix, entry):
                referenced.add(key)
    writer = _ShardWriter(layout, policy.shards.max_files)
    refs = referenced.sorted_unique()
    ref = next(refs, None)
    try:
        for directory in DATA_DIRS:
            list_prefix = data_dir(prefix, directory)
            writer.open(directory, list_prefix, "")
            while ref is not None and ref < list_prefix:
                ref = next(refs, None)  # outside every data prefix: never listed
            while ref is not None and ref.startswith(list_prefix):
                writer.add(ref)
                ref = next(refs, None)
    finally:
        writer.close()
    _split_newest(layout, writer.shards, newest_refs.sorted_unique())
    header = {
        "format": 1, "tool_version": __version__, "created": now.isoformat(timespec="seconds"),
        "lab": policy.lab.name, "bucket": policy.s3.bucket, "prefix": prefix, "apply": apply,
        "allow_early_delete": allow_early_delete, "now": now.isoformat(), "newest": newest,
        "newest_s": snapshot_time(newest).timestamp(), "snapshots": decisions_to_json(decisions),
        "kept": [d.snapshot_id for d in decisions if d.keep], "forgotten": sorted(forgotten),
        "batch_keys": batch_keys, "prices": prices.to_json() if prices is not None else None,
        "shard_count": len(writer.shards), "shards": writer.shards, "policy": policy_to_dict(policy)}
    write_json_atomic(layout.header_file, header)
    return layout, PruneHeader.from_json(header, layout.header_file)
