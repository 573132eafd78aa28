"""The jobs of a backup run, as pure data: one array per `MaxArraySize` shards, then a merge that waits for all.

Job scripts `exec` submitit's runner, which `exec`s fs3g (slurm/engine.py), so the pre-timeout signal
(`--signal=B:USR1@N`, sent to the batch shell) reaches the task itself; the task saves its state and requeues (`--requeue`), and the rerun resumes from the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import Policy
from .render import JobSpec, policy_directives

# Seconds of warning before the time limit: enough for in-flight parts to finish and the journal to be saved.
PRE_TIMEOUT_SIGNAL_S = 180


@dataclass(frozen=True)
class ArrayChunk:
    offset: int  # first shard of this array
    count: int


def array_chunks(shard_count: int, max_array_size: int) -> list[ArrayChunk]:
    """Split a plan into arrays Slurm accepts: task ids 0..max_array_size-1, shard = offset + task id."""
    if max_array_size < 1:
        raise ValueError("MaxArraySize must be >= 1")
    return [ArrayChunk(offset, min(max_array_size, shard_count - offset))
            for offset in range(0, shard_count, max_array_size)]


def shard_array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, fs3g: Sequence[str]) -> JobSpec:
    return _array_job(policy, run_dir, chunk, [*fs3g, "run-shard", str(run_dir)], "shards", "backup shards")


def restore_array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, fs3g: Sequence[str]) -> JobSpec:
    return _array_job(policy, run_dir, chunk, [*fs3g, "restore-shard", str(run_dir)], "restore", "restore shards")


def compare_array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, fs3g: Sequence[str]) -> JobSpec:
    return _array_job(policy, run_dir, chunk, [*fs3g, "compare-shard", str(run_dir)], "compare",
                      "SHA-256 checks, shards")


def rebuild_array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, fs3g: Sequence[str]) -> JobSpec:
    return _array_job(policy, run_dir, chunk, [*fs3g, "rebuild-shard", str(run_dir)], "rebuild",
                      "catalog rebuild (HEADs by key range), shards")


def prune_array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, fs3g: Sequence[str]) -> JobSpec:
    return _array_job(policy, run_dir, chunk, [*fs3g, "prune-shard", str(run_dir)], "prune",
                      "prune key ranges, shards")


def _array_job(policy: Policy, run_dir: Path, chunk: ArrayChunk, argv: Sequence[str], name: str,
               what: str) -> JobSpec:
    throttle = min(policy.slurm.array_parallelism, chunk.count)
    return JobSpec(
        job_name=f"fs3g-{policy.lab.name}-{name}",
        description=f"{what} {chunk.offset}-{chunk.offset + chunk.count - 1} of {run_dir.name}",
        commands=[["exec", *argv]],
        output_path=f"{run_dir}/logs/{'shard' if name == 'shards' else name}-%A_%a.out",
        array=f"0-{chunk.count - 1}%{throttle}",
        # append: a requeued task's log keeps what its earlier runs said.
        directives=[*policy_directives(policy.slurm), ("requeue", None),
                    ("signal", f"B:USR1@{PRE_TIMEOUT_SIGNAL_S}"), ("open-mode", "append")],
        environment={"FS3G_SHARD_OFFSET": str(chunk.offset)},
        extra_options=policy.slurm.extra_sbatch_options,
    )


def merge_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], fs3g: Sequence[str]) -> JobSpec:
    # afterany: the merge must run even when tasks fail (afterok would leave it pending for ever).
    return JobSpec(
        job_name=f"fs3g-{policy.lab.name}-merge",
        description=f"verify {run_dir.name} and write its report and catalog",
        commands=[["exec", *fs3g, "merge", str(run_dir), "--retry-executor", "slurm"]],
        output_path=f"{run_dir}/logs/merge-%j.out",
        dependency="afterany:" + ":".join(array_ids),
        directives=[*policy_directives(policy.slurm)],
        extra_options=policy.slurm.extra_sbatch_options,
    )


def restore_merge_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], fs3g: Sequence[str]) -> JobSpec:
    return _report_job(policy, run_dir, array_ids, [*fs3g, "restore-merge", str(run_dir)], "restore-merge",
                       f"report on restore {run_dir.name}")


def compare_merge_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], fs3g: Sequence[str]) -> JobSpec:
    return _report_job(policy, run_dir, array_ids, [*fs3g, "compare-merge", str(run_dir)], "compare-merge",
                       f"report on compare {run_dir.name}")


def rebuild_merge_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], fs3g: Sequence[str]) -> JobSpec:
    return _report_job(policy, run_dir, array_ids, [*fs3g, "rebuild-merge", str(run_dir)], "rebuild-merge",
                       f"catalog and snapshot of rebuild {run_dir.name}")


def prune_merge_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], fs3g: Sequence[str]) -> JobSpec:
    return _report_job(policy, run_dir, array_ids, [*fs3g, "prune-merge", str(run_dir)], "prune-merge",
                       f"forgotten snapshots and report of prune {run_dir.name}")


def _report_job(policy: Policy, run_dir: Path, array_ids: Sequence[str], argv: Sequence[str], name: str,
                description: str) -> JobSpec:
    return JobSpec(
        job_name=f"fs3g-{policy.lab.name}-{name}",
        description=description,
        commands=[["exec", *argv]],
        output_path=f"{run_dir}/logs/merge-%j.out",
        dependency=("afterany:" + ":".join(array_ids)) if array_ids else None,
        directives=[*_small_job_directives(policy)],
        extra_options=policy.slurm.extra_sbatch_options,
    )


def restore_stage_job(policy: Policy, run_dir: Path, fs3g: Sequence[str]) -> JobSpec:
    """The poll job: requests Glacier restores, checks readiness, and either submits the download or submits itself
    again with --begin (so waiting for Glacier holds no node)."""
    return JobSpec(
        job_name=f"fs3g-{policy.lab.name}-restore-poll",
        description=f"request and poll Glacier restores of {run_dir.name}",
        commands=[["exec", *fs3g, "restore-stage", str(run_dir), "--executor", "slurm"]],
        output_path=f"{run_dir}/logs/stage-%j.out",
        directives=[*_small_job_directives(policy)],
        extra_options=policy.slurm.extra_sbatch_options,
    )


def _small_job_directives(policy: Policy) -> list[tuple[str, str | None]]:
    """Listing and polling need one CPU and little memory, whatever the policy gives the transfer tasks."""
    pairs = [(k, v) for k, v in policy_directives(policy.slurm) if k not in ("cpus-per-task", "mem")]
    return [*pairs, ("cpus-per-task", "1"), ("mem", "1024M")]


def schedule_job(policy: Policy, config_path: Path, log_dir: Path, fs3g: Sequence[str]) -> JobSpec:
    """One link of a lab's backup schedule: at its --begin time it submits the next link, then runs the backup."""
    return JobSpec(
        job_name=schedule_job_name(policy),
        description=f"scheduled backup of lab {policy.lab.name} ({policy.schedule.backup})",
        commands=[["exec", *fs3g, "schedule", "fire", "--config", str(config_path)]],
        output_path=f"{log_dir}/schedule-%j.out",
        directives=[*_small_job_directives(policy)],
        extra_options=policy.slurm.extra_sbatch_options,
    )


def schedule_job_name(policy: Policy) -> str:
    return f"fs3g-{policy.lab.name}-schedule"
