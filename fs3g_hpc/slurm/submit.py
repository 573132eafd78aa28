"""Submitting a planned run to Slurm, through submitit (slurm/engine.py): the shard arrays, then the merge with
`afterany` on every array, right away (a dependency on a job Slurm has already forgotten would count as satisfied).

Each job's script is RUN_DIR/jobs/NAME.sbatch (submitit's `ID_submission.sh` links to it), its pickles
RUN_DIR/jobs/ID_submitted.pkl (one fs3g command line each, nothing secret), its log under RUN_DIR/logs: all
owner-only."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from ..config import Policy
from ..errors import ServiceError
from . import commands
from .commands import JobState
from .jobs import (ArrayChunk, array_chunks, compare_array_job, compare_merge_job, merge_job, prune_array_job,
                   prune_merge_job, rebuild_array_job, rebuild_merge_job, restore_array_job, restore_merge_job,
                   restore_stage_job, schedule_job,
                   shard_array_job)
from .engine import submit_job
from .render import JobSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmittedRun:
    array_ids: list[str]
    merge_id: str


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def _submit(spec: JobSpec, script: Path, cwd: Path, options: Sequence[str] = ()) -> str:
    return submit_job(spec, folder=script.parent, script=script, cwd=cwd, options=options)


def submit_backup(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                  max_array_size: int | None = None) -> SubmittedRun:
    jobs = _private_dir(run_dir / "jobs")
    _private_dir(run_dir / "logs")
    limit = max_array_size or commands.max_array_size()
    array_ids = []
    for chunk in array_chunks(shard_count, limit):
        array_ids.append(_submit(shard_array_job(policy, run_dir, chunk, fs3g),
                                 jobs / f"shards-{chunk.offset:06d}.sbatch", run_dir))
    merge_id = _submit(merge_job(policy, run_dir, array_ids, fs3g), jobs / "merge.sbatch", run_dir)
    record = {"arrays": array_ids, "merge": merge_id, "submitted": time.time(), "max_array_size": limit}
    fd = os.open(jobs / "submitted.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        json.dump(record, f)
    log.info("submitted arrays %s and merge %s", ", ".join(array_ids), merge_id)
    return SubmittedRun(array_ids, merge_id)


def submit_restore_stage(policy: Policy, run_dir: Path, fs3g: Sequence[str], *, begin_in_s: int | None = None,
                         begin_at: str | None = None) -> str:
    """The poll job of a restore: now, `begin_in_s` seconds from now (`--begin=now+N`: pending, holding no node), or
    at `begin_at` (any time sbatch --begin takes)."""
    jobs = _private_dir(run_dir / "jobs")
    _private_dir(run_dir / "logs")
    options = [f"--begin=now+{begin_in_s}"] if begin_in_s else [f"--begin={begin_at}"] if begin_at else []
    return _submit(restore_stage_job(policy, run_dir, fs3g), jobs / "stage.sbatch", run_dir, options)


def submit_schedule_link(policy: Policy, config_path: Path, state_dir: Path, fs3g: Sequence[str],
                         begin: datetime) -> str:
    """The next link of a lab's schedule chain, pending until `begin` (local time, to the second)."""
    _private_dir(state_dir)
    logs = _private_dir(state_dir / "logs")
    jobs = _private_dir(state_dir / "jobs")
    return _submit(schedule_job(policy, config_path, logs, fs3g), jobs / "schedule.sbatch", state_dir,
                   [f"--begin={begin.strftime('%Y-%m-%dT%H:%M:%S')}"])


def submit_restore_download(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                            max_array_size: int | None = None) -> SubmittedRun:
    """The restore's download arrays, then its merge (afterany on every array)."""
    return _arrays_then_report(policy, run_dir, shard_count, fs3g, restore_array_job, restore_merge_job, "restore",
                               max_array_size)


def submit_compare(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                   max_array_size: int | None = None) -> SubmittedRun:
    """The SHA-256 check arrays of a compare, then its merge (afterany on every array)."""
    return _arrays_then_report(policy, run_dir, shard_count, fs3g, compare_array_job, compare_merge_job, "compare",
                               max_array_size)


def submit_rebuild(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                   max_array_size: int | None = None) -> SubmittedRun:
    """The HEAD arrays of a catalog rebuild (one task per key range), then its merge (afterany on every array)."""
    return _arrays_then_report(policy, run_dir, shard_count, fs3g, rebuild_array_job, rebuild_merge_job, "rebuild",
                               max_array_size)


def submit_prune(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                 max_array_size: int | None = None) -> SubmittedRun:
    """The key-range arrays of a prune, then its merge (afterany on every array); jobs/submitted.json records them
    (a rerun of `fs3g prune --apply` asks Slurm whether that merge has ended before it resumes the run)."""
    submitted = _arrays_then_report(policy, run_dir, shard_count, fs3g, prune_array_job, prune_merge_job, "prune",
                                    max_array_size)
    fd = os.open(run_dir / "jobs" / "submitted.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        json.dump({"arrays": submitted.array_ids, "merge": submitted.merge_id, "submitted": time.time()}, f)
    return submitted


def _arrays_then_report(policy: Policy, run_dir: Path, shard_count: int, fs3g: Sequence[str],
                        array_job: Callable[[Policy, Path, ArrayChunk, Sequence[str]], JobSpec],
                        report_job: Callable[[Policy, Path, Sequence[str], Sequence[str]], JobSpec], name: str,
                        max_array_size: int | None) -> SubmittedRun:
    jobs = _private_dir(run_dir / "jobs")
    _private_dir(run_dir / "logs")
    limit = max_array_size or commands.max_array_size()
    array_ids = []
    for chunk in array_chunks(shard_count, limit):
        array_ids.append(_submit(array_job(policy, run_dir, chunk, fs3g), jobs / f"{name}-{chunk.offset:06d}.sbatch",
                                 run_dir))
    merge_id = _submit(report_job(policy, run_dir, array_ids, fs3g), jobs / f"{name}-merge.sbatch", run_dir)
    log.info("submitted %s arrays %s and merge %s", name, ", ".join(array_ids), merge_id)
    return SubmittedRun(array_ids, merge_id)


def wait_for_job(job_id: str, *, timeout_s: float, poll_s: float = 3.0) -> JobState:
    """Poll accounting until the job has finished; its final state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = [r for r in commands.accounting([job_id]) if r.job_id == job_id]
        if records and records[0].state.finished:
            return records[0].state
        time.sleep(poll_s)
    raise ServiceError(f"job {job_id} has not finished after {timeout_s:.0f} s",
                       hint=f"follow it with `squeue -j {job_id}` and `sacct -j {job_id}`")
