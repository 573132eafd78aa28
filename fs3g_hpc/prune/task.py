"""One array task of a prune (`fs3g prune-shard RUN_DIR [--shard N]`, on runs/task.run_task): the delete pass of one
key range.

1. The join (once): list `list_prefix` after `after` up to `until` in key order (ListObjectsV2 StartAfter), merge it
   with shards/shard-N.refs; an object no reference names is unreferenced. It is kept when it was modified after the
   newest snapshot was made (a later backup's, not merged yet) and, unless the run allows early deletion, while it is
   inside its storage class's minimum duration (config/pricing.MINIMUM_STORAGE_DAYS, the one table); the others go
   to results/shard-N.delete, written whole (temporary file, fsync, rename) with results/shard-N.tally.json BEFORE
   anything is deleted. A rerun finds them and does not list again (the listing would no longer hold what was
   deleted, and the batch numbers must stay the same).
2. With `apply`: the list deleted in journaled batches (prune/batches.py): a batch already in the journal is skipped,
   each batch is preceded by a check that the run still holds locks/prune.json (someone who broke it may be running
   a backup: the shard stops, failed) and by the hard check against the newest snapshot's references.

A key S3 refuses is a failure by name (results/shard-N.failures.jsonl), never a stop. A signal ends the task between
batches (interrupted; the rerun resumes). Memory: one listing page, one line of each reference file, one batch.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import Policy
from ..config.pricing import minimum_storage_days
from ..errors import Fs3gError
from ..model.packs import PACKS_DIR
from ..model.snapshots import snapshot_prefix
from ..runs.files import FailureLine, PruneHeader, ShardSummary
from ..runs.layout import journal_file, read_json, write_json_atomic
from ..runs.progress import Counters
from ..runs.report import read_header
from ..runs.task import ShardTask, ShardWork, run_task
from .batches import NewestGuard, deleted_by_journal, delete_listed
from .files import PruneLayout, ShardTally, read_lines, write_lines_atomic


def load_prune(run_dir: Path) -> tuple[PruneLayout, PruneHeader, Policy]:
    layout = PruneLayout(run_dir)
    header = read_header(layout)
    assert isinstance(header, PruneHeader)
    return layout, header, header.policy_snapshot(layout.header_file)


def join_shard(client: Any, header: PruneHeader, layout: PruneLayout, summary: ShardSummary) -> ShardTally:
    """The shard's listing merge-joined with its references: its delete list and tally (step 1)."""
    from ..transfer.lister import iter_objects

    details = summary.details
    list_prefix, after, until = str(details["list_prefix"]), str(details.get("after", "")), str(
        details.get("until", ""))
    now_s = datetime.fromisoformat(header.now).timestamp()
    newest_s = float(header.details["newest_s"])
    allow_early = bool(header.details.get("allow_early_delete", False))
    tally = ShardTally()
    refs = read_lines(layout.refs_file(summary.index))
    ref = next(refs, None)
    last_key = after

    def doomed() -> Any:
        nonlocal ref, last_key
        for key, obj in iter_objects(client, header.bucket, list_prefix, start_after=after):
            if until and key > until:
                return
            if key <= last_key:  # the join needs key order: a store listing otherwise is not pruned
                raise Fs3gError(f"the listing of s3://{header.bucket}/{list_prefix} is not in key order "
                                f"({last_key!r} then {key!r}); nothing deleted")
            last_key = key
            while ref is not None and ref < key:
                ref = next(refs, None)
            if ref == key:
                continue
            if obj.modified_s and obj.modified_s >= newest_s:
                tally.young_objects += 1
                continue
            age = max(0.0, (now_s - obj.modified_s) / 86_400) if obj.modified_s else 0.0
            minimum = minimum_storage_days(obj.storage_class)
            held = age < minimum and not allow_early
            counts = tally.by_class.setdefault(obj.storage_class, [0.0, 0.0, 0.0])
            counts[0] += 1
            counts[1] += obj.size_bytes
            if age < minimum:
                counts[2] += obj.size_bytes * (minimum - age)
            tally.objects += 1
            tally.packs += key.endswith(".tar") and f"/{PACKS_DIR}/" in "/" + key
            tally.bytes += obj.size_bytes
            if held:
                tally.held_objects += 1
                tally.held_bytes += obj.size_bytes
            else:
                yield key

    tally.doomed = write_lines_atomic(layout.delete_file(summary.index), doomed())
    write_json_atomic(layout.tally_file(summary.index), tally.to_json())
    return tally


def prune_shard(run_dir: Path, shard: int | None, environ: Mapping[str, str] | None = None, *,
                on_requeue: Callable[[], None] | None = None,
                client_factory: Callable[[Policy], Any] | None = None) -> dict[str, Any]:
    """One task (see the module docstring); its counts: unreferenced objects, listed for deletion, deleted."""
    from ..snapshots.baseline import default_client
    from .locks import check_holds

    layout, header, policy = load_prune(run_dir)
    env = dict(os.environ if environ is None else environ)
    client = (client_factory or default_client)(policy)
    counts: dict[str, Any] = {}

    def work(task: ShardTask) -> ShardWork:
        index = task.index
        tally_path = layout.tally_file(index)
        if tally_path.exists() and layout.delete_file(index).exists():
            tally = ShardTally.from_json(read_json(tally_path), tally_path)  # joined before: the same list
        else:
            tally = join_shard(client, header, layout, task.summary)
        failed = 0

        def refused(key: str, code: str) -> None:
            nonlocal failed
            failed += 1
            task.failures.record(FailureLine(os.fsencode(key), f"DeleteObjects refused it: {code}", "not deleted",
                                             code in ("SlowDown", "InternalError", "ServiceUnavailable")))

        def still_locked() -> None:
            check_holds(policy, client, str(run_dir))

        journal = journal_file(layout, index)
        done_before = deleted_by_journal(journal)
        deleted = 0
        if header.apply and tally.doomed:
            newest = NewestGuard(layout.newest_file(index), snapshot_prefix(header.prefix, header.newest))

            def progress() -> Counters:
                return Counters(deleted + done_before, tally.doomed, 0, 0, failed)

            with task.progress(progress):
                deleted, _ = delete_listed(client, header.bucket, layout.delete_file(index), journal,
                                           header.batch_keys, newest, on_refused=refused, before_batch=still_locked,
                                           stop=task.stop.is_set)
        counts.update({"unreferenced": tally.objects, "listed_for_deletion": tally.doomed,
                       "deleted": done_before + deleted, "refused": failed})
        return ShardWork(failed, dict(counts))

    result = run_task(layout, header, shard, work, label="prune shard", environ=env, on_requeue=on_requeue)
    counts["status"] = result.status.value
    return counts
