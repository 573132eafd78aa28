"""One array task of a sharded run, whatever its kind: the skeleton around "do the work of this shard".

run_task resolves the shard (--shard N, or SLURM_ARRAY_TASK_ID + FS3G_SHARD_OFFSET), makes results/ (owner-only,
shared by every task of the run), catches SIGTERM, SIGINT and the pre-timeout SIGUSR1 (StopOnSignals: the work sees
`stop` set and ends cleanly, saving its state), writes every failure to results/shard-N.failures.jsonl as it
happens (FailureLine; a sample of FAILURE_SAMPLE of them in the result), gives the work its progress counters
(results/shard-N.progress.json, runs/progress.py), and writes results/shard-N.json (ShardResult) when the work ends:
interrupted when stopped by a signal, failed when some file failed, else done. The work keeps its own journal
(runs/journal.py, or a kind's own: a restore's) and may set `stop` itself to end early (a restore whose destination
is full); only a signal makes the shard interrupted. Stopped by SIGUSR1, it calls `on_requeue` (the
CLI passes the Slurm requeue of slurm/commands.py), so that the rerun resumes. An internal error propagates: the CLI
writes its crash file (crash.py).

Memory: the failure sample (FAILURE_SAMPLE lines); the failures themselves go to the file as they happen.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TextIO

from ..signals import StopOnSignals
from .files import FailureLine, RunHeader, ShardResult, ShardStatus, ShardSummary
from .layout import FILE_MODE, RunLayout, ensure_private_dir, failures_file, shard_from_environment, \
    shard_result_file, write_json_atomic
from .progress import Counters, ShardProgress, progress_file

FAILURE_SAMPLE = 100  # failures kept in the result JSON; all of them are in the failures file


class FailureRecorder:
    """A shard's failures file, written a line at a time (thread-safe), and the sample the result keeps."""

    def __init__(self, out: TextIO, sample_size: int = FAILURE_SAMPLE):
        self._out = out
        self._lock = threading.Lock()
        self.sample: list[FailureLine] = []
        self.sample_size = sample_size
        self.count = 0

    def record(self, line: FailureLine, *, sampled: bool = True, also: Mapping[str, Any] | None = None) -> None:
        """One failure; `sampled`: kept in the result's sample too (not for files merely interrupted); `also`:
        fields written beside the line's own."""
        with self._lock:
            self._out.write(json.dumps({**line.to_json(), **(also or {})}) + "\n")
            self._out.flush()
            self.count += 1
            if sampled and len(self.sample) < self.sample_size:
                self.sample.append(line)


@dataclass
class ShardTask:
    """What the work of one shard is given."""

    layout: RunLayout
    index: int
    summary: ShardSummary
    stop: threading.Event
    failures: FailureRecorder
    label: str
    progress_stream: TextIO

    def progress(self, counters: Callable[[], Counters]) -> AbstractContextManager:
        """The task's progress: its counters file and its log line, while the work runs."""
        return ShardProgress(f"{self.label} {self.index}", counters, self.progress_stream,
                             progress_file(self.layout, self.index))


@dataclass(frozen=True)
class ShardWork:
    """What the work of a shard reports: how many files failed, and the kind's counts for the result."""

    failed: int
    counts: dict[str, Any] = field(default_factory=dict)


def resolve_task_shard(header: RunHeader, shard: int | None, environ: Mapping[str, str], layout: RunLayout) -> int:
    return shard_from_environment(shard, header.shard_count, environ, layout.header_file)


def run_task(layout: RunLayout, header: RunHeader, shard: int | None, work: Callable[[ShardTask], ShardWork], *,
             label: str = "shard", environ: Mapping[str, str] | None = None,
             on_requeue: Callable[[], None] | None = None, progress_stream: TextIO | None = None) -> ShardResult:
    """Run `work` on one shard of the run and write its result (see the module's docstring)."""
    env = os.environ if environ is None else environ
    index = resolve_task_shard(header, shard, env, layout)
    summary = header.shard(index)
    ensure_private_dir(layout.results_dir)  # shared by every task of the run
    signals = StopOnSignals()
    fail_path = failures_file(layout, index)
    fd = os.open(fail_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with signals, os.fdopen(fd, "w", encoding="ascii") as fail_out:
        failures = FailureRecorder(fail_out)
        done = work(ShardTask(layout, index, summary, signals.stop, failures, label,
                              sys.stderr if progress_stream is None else progress_stream))
    caught = signals.caught
    interrupted = bool(caught)  # the work may set `stop` itself to end early (a full destination): not interrupted
    status = ShardStatus.INTERRUPTED if interrupted else ShardStatus.FAILED if done.failed else ShardStatus.DONE
    result = ShardResult(index, status, caught[0] if caught else None, summary.files, done.counts, fail_path.name,
                         tuple(failures.sample))
    write_json_atomic(shard_result_file(layout, index), result.to_json())
    if interrupted and caught and caught[0] == "SIGUSR1" and on_requeue is not None:
        on_requeue()
    return result
