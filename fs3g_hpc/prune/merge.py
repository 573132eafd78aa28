"""The merge of a prune run (`fs3g prune-merge RUN_DIR`, or here after the local shards): the tallies added up and
priced, then, with `apply` and only once every shard has ended (done, or failed naming the keys S3 refused), the
forgotten snapshots deleted: their keys listed to snapshots.delete (chunks first, manifests LAST: a snapshot stays
whole or is no snapshot), the whole run's list written to delete.txt, then the journaled batches (prune/batches.py;
the hard check refuses any key under the newest snapshot's prefix). Then the prune lock is released and report.json
and summary.txt written.

A shard that never reported or was interrupted leaves the run incomplete: no snapshot is deleted, the lock stays
(backups keep refusing: a resumed run's lists were made while no backup could run), and the report says how to
resume (`fs3g prune --config C --apply` again: it reruns the shards, each skipping its batches done, then this).

Memory: one tally at a time; one snapshot's listing page; one batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import Policy
from ..config.pricing import Prices
from ..model.snapshots import snapshot_prefix
from ..runs.files import FailureLine, Report, ShardStatus
from ..runs.layout import read_json, write_json_atomic
from ..runs.report import read_failure_lines, read_shard_result, shard_failures
from .batches import NewestGuard, delete_listed, deleted_by_journal
from .files import PruneLayout, PrunePlan, ShardTally, decisions_from_json, read_lines, write_lines_atomic
from .task import load_prune

log = logging.getLogger(__name__)

ERROR_SAMPLE = 1000  # refused keys a result holds; all of them are in the failures files


class PruneVerdict(Enum):
    """How a prune ended (cli/exitcodes.py maps it): every key deleted or listed; some refused by S3 (or a pack that
    failed compaction, named); shards left
    to resume (the lock kept); stopped by a signal before its merge; submitted to Slurm (the merge job ends it)."""

    DONE = "done"
    REFUSED = "refused"
    INCOMPLETE = "incomplete"
    INTERRUPTED = "interrupted"
    SUBMITTED = "submitted"


@dataclass
class PruneResult:
    """How a prune ended: its plan (the tallies added up), its run directory, the keys deleted and those S3 refused,
    and whether it is complete (False: shards left to resume; the lock is still held)."""

    plan: PrunePlan
    run_dir: Path | None = None
    deleted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # the first ERROR_SAMPLE keys S3 refused
    complete: bool = True
    unfinished: list[int] = field(default_factory=list)
    stopped: PruneVerdict | None = None  # INTERRUPTED or SUBMITTED: the run did not reach its merge here
    refused: int = 0  # every key S3 refused (their names: the shards' failures files, merge.failures.jsonl)
    compaction: Any = None  # prune/compact.CompactionResult; None when storage.pack_compact_below is 0

    @property
    def compaction_failed(self) -> bool:
        return self.compaction is not None and bool(self.compaction.error or self.compaction.skipped)

    def add_refused(self, key: str, reason: str) -> None:
        self.refused += 1
        if len(self.errors) < ERROR_SAMPLE:
            self.errors.append((key, reason))

    @property
    def verdict(self) -> PruneVerdict:
        if self.stopped is not None:
            return self.stopped
        if not self.complete:
            return PruneVerdict.INCOMPLETE
        return PruneVerdict.REFUSED if self.refused or self.compaction_failed else PruneVerdict.DONE

    @property
    def ok(self) -> bool:
        return self.verdict is PruneVerdict.DONE


def _snapshot_keys(client: Any, bucket: str, prefix: str, forgotten: list[str]) -> Iterator[str]:
    from ..transfer.lister import iter_objects

    manifests = []
    for sid in sorted(forgotten):
        for key, _ in iter_objects(client, bucket, snapshot_prefix(prefix, sid)):
            if key.endswith("/manifest.json"):
                manifests.append(key)  # one per snapshot
            else:
                yield key
    yield from manifests  # last: a snapshot stays whole or is no snapshot


def _whole_list(layout: PruneLayout, shard_count: int) -> Iterator[str]:
    for index in range(shard_count):
        if layout.delete_file(index).exists():
            yield from read_lines(layout.delete_file(index))
    yield from read_lines(layout.snapshots_delete_file)


def merge_prune(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None) -> PruneResult:
    """The merge (see the module docstring)."""
    from ..snapshots.baseline import default_client
    from .locks import check_holds, release_if_ours

    layout, header, policy = load_prune(run_dir)
    prices = Prices.from_json(header.details["prices"], str(layout.header_file)) if header.details.get(
        "prices") else None
    plan = PrunePlan(header.bucket, header.prefix, decisions_from_json(header.details["snapshots"], "prune.json"),
                     prices.currency if prices else "", shards=header.shard_count)
    result = PruneResult(plan, run_dir)
    states: dict[str, int] = {}
    for summary in header.shards:
        shard = read_shard_result(layout, summary.index)
        state = "never reported" if shard is None else shard.status.value
        states[state] = states.get(state, 0) + 1
        if shard is None or shard.status is ShardStatus.INTERRUPTED or not layout.tally_file(summary.index).exists():
            result.unfinished.append(summary.index)
            continue
        plan.add(ShardTally.from_json(read_json(layout.tally_file(summary.index)), layout.tally_file(summary.index)),
                 prices)
        result.deleted += deleted_by_journal(layout.result_file(summary.index, ".journal"))
        for line in shard_failures(layout, summary.index):
            result.add_refused(line.path.decode("utf-8", "surrogateescape"), line.reason)
    result.complete = not result.unfinished
    client = (client_factory or default_client)(policy)
    forgotten = header.forgotten
    if header.apply and result.complete:
        if not layout.snapshots_delete_file.exists():
            write_lines_atomic(layout.snapshots_delete_file, _snapshot_keys(client, header.bucket, header.prefix,
                                                                            forgotten))
        if not layout.delete_list.exists():
            write_lines_atomic(layout.delete_list, _whole_list(layout, header.shard_count))  # BEFORE any delete
        plan.snapshot_objects = sum(1 for _ in read_lines(layout.snapshots_delete_file))
        guard = NewestGuard(None, snapshot_prefix(header.prefix, header.newest))
        merge_failures = layout.run_dir / "merge.failures.jsonl"
        seen: list[FailureLine] = []

        def refused(key: str, code: str) -> None:
            result.add_refused(key, code)
            seen.append(FailureLine(key.encode("utf-8", "surrogateescape"), code, "not deleted"))

        delete_listed(client, header.bucket, layout.snapshots_delete_file, layout.merge_journal, header.batch_keys,
                      guard, on_refused=refused, before_batch=lambda: check_holds(policy, client, str(run_dir)))
        result.deleted += deleted_by_journal(layout.merge_journal)
        write_lines_atomic(merge_failures, (json.dumps(f.to_json()) for f in seen))
        try:
            release_if_ours(policy, client, str(run_dir))
        except Exception as e:  # noqa: BLE001 - the deletes stand; a lock left behind is broken with --break-lock
            log.warning("could not remove the prune lock: %s", e)
    elif not header.apply:
        from ..transfer.lister import iter_objects

        for sid in forgotten:
            plan.snapshot_objects += sum(1 for _ in iter_objects(client, header.bucket,
                                                                 snapshot_prefix(header.prefix, sid)))
    details = {"kind": "prune", "applied": header.apply, "complete": result.complete,
               "unfinished_shards": result.unfinished, "deleted": result.deleted, "errors": result.refused,
               **plan.to_json()}
    report = Report(shard_states=states, details=details)
    write_json_atomic(layout.report_file, report.to_json())
    write_lines_atomic(layout.summary_file, summary_lines(result, header.apply))
    return result


def summary_lines(result: PruneResult, applied: bool) -> list[str]:
    out = (result.compaction.lines() if result.compaction is not None else []) + result.plan.lines()
    if not result.complete:
        out.append(f"incomplete: shards {', '.join(map(str, result.unfinished))} did not finish; nothing of the "
                   "forgotten snapshots deleted and the prune lock kept (backups refuse meanwhile); to resume: "
                   "`fs3g prune --config C --apply` again (each shard skips its batches done)")
    elif applied:
        out.append(f"deleted {result.deleted:,} objects ({result.refused:,} refused); lists and journals in "
                   f"{result.run_dir}")
        for key, code in result.errors[:20]:
            out.append(f"  not deleted: {key}: {code}")
    else:
        out.append("dry run: nothing deleted (run again with --apply)")
    return out


def read_result(run_dir: Path) -> PruneResult:
    """A merged run's result from its report (a Slurm merge's, read by the process that waited for it)."""
    layout = PruneLayout(run_dir)
    data = read_json(layout.report_file)
    header = load_prune(run_dir)[1]
    prices = Prices.from_json(header.details["prices"], str(layout.header_file)) if header.details.get(
        "prices") else None
    plan = PrunePlan(header.bucket, header.prefix, decisions_from_json(header.details["snapshots"], "prune.json"),
                     prices.currency if prices else "")
    for name in ("objects", "packs", "bytes"):
        setattr(plan, name, int(data["unreferenced"][name]))
    plan.monthly_cost = float(data["monthly_cost_freed"])
    plan.early_charge = float(data["early_deletion_charge"])
    plan.held_objects = int(data["held_for_minimum_duration"]["objects"])
    plan.held_bytes = int(data["held_for_minimum_duration"]["bytes"])
    plan.young_objects = int(data["newer_than_newest_snapshot"])
    plan.snapshot_objects = int(data["forgotten_snapshot_objects"])
    plan.shards = int(data.get("shards", 0))
    plan.by_class = {k: [int(v["objects"]), int(v["bytes"])] for k, v in data["by_class"].items()}
    result = PruneResult(plan, run_dir, int(data["deleted"]), [], bool(data["complete"]),
                         list(data["unfinished_shards"]))
    for index in range(header.shard_count):
        for line in shard_failures(layout, index):
            result.add_refused(line.path.decode("utf-8", "surrogateescape"), line.reason)
    for line in read_failure_lines(layout.run_dir / "merge.failures.jsonl"):
        result.add_refused(line.path.decode("utf-8", "surrogateescape"), line.reason)
    return result
