"""The stage of a restore: a Glacier restore request for every archived object (once), then readiness polls, by
listings with RestoreStatus (HEAD where a listing cannot say); and its read-only preview for `restore --dry-run`.

Packs: the thaw unit of packed files is their pack. The packs a shard's packed records point at are listed by
directory (`packs/<run_id>/`, with RestoreStatus), which gives each one's size and storage class (recorded in the
shard's stage file as "packs", so the download task knows each pack's size without a request); a pack in an archive
class is restore-requested once per stage pass however many of its members (and shards) are selected, then polled like
any archived object.

Large objects: the same directory listings give each one's size, ETag, class and LastModified, recorded in the
shard's stage file as "large" (StagedObject; null for a key the bucket does not list), so a restore from a catalog
or a snapshot downloads a large file with no HEAD: the catalog's record has its metadata and tree hash, the listing
the ETag its ranged GETs pin (IfMatch), and restore --as-of judges from LastModified whether the object is newer than
the snapshot. Memory: one shard's keys, plus the set of packs requested in this pass.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..config import ARCHIVED_CLASSES, Policy, RestoreTier, StorageClass
from ..errors import UsageError
from ..runs.layout import ensure_private_dir, read_json, write_json_atomic
from ..model.keys import LONG_DIR, KeyClass, object_key
from ..model.packs import PackRef, absolute_key
from ..model.records import Entry, EntryKind, display_path, group_hard_links, hard_link_identity, packed, read_records
from ..transfer.downloader import RequestOutcome, list_with_restore_status, request_restore
from ..transfer.objects import head_object
from .layout import LIST_THREADS, default_client, load_header

log = logging.getLogger(__name__)


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


def pack_of(entry: Entry) -> str | None:
    """The pack (relative key) a packed record's data is in; None for a per-object one."""
    return PackRef.decode(entry.location, display_path(entry.path)).pack if packed(entry) else None


def pack_sizes(stage_record: dict) -> dict[str, int]:
    """The sizes of the packs a stage file lists (relative key -> bytes)."""
    return {pack: int(info["bytes"]) for pack, info in stage_record.get("packs", {}).items()}


