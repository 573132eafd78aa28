"""`fs3g run-shard`: one array task. Reads its shard from the run directory, uploads it with the policy the plan
recorded, keeps a journal for resume, writes its result, and reports progress. Stops cleanly on SIGTERM, SIGINT and
the pre-timeout SIGUSR1 (saving its state; under Slurm a USR1 requeues the task).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, TextIO

from .config import Policy, policy_from_snapshot
from .errors import UsageError
from .manifest import (RunLayout, ShardJournal, ensure_private_dir, failures_file, journal_file, read_json,
                       shard_result_file, write_json_atomic)
from .model.records import display_path, read_records
from .progress import Counters, ShardProgress, progress_file
from .signals import StopOnSignals
from .transfer.client import ClientSettings, make_s3_client
from .transfer.uploader import FileReport, Outcome, ShardUploader, Totals, UploadSettings

log = logging.getLogger(__name__)

FAILURE_SAMPLE = 100  # failures kept in the result JSON; all of them are in the failures file


class ShardStatus(str, Enum):
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class ShardRunResult:
    status: ShardStatus
    uploaded: int
    skipped: int
    failed: int
    signal_name: str | None


def resolve_shard(run_dir: Path, shard: int | None, environ: dict[str, str]) -> tuple[RunLayout, dict, int]:
    layout = RunLayout(run_dir)
    header = read_json(layout.plan_file)
    if shard is None:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.isdigit():
            raise UsageError("no shard given: pass --shard N or run as a Slurm array task (SLURM_ARRAY_TASK_ID)")
        shard = int(task) + int(environ.get("FS3G_SHARD_OFFSET", "0"))
    count = header.get("shard_count", 0)
    if not 0 <= shard < count:
        raise UsageError(f"shard {shard} does not exist (the plan has {count} shards: 0-{count - 1})",
                         path=str(layout.plan_file))
    return layout, header, shard


def run_shard(run_dir: Path, shard: int | None, *, environ: dict[str, str] | None = None,
              on_requeue: Callable[[], None] | None = None, progress_stream: TextIO = sys.stderr,
              client_factory: Callable[[Policy], Any] | None = None) -> ShardRunResult:
    """Upload one shard. `client_factory` builds the S3 client from the policy (tests add fault-injecting hooks)."""
    env = dict(os.environ if environ is None else environ)
    layout, header, shard = resolve_shard(run_dir, shard, env)
    policy = policy_from_snapshot(header["policy"], f"{layout.plan_file}: policy")
    summary = header["shards"][shard]
    ensure_private_dir(layout.results_dir)  # shared by every task of the run

    signals = StopOnSignals()
    stop, caught = signals.stop, signals.caught
    totals = Totals(files_total=summary["files"], bytes_total=summary["bytes"])
    failures: list[FileReport] = []
    fail_path = failures_file(layout, shard)
    fd = os.open(fail_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    journal = ShardJournal(journal_file(layout, shard))
    try:
        with signals, os.fdopen(fd, "w", encoding="ascii") as fail_out:
            lock = threading.Lock()

            def report(item: FileReport) -> None:
                with lock:
                    fail_out.write(json.dumps({"path": os.fsdecode(item.path), "outcome": item.outcome.value,
                                               "detail": item.detail, "retryable": item.retryable}) + "\n")
                    fail_out.flush()
                    if item.outcome is not Outcome.INTERRUPTED:
                        if len(failures) < FAILURE_SAMPLE:
                            failures.append(item)
                        log.warning("%s: %s: %s", display_path(item.path), item.outcome.value, item.detail)

            client = (client_factory or _default_client)(policy)
            uploader = ShardUploader(client, UploadSettings.from_policy(policy), journal, stop, report, totals)

            def counters() -> Counters:
                return Counters(totals.files_done, totals.files_total, totals.bytes_done, totals.bytes_total,
                                totals.files_failed)

            with ShardProgress(f"shard {shard}", counters, progress_stream, progress_file(layout, shard)):
                uploader.run(read_records(layout.shards_dir / summary["file"]))
            uploader.abort_leftovers(interrupted=stop.is_set())
    finally:
        journal.close()

    interrupted = stop.is_set()
    status = (ShardStatus.INTERRUPTED if interrupted else ShardStatus.FAILED if totals.files_failed
              else ShardStatus.DONE)
    write_json_atomic(shard_result_file(layout, shard), {
        "shard": shard, "status": status.value, "signal": caught[0] if caught else None,
        "files": summary["files"], "bytes": summary["bytes"],
        "uploaded": totals.files_done - totals.files_skipped, "already_done": totals.files_skipped,
        "failed": totals.files_failed, "bytes_done": totals.bytes_done,
        "parts_sent": totals.parts_sent, "parts_reused": totals.parts_reused,
        "failures_file": fail_path.name,
        "failures_sample": [{"path": os.fsdecode(f.path), "outcome": f.outcome.value, "detail": f.detail}
                            for f in failures],
    })
    if interrupted and caught and caught[0] == "SIGUSR1" and on_requeue is not None:
        on_requeue()
    return ShardRunResult(status, totals.files_done - totals.files_skipped, totals.files_skipped,
                          totals.files_failed, caught[0] if caught else None)


def _default_client(policy: Policy) -> Any:
    return make_s3_client(ClientSettings.from_policy(policy))
