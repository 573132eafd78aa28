"""The stage of a restore: a Glacier restore request for every archived object (once), then readiness polls, by
listings with RestoreStatus (HEAD where a listing cannot say); and its read-only preview for `restore --dry-run`."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..config import ARCHIVED_CLASSES, Policy, RestoreTier, StorageClass
from ..runs.layout import ensure_private_dir, read_json, write_json_atomic
from ..model.keys import LONG_DIR, KeyClass, object_key
from ..model.records import Entry, EntryKind, group_hard_links, hard_link_identity, read_records
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
    client = (client_factory or default_client)(policy)
    tier, days = header.tier, header.days
    pending_total = 0
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header.shards:
            path = layout.stage_file(shard.index)
            if path.exists():
                record = read_json(path)
                record["pending"] = _still_pending(client, policy.s3.bucket, record["pending"], pool)
            else:
                record = _request_shard(client, policy, layout.shard_file(shard.index), tier, days, pool)
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
    client = (client_factory or default_client)(policy)
    bucket, tier = policy.s3.bucket, header.tier
    archived_classes = {c.value for c in ARCHIVED_CLASSES}
    preview = StagePreview(tier, header.days)

    def count(which: list[int], size: int) -> None:
        which[0] += 1
        which[1] += size

    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for shard in header.shards:
            large: dict[str, int] = {}
            for entry in read_records(layout.shard_file(shard.index)):
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