@dataclass(frozen=True)
class StagedObject:
    """A large object as the stage's listing saw it (stage file "large": key -> this, or null when not listed):
    what the download needs instead of a HEAD (its size, the ETag its ranged GETs pin, its class, LastModified)."""

    size_bytes: int
    etag: str
    storage_class: str
    modified_s: float

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.size_bytes, "etag": self.etag, "class": self.storage_class, "modified": self.modified_s}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "StagedObject":
        try:
            return cls(int(data["bytes"]), str(data["etag"]), str(data["class"]), float(data["modified"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"bad large-object line ({e})", path=where) from None


def staged_large(stage_record: dict, where: str) -> dict[str, StagedObject | None]:
    """The large objects a stage file lists (key -> StagedObject, None: the bucket did not list it); empty for a
    stage file written before it listed them (the download then HEADs)."""
    return {key: None if info is None else StagedObject.from_json(info, where)
            for key, info in stage_record.get("large", {}).items()}


def large_key(policy: Policy, entry: Entry) -> str | None:
    if packed(entry) or entry.kind is not EntryKind.FILE or entry.size_bytes <= policy.storage.small_file_threshold_bytes:
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
    client = (client_factory or default_client)(policy)
    tier, days = header.tier, header.days
    pending_total = 0
    requested_packs: set[str] = set()  # one restore request per pack, however many shards hold its members
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header.shards:
            path = layout.stage_file(shard.index)
            if path.exists():
                record = read_json(path)
                record["pending"] = _still_pending(client, policy.s3.bucket, record["pending"], pool)
            else:
                record = _request_shard(client, policy, layout.shard_file(shard.index), tier, days, pool,
                                        requested_packs)
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
    elif waited >= policy.restore.wait_limit_s or not header.wait:
        verdict = StageVerdict.GAVE_UP
    else:
        verdict = StageVerdict.WAITING
    state["verdict"] = verdict.value
    write_json_atomic(layout.stage_state, state)
    log.info("stage: %d restore requests so far, %d still in progress after poll %d: %s", state["requested"],
             pending_total, state["polls"], verdict.value)
    return StageReport(verdict, state["requested"], pending_total, state["polls"])


def _request_shard(client: Any, policy: Policy, shard_file: Path, tier: str, days: int,
                   pool: ThreadPoolExecutor, requested_packs: set[str]) -> dict:
    """List the directories of the shard's large objects and packs, and request a restore of each archived one (a
    pack once, even when an earlier shard of this pass holds members of it too)."""
    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    # One object per link group: the other links are made from the first file, never downloaded.
    units = [unit[0] for unit in restore_units(read_records(shard_file))]
    keys = [k for k in (large_key(policy, e) for e in units) if k]
    packs = {absolute_key(prefix, p): p for p in sorted({p for p in map(pack_of, units) if p})}
    directories = sorted({_directory(k) for k in [*keys, *packs] if f"/{LONG_DIR}/" not in k})
    classes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    wanted = set(keys)
    large: dict[str, Any] = dict.fromkeys(keys)  # null: not in the bucket (the download says so by name)
    for listing in pool.map(lambda d: list_with_restore_status(client, bucket, d), directories):
        classes.update((k, r.obj.storage_class) for k, r in listing.items())
        sizes.update((k, r.obj.size_bytes) for k, r in listing.items() if k in packs)
        large.update((k, StagedObject(r.obj.size_bytes, r.obj.etag, r.obj.storage_class, r.obj.modified_s).to_json())
                     for k, r in listing.items() if k in wanted)
    for key in (k for k in keys if f"/{LONG_DIR}/" in k):
        found = head_object(client, bucket, key)
        if found is not None:
            classes[key] = found.storage_class
            large[key] = StagedObject(found.size_bytes, found.etag, found.storage_class,
                                      found.last_modified_ns / 1e9).to_json()
    archived_values = {c.value for c in ARCHIVED_CLASSES}
    archived = [k for k in [*keys, *packs] if classes.get(k) in archived_values]
    refused: dict[str, str] = {}
    to_request = []
    already = []  # packs an earlier shard of this pass requested: polled, not requested again
    for key in archived:
        if classes[key] == StorageClass.DEEP_ARCHIVE.value and tier == RestoreTier.EXPEDITED.value:
            refused[key] = "DEEP_ARCHIVE has no Expedited retrieval: restore it again with --tier Standard or Bulk"
        elif key in requested_packs:
            already.append(key)
        else:
            to_request.append(key)
    outcomes = list(pool.map(lambda k: request_restore(client, bucket, k, days, tier), to_request))
    requested_packs.update(k for k in to_request if k in packs)
    pending = [k for k, o in zip(to_request, outcomes) if o in (RequestOutcome.REQUESTED, RequestOutcome.IN_PROGRESS)]
    requested = sum(o is RequestOutcome.REQUESTED for o in outcomes)
    return {"archived": len(archived), "requested": requested, "pending": pending + already, "refused": refused,
            "packs": {rel: {"bytes": sizes[k], "class": classes[k]} for k, rel in packs.items() if k in sizes},
            "large": large}


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
    # Packed files are thawed by pack: (packs, pack bytes) per state, as for objects above; the packed files
    # themselves (files, bytes) in `packed`. A pack to request counts in to_request and to_request_by_class too
    # (one RestoreObject, its whole size retrieved): the bytes to thaw.
    packed: list[int] = field(default_factory=lambda: [0, 0])
    packs: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ready(self) -> list[int]:
        """Downloadable now, without a restore request."""
        return [self.standard[0] + self.restored[0], self.standard[1] + self.restored[1]]

    def to_json(self) -> dict[str, Any]:
        pair = lambda c: {"files": c[0], "bytes": c[1]}  # noqa: E731
        return {"tier": self.tier, "days": self.days, "ready": pair(self.ready), "standard": pair(self.standard),
                "restore_requests": pair(self.to_request), "in_progress": pair(self.in_progress),
                "restored": pair(self.restored), "refused": pair(self.refused), "missing": pair(self.missing),
                "archived_by_class": {k: pair(v) for k, v in sorted(self.archived_by_class.items())},
                "packed": pair(self.packed),
                "packs": {k: {"packs": v[0], "bytes": v[1]} for k, v in sorted(self.packs.items())}}


def _count_pack(preview: StagePreview, key: str, size: int | None, found: tuple[str, bool | None] | None,
                tier: str, archived_classes: set[str]) -> None:
    def count(state: str, klass: str | None = None) -> None:
        which = preview.packs.setdefault(state, [0, 0])
        which[0] += 1
        which[1] += size or 0
        if klass is not None:
            by = preview.to_request_by_class.setdefault(klass, [0, 0])
            by[0] += 1
            by[1] += size or 0

    if size is None or found is None:
        count("missing")
        return
    klass, ready = found
    if klass not in archived_classes:
        count("standard")
    elif ready:
        count("restored")
    elif ready is False:
        count("in_progress")
    elif klass == StorageClass.DEEP_ARCHIVE.value and tier == RestoreTier.EXPEDITED.value:
        count("refused")
    else:
        count("to_request", klass)
        preview.to_request[0] += 1
        preview.to_request[1] += size


def preview_stage(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None) -> StagePreview:
    """Classify a prepared restore's objects as `stage` would find them, by listings (and HEAD where a listing cannot
    say), without requesting any restore, downloading or writing anything. Memory: one shard's keys at a time."""
    layout, header, policy = load_header(run_dir)
    client = (client_factory or default_client)(policy)
    bucket, tier = policy.s3.bucket, header.tier
    archived_classes = {c.value for c in ARCHIVED_CLASSES}
    preview = StagePreview(tier, header.days)

    def count(which: list[int], size: int) -> None:
        which[0] += 1
        which[1] += size

    seen_packs: set[str] = set()  # each pack counted once, however many shards hold its members

    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header.shards:
            large: dict[str, int] = {}
            packs: set[str] = set()
            for entry in read_records(layout.shard_file(shard.index)):
                key = large_key(policy, entry)
                pack = pack_of(entry)
                if pack is not None:
                    count(preview.packed, entry.size_bytes)
                    key = absolute_key(policy.s3.prefix, pack)
                    if key not in seen_packs:
                        packs.add(key)
                        seen_packs.add(key)
                elif key is None:
                    count(preview.standard, entry.size_bytes)
                else:
                    large[key] = entry.size_bytes
            found: dict[str, tuple[str, bool | None]] = {}
            directories = sorted({_directory(k) for k in [*large, *packs] if f"/{LONG_DIR}/" not in k})
            pack_bytes: dict[str, int] = {}
            for listing in pool.map(lambda d: list_with_restore_status(client, bucket, d), directories):
                found.update((k, (r.obj.storage_class, r.ready)) for k, r in listing.items() if k in large)
                pack_bytes.update((k, r.obj.size_bytes) for k, r in listing.items() if k in packs)
                found.update((k, (r.obj.storage_class, r.ready)) for k, r in listing.items() if k in packs)
            for key in packs:
                _count_pack(preview, key, pack_bytes.get(key), found.get(key), tier, archived_classes)
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
