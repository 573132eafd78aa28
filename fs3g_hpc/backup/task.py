"""`fs3g run-shard`: one array task of a backup, on runs/task.py. Reads its shard from the run directory, uploads it
with the policy the plan recorded, keeps a journal for resume, writes its result, and reports progress. Stops cleanly
on SIGTERM, SIGINT and the pre-timeout SIGUSR1 (saving its state; under Slurm a USR1 requeues the task).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from ..config import Policy
from ..model.records import display_path, read_records
from ..runs.files import FailureLine, PlanHeader, ShardStatus
from ..runs.journal import ShardJournal
from ..runs.layout import RunLayout, journal_file, read_json, shard_from_environment
from ..runs.progress import Counters
from ..runs.task import ShardTask, ShardWork, run_task
from ..transfer.client import ClientSettings, make_s3_client
from ..transfer.packer import PackSettings
from ..transfer.uploader import FileReport, Outcome, ShardUploader, Totals, UploadSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardRunResult:
    status: ShardStatus
    uploaded: int
    skipped: int
    failed: int
    signal_name: str | None


def resolve_shard(run_dir: Path, shard: int | None, environ: dict[str, str]) -> tuple[RunLayout, PlanHeader, int]:
    layout = RunLayout(run_dir)
    header = PlanHeader.from_json(read_json(layout.plan_file), layout.plan_file)
    return layout, header, shard_from_environment(shard, header.shard_count, environ, layout.plan_file)


def run_shard(run_dir: Path, shard: int | None, *, environ: dict[str, str] | None = None,
              on_requeue: Callable[[], None] | None = None, progress_stream: TextIO = sys.stderr,
              client_factory: Callable[[Policy], Any] | None = None) -> ShardRunResult:
    """Upload one shard (on runs/task.run_task). `client_factory` builds the S3 client from the policy (tests add
    fault-injecting hooks)."""
    env = dict(os.environ if environ is None else environ)
    layout, header, shard = resolve_shard(run_dir, shard, env)
    policy = header.policy_snapshot(layout.plan_file)

    def upload(task: ShardTask) -> ShardWork:
        summary = task.summary
        totals = Totals(files_total=summary.files, bytes_total=summary.bytes)
        journal = ShardJournal(journal_file(layout, task.index))
        try:
            def report(item: FileReport) -> None:
                interrupted = item.outcome is Outcome.INTERRUPTED
                # `detail` too: the field this file had before `reason`, for its readers
                task.failures.record(FailureLine(item.path, item.detail, item.outcome.value, item.retryable),
                                     sampled=not interrupted, also={"detail": item.detail})
                if not interrupted:
                    log.warning("%s: %s: %s", display_path(item.path), item.outcome.value, item.detail)

            client = (client_factory or _default_client)(policy)
            packs = PackSettings.from_policy(policy, header.run_id, task.index)
            uploader = ShardUploader(client, UploadSettings.from_policy(policy, packs), journal, task.stop, report,
                                     totals)

            def counters() -> Counters:
                return Counters(totals.files_done, totals.files_total, totals.bytes_done, totals.bytes_total,
                                totals.files_failed)

            with task.progress(counters):
                uploader.run(lambda: read_records(layout.shards_dir / summary.file), large_files=summary.large_files)
            uploader.abort_leftovers(interrupted=task.stop.is_set())
        finally:
            journal.close()
        return ShardWork(totals.files_failed, {
            "bytes": summary.bytes, "uploaded": totals.files_done - totals.files_skipped,
            "already_done": totals.files_skipped, "failed": totals.files_failed, "bytes_done": totals.bytes_done,
            "parts_sent": totals.parts_sent, "parts_reused": totals.parts_reused})

    result = run_task(layout, header, shard, upload, label="shard", on_requeue=on_requeue,
                      progress_stream=progress_stream, environ=env)
    return ShardRunResult(result.status, result.count("uploaded"), result.count("already_done"),
                          result.count("failed"), result.signal)


def _default_client(policy: Policy) -> Any:
    return make_s3_client(ClientSettings.from_policy(policy))
