"""`fs3g merge RUN_DIR`: verify every planned entry against the bucket, write the catalog and the report.

Directories have no object: the plan's new or changed ones (directories.rec) go to the catalog unverified.
An entry counts as backed up only when its shard's journal recorded it AND the bucket lists its object with the
recorded size and ETag. A packed entry (transfer/packer.py) counts only when its pack's "pack-done" is journaled AND
one listing of the run's `packs/<run_id>/` shows the pack with the journaled size and ETag and its index with the
journaled ETag (no request per member); otherwise it fails with a reason naming the pack. Its catalog record gets
`location = PackRef(pack, header offset, data offset, size).encode()`. A shard that never wrote its result (killed,
timed out, node lost) has every entry it did not journal counted as failed, and its open uploads aborted; an open
pack (started, never done) is aborted whatever the shard's state, since no rerun resumes a pack. Verification lists each key directory once (in parallel), so it costs one request per directory and per
1,000 keys, never one per object. After the catalog, the lab's packs.jsonl is recomputed from it (backup/catalog.py).

Memory: one shard's journal and one directory's listing at a time per worker (both bounded by `shards.max_files`),
plus the run's packs listing (bounded by the number of packs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import __version__
from ..config import Policy
from ..model.keys import LONG_DIR
from ..model.records import Entry, EntryKind, RecordWriter, RunSpiller, read_records
from ..model.sizes import format_size
from ..model.packs import PackRef, index_key, pack_key, relative_to_prefix
from ..runs.catalog import (catalog_path, catalog_target_mismatch, packs_usage_path, read_packs_usage,
                            record_catalog_target)
from ..runs.files import FailureLine, PlanHeader, Report
from ..runs.journal import DonePack, DoneRecord, read_journal
from ..runs.layout import RunLayout, journal_file, make_private_dir, read_json, write_json_atomic
from ..runs.progress import timing_fields, timing_line
from ..runs.report import shard_failures, shard_state
from ..snapshots.publish import publish_after_merge, snapshot_lines
from .catalog import PackUsageCounter, write_sorted_catalog

if TYPE_CHECKING:
    from ..transfer.lister import ListedObject

log = logging.getLogger(__name__)

LIST_THREADS = 16
CATALOG_RUN_RECORDS = 100_000  # entries per sorted run of the catalog's external sort (~300 bytes each)


@dataclass
class Count:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class MergeReport:
    run_dir: Path
    data: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.data["failed"]["files"] == 0

    def lines(self) -> list[str]:
        d = self.data
        return [
            f"merge: {self.run_dir}",
            f"  planned   {d['planned']['files']:,} files {format_size(d['planned']['bytes'])}",
            f"  verified  {d['verified']['files']:,} files {format_size(d['verified']['bytes'])} in the bucket",
            f"  unchanged {d['unchanged']['files']:,} (not planned); deleted {d['deleted']['files']:,}; "
            f"skipped {d['skipped']:,}",
            f"  failed    {d['failed']['files']:,} files {format_size(d['failed']['bytes'])}"
            + (f" (see {d['failures_file']})" if d["failed"]["files"] else ""),
            "  shards    " + ", ".join(f"{k} {v}" for k, v in sorted(d["shard_states"].items())),
            f"  catalog   {d['catalog']['path']} ({d['catalog']['entries']:,} entries)",
            *snapshot_lines(d.get("snapshot")),
            timing_line(d),
        ]


def _failure_reasons(layout: RunLayout, index: int) -> dict[bytes, tuple[str, bool]]:
    """Each failed path's reason and whether a retry may mend it (files written before that field: yes)."""
    return {item.path: (item.text(), item.retryable) for item in shard_failures(layout, index)}


