"""Running Slurm's commands. Only `sbatch --parsable` output is parsed for job ids; sacct and scontrol output is
read in their machine formats (`-P` pipes, `Key = Value`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import CommandError, ServiceError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


class JobState(Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> "JobState":
        word = text.split()[0] if text.strip() else ""  # "CANCELLED by 0"
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.REQUEUED, JobState.SUSPENDED,
                            JobState.COMPLETING, JobState.UNKNOWN)


@dataclass(frozen=True)
class TaskRecord:
    """One job, or one task of an array, as accounting reports it."""

    job_id: str  # "123" or "123_4"
    array_job_id: str | None
    array_task_id: int | None
    state: JobState
    exit_code: int | None
    signal: int | None


def run(argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
        cwd: Path | None = None) -> str:
    """Run a Slurm command; return stdout or raise CommandError with the command, exit code and stderr."""
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                              env=None if env is None else {**os.environ, **env}, check=False)
    except FileNotFoundError as e:
        raise CommandError(argv, 127, f"{argv[0]}: command not found",
                           hint="is Slurm installed here? use --executor local otherwise") from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, None, f"no answer within {timeout_s:.0f}s",
                           hint="is slurmctld reachable? try `scontrol ping`") from e
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def slurm_available() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        return "UP" in run(["scontrol", "ping"], timeout_s=15)
    except CommandError:
        return False


def begin_time_accepted(text: str) -> bool | None:
    """Whether this cluster's sbatch takes `--begin=TEXT`, asked with `--test-only` (nothing is queued); None when
    sbatch failed for another reason (then the caller decides by the documented grammar)."""
    try:
        run(["sbatch", "--test-only", f"--begin={text}", "--wrap=true"], timeout_s=15)
    except CommandError as e:
        if "Invalid time specification" in e.stderr or "Invalid --begin" in e.stderr:
            return False
        log.debug("sbatch --test-only could not check --begin=%s: %s", text, e)
        return None
    return True


def cluster_config() -> dict[str, str]:
    """`scontrol show config` as a mapping."""
    out: dict[str, str] = {}
    for line in run(["scontrol", "show", "config"]).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def max_array_size() -> int:
    """Largest array index + 1 the cluster accepts (default 1001)."""
    value = cluster_config().get("MaxArraySize", "1001")
    try:
        return int(value)
    except ValueError as e:
        raise ServiceError(f"scontrol reports MaxArraySize = {value!r}, not a number") from e


def submit(script: Path, *, options: Sequence[str] = (), cwd: Path | None = None) -> str:
    """sbatch a script file; return the job id from `--parsable` ("id" or "id;cluster")."""
    argv = ["sbatch", "--parsable", *options, str(script)]
    out = run(argv, cwd=cwd)
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise ServiceError(f"`{' '.join(argv)}` printed {out.strip()!r}, not a job id")
    return job_id


def requeue(job_id: str) -> None:
    """Put a running job (or array task, `123_4`) back in the queue; its next run resumes from the journal."""
    run(["scontrol", "requeue", job_id])


def cancel(job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        run(["scancel", *ids])


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    state: str
    begins: str  # squeue's start time: for a pending job with --begin, when it may start


def queued_jobs(name: str) -> list[QueuedJob]:
    """This user's jobs called `name` that are still in the queue (pending or running)."""
    out = run(["squeue", "-h", "--me", "-n", name, "-o", "%i|%T|%S"])
    jobs = []
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3:
            jobs.append(QueuedJob(*fields))
    return jobs


def scrontab_available() -> bool:
    return shutil.which("scrontab") is not None


def read_scrontab() -> str:
    try:
        return run(["scrontab", "-l"])
    except CommandError:
        return ""  # no scrontab yet


def write_scrontab(text: str, work_dir: Path) -> None:
    path = work_dir / "scrontab.txt"
    path.write_text(text, encoding="utf-8")
    run(["scrontab", str(path)])


def _parse_exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def accounting(job_ids: Iterable[str]) -> list[TaskRecord]:
    """Records from sacct (needs slurmdbd) for jobs and every task of arrays among them; allocations only."""
    ids = list(job_ids)
    if not ids:
        return []
    out = run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "--format=JobID,JobIDRaw,State,ExitCode"])
    records = []
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) < 4:
            continue
        job_id, raw_id, state, exit_text = fields[:4]
        array_job_id = task = None
        if "_" in job_id:
            array_job_id, _, task_text = job_id.partition("_")
            if task_text.isdigit():
                task = int(task_text)
            else:  # "123_[4-7]": tasks not yet started
                array_job_id = None
        code, sig = _parse_exit(exit_text)
        records.append(TaskRecord(job_id, array_job_id, task, JobState.parse(state), code, sig))
    return records


def array_task_states(array_ids: list[str]) -> dict[int, str]:
    """Shard number -> Slurm state for the tasks of a run's arrays (array k's task t is shard offset_k + t, where
    the offsets are recorded by the submission; here arrays are consecutive and full but the last)."""
    states: dict[int, str] = {}
    offset = 0
    for array_id in array_ids:
        tasks = {r.array_task_id: r.state.value for r in accounting([array_id])
                 if r.array_job_id == array_id and r.array_task_id is not None}
        for task, state in tasks.items():
            states[offset + task] = state
        offset += max(tasks, default=-1) + 1
    return states


def wait_for_accounting(job_ids: Sequence[str], *, expected_records: int, timeout_s: float = 120.0,
                        poll_s: float = 1.0) -> list[TaskRecord]:
    """Poll sacct until `expected_records` records exist and all have finished (records lag 1-4 s behind jobs)."""
    deadline = time.monotonic() + timeout_s
    records: list[TaskRecord] = []
    while time.monotonic() < deadline:
        records = accounting(job_ids)
        if len(records) >= expected_records and all(r.state.finished for r in records):
            return records
        time.sleep(poll_s)
    summary = ", ".join(f"{r.job_id}={r.state.value}" for r in records) or "no records"
    raise ServiceError(f"jobs {','.join(job_ids)} not finished in accounting after {timeout_s:.0f}s: {summary}",
                       hint="check `squeue` and `sacct`; is slurmdbd running?")
