"""`fs3g prune --config C [--apply] [--allow-early-delete] [--json]`: retention applied to the bucket.

What it reads: the lab's snapshots (catalog/<id>/manifest.json); the retention rule (model/retention.py) splits them
into kept and forgotten. Snapshots of other labs or roots sharing the prefix, and unfinished ones (no manifest), are
never forgotten, and their records count as references like the kept ones; so does the local catalog
(<run_root>/<lab>/catalog.rec), which may be newer than any snapshot. The referenced set = every key a record of them
names (model/keys.object_key: smallfile/ AND largefile/ for a per-object file, since the threshold may have changed;
symlinks/; pathmap/ for hashed long paths; a packed record's pack and its index). It is spilled to sorted runs of
`SPILL_KEYS` keys on disk and merged (heapq), then merge-joined with ONE listing of the data prefixes (largefile/
packs/ pathmap/ smallfile/ symlinks/, each listed in key order, concatenated in prefix order): memory is one run of
keys plus one listing page, never a set of all keys.

What it deletes (`--apply` only; the dry run changes nothing): the listed objects no reference names, except those
modified after the newest snapshot was made (a later backup's, not merged yet) and those still inside their storage
class's minimum duration (config/pricing.MINIMUM_STORAGE_DAYS) unless --allow-early-delete; then the forgotten
snapshots' chunks, then their manifests last. So a crash never leaves a kept snapshot pointing at a deleted object,
and a rerun (which recomputes everything) picks up where it stopped.

First, when `storage.pack_compact_below` > 0, pack compaction (prune/compact.py): packs below it are rewritten and a
snapshot superseding the newest published, so that the plan below forgets the superseded one (retention,
model/retention.decide_snapshots) and deletes the old packs like any unreferenced object.

Run directory `<run_root>/<lab>/prune-<UTC time>/` (0700, files 0600):
    prune.json      the header (PruneHeader): kept and forgotten snapshots, totals; written before any delete
    delete.txt      every key it will delete, in deletion order, written BEFORE the first delete
    deleted.jsonl   one line per DeleteObjects batch done ({"batch", "keys", "errors"}): the journal
    compact.json, compact.jsonl   compaction's plan and journal (prune/compact.py)
Safety: before each batch, the batch is merge-checked against the newest snapshot's own sorted references; a hit
raises (nothing of that batch is deleted). Prune refuses while a backup lock exists (prune/locks.py) and holds
`locks/prune.json` while deleting.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..config import Policy
from ..config.pricing import Prices, minimum_storage_days
from ..errors import Fs3gError, UsageError
from ..model.keys import KeyClass, object_key, pathmap_key
from ..model.locks import LockKind
from ..model.packs import PACKS_DIR, PackRef, absolute_key, index_key
from ..model.records import EntryKind, Entry, read_records
from ..model.retention import Decision, decide_snapshots
from ..model.sizes import format_size
from ..model.snapshots import SnapshotManifest, snapshot_prefix, snapshot_time
from ..runs.catalog import catalog_path
from ..runs.layout import default_run_dir, ensure_private_dir, lab_dir, make_private_dir, write_json_atomic

SPILL_KEYS = 200_000  # keys sorted in memory per run file
GB = 1024 ** 3
DAYS_PER_MONTH = 30
DATA_DIRS = sorted([KeyClass.SMALL.value, KeyClass.LARGE.value, KeyClass.SYMLINK.value, PACKS_DIR, "pathmap"])
FILE_MODE = 0o600


class ReferencedKeyError(Fs3gError):
    """A key about to be deleted is referenced by the newest snapshot: prune stops before that batch."""


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


# -- the plan ----------------------------------------------------------------------------------------------------------

@dataclass
class Doomed:
    key: str
    size: int
    storage_class: str
    age_days: float
    early_charge: float  # what deleting it now costs beyond its storage so far (0 when past the minimum)
    held: bool  # inside its class's minimum duration and --allow-early-delete not given


@dataclass
class PrunePlan:
    bucket: str
    prefix: str
    decisions: list[Decision]
    currency: str = ""
    objects: int = 0
    packs: int = 0
    bytes: int = 0
    monthly_cost: float = 0.0
    early_charge: float = 0.0
    held_objects: int = 0
    held_bytes: int = 0
    young_objects: int = 0  # modified after the newest snapshot: a later backup's, kept
    snapshot_objects: int = 0
    doomed_file: Path | None = None  # the data keys to delete, sorted, one per line (+ size)
    by_class: dict[str, list[int]] = field(default_factory=dict)

    @property
    def forgotten(self) -> list[str]:
        return [d.snapshot_id for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[str]:
        return [d.snapshot_id for d in self.decisions if d.keep]

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix,
                "snapshots": [{"id": d.snapshot_id, "keep": d.keep, "reasons": [r.value for r in d.reasons]}
                              for d in self.decisions],
                "forgotten": self.forgotten, "unreferenced": {"objects": self.objects, "packs": self.packs,
                                                              "bytes": self.bytes},
                "currency": self.currency, "monthly_cost_freed": round(self.monthly_cost, 6),
                "early_deletion_charge": round(self.early_charge, 6),
                "held_for_minimum_duration": {"objects": self.held_objects, "bytes": self.held_bytes},
                "newer_than_newest_snapshot": self.young_objects,
                "forgotten_snapshot_objects": self.snapshot_objects,
                "by_class": {k: {"objects": v[0], "bytes": v[1]} for k, v in sorted(self.by_class.items())}}

    def lines(self) -> list[str]:
        out = [f"snapshots: {len(self.kept)} kept, {len(self.forgotten)} forgotten"]
        for d in self.decisions:
            why = ", ".join(r.value for r in d.reasons) if d.keep else \
                f"superseded by {d.superseded_by}" if d.superseded_by else "forget"
            out.append(f"  {d.snapshot_id}  {'keep  ' if d.keep else 'forget'}  {why}")
        out.append(f"unreferenced: {self.objects:,} objects ({self.packs:,} packs), {format_size(self.bytes)}")
        for klass, (n, b) in sorted(self.by_class.items()):
            out.append(f"  {klass}: {n:,} objects, {format_size(b)}")
        cur = self.currency or "?"
        out.append(f"monthly cost freed: {self.monthly_cost:.4f} {cur}; early-deletion charge if deleted now: "
                   f"{self.early_charge:.4f} {cur}")
        if self.held_objects:
            out.append(f"held: {self.held_objects:,} objects ({format_size(self.held_bytes)}) are inside their "
                       "class's minimum duration (kept unless --allow-early-delete)")
        if self.young_objects:
            out.append(f"kept: {self.young_objects:,} objects newer than the newest snapshot (a backup not merged)")
        out.append(f"forgotten snapshots' objects: {self.snapshot_objects:,}")
        return out


def _all_manifests(policy: Policy, client: Any, work: Path) -> tuple[list[SnapshotManifest], list[str]]:
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


def make_plan(policy: Policy, client: Any, work: Path, prices: Prices | None, *, now: datetime,
              allow_early_delete: bool = False) -> tuple[PrunePlan, Path | None]:
    """Decide and join; the plan and the sorted file of the newest snapshot's references (for the hard check)."""
    from ..snapshots.store import iter_snapshot
    from ..transfer.lister import iter_objects

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    manifests, _unfinished = _all_manifests(policy, client, work)
    ours = [m for m in manifests if m.lab == policy.lab.name and tuple(m.roots) == tuple(policy.roots)]
    decisions = decide_snapshots([(m.snapshot_id, snapshot_time(m.snapshot_id), m.supersedes) for m in ours],
                                 policy.retention.rule(), now)
    plan = PrunePlan(bucket, prefix, decisions, prices.currency if prices else "")
    if not ours:
        return plan, None
    forgotten = set(plan.forgotten)
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
    newest_file = work / "newest.sorted"
    _write_lines(newest_file, newest_refs.sorted_unique())
    if not forgotten and policy.retention.rule().empty:
        return plan, newest_file
    newest_s = snapshot_time(newest).timestamp()
    doomed = work / "doomed.txt"
    refs = referenced.sorted_unique()
    ref = next(refs, None)
    last_key = ""
    fd = os.open(doomed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for directory in DATA_DIRS:
            for key, obj in iter_objects(client, bucket, "/".join(p for p in (prefix, directory) if p) + "/"):
                if key <= last_key:  # the join needs key order: a store listing otherwise is not pruned
                    raise Fs3gError(f"the listing of s3://{bucket}/ is not in key order ({last_key!r} then {key!r}); "
                                    "nothing deleted")
                last_key = key
                while ref is not None and ref < key:
                    ref = next(refs, None)
                if ref == key:
                    continue
                if obj.modified_s and obj.modified_s >= newest_s:
                    plan.young_objects += 1
                    continue
                age = max(0.0, (now.timestamp() - obj.modified_s) / 86_400) if obj.modified_s else 0.0
                minimum = minimum_storage_days(obj.storage_class)
                price = _storage_price(prices, obj.storage_class)
                charge = obj.size_bytes / GB * price * (minimum - age) / DAYS_PER_MONTH if age < minimum else 0.0
                held = age < minimum and not allow_early_delete
                plan.early_charge += charge
                if held:
                    plan.held_objects += 1
                    plan.held_bytes += obj.size_bytes
                plan.objects += 1
                plan.packs += key.endswith(".tar") and f"/{PACKS_DIR}/" in "/" + key
                plan.bytes += obj.size_bytes
                plan.monthly_cost += obj.size_bytes / GB * price
                counts = plan.by_class.setdefault(obj.storage_class, [0, 0])
                counts[0] += 1
                counts[1] += obj.size_bytes
                if not held:
                    out.write(key + "\n")
    plan.doomed_file = doomed
    for sid in sorted(forgotten):
        plan.snapshot_objects += sum(1 for _ in iter_objects(client, bucket, snapshot_prefix(prefix, sid)))
    return plan, newest_file


def _storage_price(prices: Prices | None, klass: str) -> float:
    if prices is None:
        return 0.0
    try:
        return prices.storage(klass)
    except UsageError:
        return 0.0


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")


def _read_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line[:-1]


# -- applying ----------------------------------------------------------------------------------------------------------

class NewestGuard:
    """The hard check: batches come in key order (data keys first); each is merge-checked against the newest
    snapshot's sorted references. Snapshot objects are checked to lie outside the newest snapshot's prefix."""

    def __init__(self, newest_file: Path, newest_prefix: str):
        self.refs = _read_lines(newest_file)
        self.ref = next(self.refs, None)
        self.newest_prefix = newest_prefix
        self.last = ""

    def check(self, keys: list[str]) -> None:
        for key in keys:
            if key.startswith(self.newest_prefix):
                raise ReferencedKeyError(f"refusing to delete {key}: it belongs to the newest snapshot")
            if key < self.last:  # snapshot keys after the data keys: a second sorted sequence
                continue
            self.last = key
            while self.ref is not None and self.ref < key:
                self.ref = next(self.refs, None)
            if self.ref == key:
                raise ReferencedKeyError(f"refusing to delete {key}: the newest snapshot references it")


def _deletion_order(plan: PrunePlan, client: Any) -> Iterator[str]:
    from ..transfer.lister import iter_objects

    if plan.doomed_file is not None:
        yield from _read_lines(plan.doomed_file)
    manifests = []
    for sid in sorted(plan.forgotten):
        for key, _ in iter_objects(client, plan.bucket, snapshot_prefix(plan.prefix, sid)):
            if key.endswith("/manifest.json"):
                manifests.append(key)
            else:
                yield key
    yield from manifests  # last: a snapshot stays whole or is no snapshot


@dataclass(frozen=True)
class PruneHeader:
    lab: str
    bucket: str
    prefix: str
    kept: tuple[str, ...]
    forgotten: tuple[str, ...]
    keys: int
    created: str

    def to_json(self) -> dict[str, Any]:
        return {"format": "fs3g-prune", "version": 1, "lab": self.lab, "bucket": self.bucket, "prefix": self.prefix,
                "kept": list(self.kept), "forgotten": list(self.forgotten), "keys": self.keys,
                "created": self.created}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "PruneHeader":
        if not isinstance(data, dict) or data.get("format") != "fs3g-prune":
            raise UsageError(f"{where}: not a prune header")
        return cls(str(data["lab"]), str(data["bucket"]), str(data["prefix"]), tuple(data["kept"]),
                   tuple(data["forgotten"]), int(data["keys"]), str(data["created"]))


@dataclass
class PruneResult:
    plan: PrunePlan
    run_dir: Path | None = None
    deleted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    compaction: Any = None  # prune/compact.CompactionResult, None when storage.pack_compact_below is 0


def prune(policy: Policy, *, apply: bool = False, allow_early_delete: bool = False, prices: Prices | None = None,
          client_factory: Callable[[Policy], Any] | None = None, now: datetime | None = None,
          batch_keys: int = 1000, after_batch: Callable[[int], None] | None = None, include_archived: bool = False,
          after_compact_step: Callable[[Any], None] | None = None) -> PruneResult:
    """The dry run, or with `apply` the deletion (see the module docstring), after pack compaction
    (prune/compact.py; `include_archived` lets it compact packs in archive classes). `now`, `batch_keys`,
    `after_batch` and `after_compact_step` are test seams (the clock, the DeleteObjects batch size, hooks after
    each batch's and each compaction step's journal line)."""
    from ..snapshots.baseline import default_client
    from ..transfer.prune import DELETE_BATCH, delete_keys
    from .locks import check_no_backup, release_lock, take_lock

    now = now or datetime.now(timezone.utc)
    client = (client_factory or default_client)(policy)
    check_no_backup(policy, client, now)
    lab = lab_dir(policy)
    ensure_private_dir(lab)
    work = Path(tempfile.mkdtemp(prefix=".prune-", dir=lab))
    try:
        run_dir = make_private_dir(default_run_dir(policy, now, "prune")) if apply else None
        from .compact import compact  # first: its new snapshot supersedes the newest, its old packs go below
        compaction = compact(policy, client, work, prices, apply=apply, include_archived=include_archived,
                             run_dir=run_dir, now=now, after_step=after_compact_step)
        plan, newest_file = make_plan(policy, client, work, prices, now=now, allow_early_delete=allow_early_delete)
        result = PruneResult(plan, compaction=compaction)
        if not apply or newest_file is None:
            return result
        assert run_dir is not None
        result.run_dir = run_dir
        delete_list = run_dir / "delete.txt"
        _write_lines(delete_list, _deletion_order(plan, client))  # BEFORE any delete
        total = sum(1 for _ in _read_lines(delete_list))
        write_json_atomic(run_dir / "prune.json", PruneHeader(policy.lab.name, plan.bucket, plan.prefix,
                                                              tuple(plan.kept), tuple(plan.forgotten), total,
                                                              now.isoformat(timespec="seconds")).to_json())
        guard = NewestGuard(newest_file, snapshot_prefix(plan.prefix, plan.decisions[0].snapshot_id))
        size = max(1, min(batch_keys, DELETE_BATCH))
        take_lock(policy, client, LockKind.PRUNE, str(run_dir), now=now)
        journal_fd = os.open(run_dir / "deleted.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            with os.fdopen(journal_fd, "a", encoding="utf-8") as journal:
                batch: list[str] = []
                n = 0

                def flush() -> None:
                    nonlocal n
                    guard.check(batch)
                    errors = delete_keys(client, plan.bucket, batch)
                    result.errors.extend(errors)
                    result.deleted += len(batch) - len(errors)
                    journal.write(json.dumps({"batch": n, "keys": len(batch), "errors": len(errors),
                                              "first": batch[0], "last": batch[-1]}) + "\n")
                    journal.flush()
                    os.fsync(journal.fileno())
                    if after_batch is not None:
                        after_batch(n)
                    n += 1
                    batch.clear()

                for key in _read_lines(delete_list):
                    batch.append(key)
                    if len(batch) >= size:
                        flush()
                if batch:
                    flush()
        finally:
            release_lock(policy, client, LockKind.PRUNE)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def break_lock(policy: Policy, *, client_factory: Callable[[Policy], Any] | None = None) -> str:
    """`fs3g prune --break-lock`: remove the backup lock (and a prune lock left by a killed prune)."""
    from ..snapshots.baseline import default_client
    from .locks import read_lock, release_lock

    client = (client_factory or default_client)(policy)
    said = []
    for kind in (LockKind.BACKUP, LockKind.PRUNE):
        try:
            record = read_lock(policy, client, kind)
        except UsageError as e:
            said.append(f"removed an unreadable {kind.value} lock ({e.message})")
            release_lock(policy, client, kind)
            continue
        if record is not None:
            release_lock(policy, client, kind)
            said.append(f"removed: {record.describe()}")
    return "\n".join(said) or "no lock to break"