def _directory(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/"


def merge_run(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None) -> MergeReport:
    layout = RunLayout(run_dir)
    plan = PlanHeader.from_json(read_json(layout.plan_file), layout.plan_file)
    policy = plan.policy_snapshot(layout.plan_file)
    clients: list[Any] = []

    def client() -> Any:
        # Made on first use: a run with nothing planned and an unchanged catalog (a no-op incremental) never imports
        # boto3 here (its snapshot is already in the bucket).
        if not clients:
            if client_factory is not None:
                clients.append(client_factory(policy))
            else:
                from ..transfer.client import ClientSettings, shared_s3_client

                clients.append(shared_s3_client(ClientSettings.from_policy(policy)))
        return clients[0]

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    work = make_private_dir(layout.run_dir / ".merge-work")
    planned, verified, failed = Count(), Count(), Count()
    retryable = Count()
    states: dict[str, int] = defaultdict(int)
    # The catalog's external sort (model/records.RunSpiller): verified entries, in memory up to CATALOG_RUN_RECORDS.
    fresh = RunSpiller(work, "catalog", CATALOG_RUN_RECORDS)
    packs_listing: list[dict[str, ListedObject]] = []  # this run's packs/<run_id>/, listed once when first needed
    run_packs: dict[str, tuple[int, int]] = {}  # verified packs of this run (relative key): members, bytes
    fail_path = layout.failures_file
    fd = os.open(fail_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fail_out, ThreadPoolExecutor(LIST_THREADS) as pool, \
                RecordWriter(layout.failed_file) as failed_records:
            def fail(entry: Entry, shard: int, reason: str, may_mend: bool = True) -> None:
                failed.add(entry.size_bytes)
                if may_mend:
                    retryable.add(entry.size_bytes)
                failed_records.write(entry)  # what a retry plan is cut from
                fail_out.write(json.dumps(FailureLine(entry.path, reason, None, may_mend, shard).to_json()) + "\n")

            def listed_packs() -> dict[str, ListedObject]:
                if not packs_listing:
                    from ..transfer.lister import list_directory

                    run_dir_key = _directory(pack_key(prefix, plan.run_id, 0, 0))  # [PREFIX/]packs/<run_id>/
                    packs_listing.append(list_directory(client(), bucket, run_dir_key))
                return packs_listing[0]

            for summary in plan.shards:
                index = summary.index
                state = shard_state(layout, index)
                states[state] += 1
                journal = read_journal(journal_file(layout, index))
                done = journal.done
                from ..transfer.lister import abort_upload

                if state != "done":  # no rerun of this shard will resume them: a retry is a new run
                    for upload in journal.open_uploads.values():
                        abort_upload(client(), bucket, upload.key, upload.upload_id)
                # A pack never finished is never resumed (a rerun packs its members again): aborted whatever the
                # shard's state (one already aborted by the rerun that replaced it costs one NoSuchUpload).
                for pack in journal.open_packs.values():
                    if pack.upload_id:
                        abort_upload(client(), bucket, pack.key, pack.upload_id)
                object_keys = [r.key for r in done.values() if r.packed is None]
                listed = _list_keys(client, bucket, iter(object_keys), pool) if object_keys else {}
                pack_problems = {k: _pack_mismatch(p, listed_packs()) for k, p in journal.packs.items()}
                reasons = _failure_reasons(layout, index) if len(done) < summary.files else {}
                members: dict[str, int] = defaultdict(int)
                # Hard links of one file share its bytes: counted once (a group is in one shard), as the plan does.
                planned_links: set[tuple[int, int]] = set()
                verified_links: set[tuple[int, int]] = set()
                for entry in read_records(layout.shards_dir / summary.file):
                    inode = (entry.dev, entry.ino) if entry.nlink > 1 and entry.kind is EntryKind.FILE else None
                    planned.add(_once(entry.size_bytes, inode, planned_links))
                    record = done.get(entry.path)
                    if record is None:
                        # A shard that never reported (killed, node lost, time limit) may well finish next time.
                        reason, may_mend = reasons.get(entry.path) or (
                            f"not backed up: shard {index} {state}" if state != "done" else "not backed up", True)
                        fail(entry, index, reason, may_mend)
                        continue
                    location = b""
                    if record.packed is not None:
                        problem = pack_problems.get(record.key) or (
                            None if record.key in journal.packs else f"pack {record.key} was never finished")
                        if not problem:
                            relative = relative_to_prefix(prefix, record.key)
                            members[relative] += 1
                            size = 0 if entry.kind is EntryKind.SYMLINK else record.size_bytes
                            location = PackRef(relative, record.packed.header_offset, record.packed.data_offset,
                                               size).encode()
                    else:
                        problem = _mismatch(record, listed.get(record.key))
                    if problem:
                        fail(entry, index, problem)
                        continue
                    verified.add(_once(record.size_bytes, inode, verified_links))
                    # The catalog keeps the version that was read, which may be newer than the planned one.
                    fresh.add(entry._replace(size_bytes=record.size_bytes, mtime_ns=record.mtime_ns,
                                             tree_hash=bytes.fromhex(record.tree_hash), location=location))
                for key, pack in journal.packs.items():
                    relative = relative_to_prefix(prefix, key)
                    if relative in members:
                        run_packs[relative] = (members[relative], pack.size_bytes)
        catalog = catalog_path(policy)
        # A catalog of another bucket or prefix (the policy moved) is not the starting point of this one.
        previous = catalog if catalog.is_file() and catalog_target_mismatch(policy) is None else None
        entries = None if previous is None or verified.files else _count_if_untouched(plan, previous)
        usage = packs_usage_path(policy)
        pack_count = None
        rewritten = entries is None
        if entries is None:
            counter = PackUsageCounter(catalog)
            if layout.directories_file.is_file():  # the plan's new or changed directories: no object to verify
                for directory in read_records(layout.directories_file):
                    fresh.add(directory)
            entries = write_sorted_catalog(previous, fresh.sorted(), layout.deleted_file, catalog,
                                           observe=counter.observe)
            record_catalog_target(policy)
            known = read_packs_usage(usage) if previous is not None else iter(())
            pack_count = counter.write(known, run_packs, usage)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Last, after the local catalog: the bucket's own copy of it (snapshots/publish.py).
    snapshot = publish_after_merge(policy, catalog, client, rewritten=rewritten,
                                   run_id=plan.run_id or layout.run_dir.name)

    changes = plan.changes
    data = {
        "tool_version": __version__,
        "merged": datetime.now(timezone.utc).isoformat(),
        "lab": plan.lab,
        "run_dir": str(layout.run_dir),
        "planned": vars(planned),
        "verified": vars(verified),
        "uploaded": vars(verified),
        "unchanged": changes["unchanged"].to_json(),
        "deleted": changes["deleted"].to_json(),
        "skipped": plan.skipped,
        "failed": vars(failed),
        "failed_retryable": vars(retryable),
        "failures_file": fail_path.name,
        "shard_states": dict(states),
        "shards": [{"index": s.index, "state": shard_state(layout, s.index)} for s in plan.shards],
        "catalog": {"path": str(catalog), "entries": entries},
        **({"snapshot": snapshot} if snapshot else {}),
        # This run's verified packs; the lab's packs.jsonl lists every pack (`lab_packs`: how many, when rewritten).
        "packs": {"count": len(run_packs), "bytes": sum(b for _, b in run_packs.values()), "usage": str(usage),
                  **({} if pack_count is None else {"lab_packs": pack_count})},
        "retry_round": plan.retry_round,
        "retry_rounds": policy.retry_rounds,
        # Elapsed from the plan's start (its scan included) to now; throughput of what this run verified.
        **timing_fields(layout, plan.shard_count, plan.created, verified.files, verified.bytes),
    }
    write_json_atomic(layout.report_file, Report.from_json(data, layout.report_file).to_json())
    report = MergeReport(layout.run_dir, data)
    text_fd = os.open(layout.summary_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(text_fd, "w", encoding="utf-8") as f:
        f.write("\n".join(report.lines()) + "\n")
    if failed.files:
        log.warning("%d files not backed up; first reasons in %s", failed.files, fail_path)
    return report


def _count_if_untouched(plan: PlanHeader, catalog: Path) -> int | None:
    """The catalog's entry count when a run that verified nothing leaves it as it is (no deletion to apply, the file
    still as the plan read it), so that a no-op incremental does not rewrite it; else None."""
    seen = plan.catalog
    changes = plan.changes
    dirs = plan.directories
    deleted = changes["deleted"].files + dirs.get("deleted", 0)
    if seen is None or plan.retry_of is not None or deleted != plan.kept_unreadable or dirs.get("new", 0) or \
            dirs.get("changed", 0):
        return None
    st = catalog.stat()
    if (seen["path"], seen["size_bytes"], seen.get("inode"), seen.get("mtime_ns")) != (
            str(catalog), st.st_size, st.st_ino, st.st_mtime_ns):
        return None
    # Every catalog record met the plan's diff once: as unchanged, changed or deleted (kept when unreadable).
    return sum(changes[c].files for c in ("unchanged", "changed", "deleted")) + sum(
        dirs.get(c, 0) for c in ("unchanged", "deleted"))


def _once(size: int, inode: tuple[int, int] | None, seen: set[tuple[int, int]]) -> int:
    if inode is None:
        return size
    if inode in seen:
        return 0
    seen.add(inode)
    return size


def may_retry(report: MergeReport) -> bool:
    """A retry round is due when rounds are left and some failure is of a kind a retry can mend (see
    transfer.target.FailureKind); a run whose failures are all permanent (access denied, vanished...) gets none."""
    return (not report.ok and report.data["retry_round"] < report.data["retry_rounds"]
            and retryable_failures(report) > 0)


def retryable_failures(report: MergeReport) -> int:
    """How many failed files a retry may mend (reports written before this was counted: every failure)."""
    return int(report.data.get("failed_retryable", report.data["failed"])["files"])


def _mismatch(record: DoneRecord, obj: ListedObject | None) -> str | None:
    if obj is None:
        return f"journaled as backed up but {record.key} is not in the bucket"
    if obj.size_bytes != record.size_bytes:
        return f"{record.key} holds {obj.size_bytes} bytes, expected {record.size_bytes}"
    if record.etag and obj.etag != record.etag:
        return f"{record.key} has ETag {obj.etag}, expected {record.etag}"
    return None


def _pack_mismatch(pack: DonePack, listing: dict[str, ListedObject]) -> str | None:
    """Why a journaled pack does not count as in the bucket (its members fail with this reason), or None."""
    obj = listing.get(pack.key)
    if obj is None:
        return f"pack {pack.key} is not in the bucket"
    if obj.size_bytes != pack.size_bytes:
        return f"pack {pack.key} holds {obj.size_bytes} bytes, expected {pack.size_bytes}"
    if pack.etag and obj.etag != pack.etag:
        return f"pack {pack.key} has ETag {obj.etag}, expected {pack.etag}"
    index = listing.get(index_key(pack.key))
    if index is None:
        return f"pack {pack.key}: its index {index_key(pack.key)} is not in the bucket"
    if pack.index_etag and index.etag != pack.index_etag:
        return f"pack {pack.key}: its index has ETag {index.etag}, expected {pack.index_etag}"
    return None


def _list_keys(client_of: Callable[[], Any], bucket: str, keys: Iterator[str],
               pool: ThreadPoolExecutor) -> dict[str, ListedObject]:
    """What the bucket holds for `keys`: each directory listed once, in parallel; hashed long keys by HEAD."""
    from ..transfer.lister import list_directory
    from ..transfer.objects import head_listed

    client = client_of()
    directories: set[str] = set()
    long_keys: list[str] = []
    for key in keys:
        if f"/{LONG_DIR}/" in key:
            long_keys.append(key)
        else:
            directories.add(_directory(key))
    found: dict[str, ListedObject] = {}
    for listing in pool.map(lambda d: list_directory(client, bucket, d), sorted(directories)):
        found.update(listing)
    for key, obj in zip(long_keys, pool.map(lambda k: head_listed(client, bucket, k), long_keys)):
        if obj is not None:
            found[key] = obj
    return found

