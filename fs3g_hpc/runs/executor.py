"""How a sharded run's tasks and merge get run: one protocol, two executors, chosen once.

    local   every shard as a process here (at most one per CPU), a progress line across them, then the merge here
            (localexec.run_locally: signals forwarded, children die with their parent)
    slurm   the shard arrays and the merge job submitted through slurm/submit.py (the only code running Slurm
            commands); with `wait`, the merge job followed to its end through sacct
    auto    slurm when Slurm answers, else local

A pipeline describes its run (RunSpec: the run directory, its shards, the shard command, the merge as a typed
callable, how to submit it to Slurm) and its run.py hands it to `choose_executor(...)`; nothing calls back up into
the CLI.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, TypeVar

from .files import ShardSummary
from .layout import RunLayout

if TYPE_CHECKING:
    from ..slurm.jobs import JobState
    from ..slurm.submit import SubmittedRun


class Executor(Enum):
    SLURM = "slurm"
    LOCAL = "local"
    AUTO = "auto"


def fs3g_argv() -> list[str]:
    """How jobs call this same fs3g: this interpreter (a venv on the shared filesystem) with -m."""
    return [sys.executable, "-m", "fs3g_hpc"]


def resolve(choice: Executor) -> Executor:
    """AUTO made concrete: slurm when Slurm answers, else local."""
    if choice is Executor.AUTO:
        from ..slurm import commands

        return Executor.SLURM if commands.slurm_available() else Executor.LOCAL
    return choice


@dataclass(frozen=True)
class RunSpec:
    """One sharded run, as an executor needs it.

    merge: the kind's merge, run here once the local shards have ended; its result is the exit code.
    submit: the kind's Slurm submission (slurm/submit.py's submit_backup, submit_compare...), given the fs3g argv.
    label, resume: the run's name in progress lines, and how to resume it after a stop (local)."""

    run_dir: Path
    shards: Sequence[ShardSummary]
    shard_command: str
    merge: Callable[[], int]
    submit: Callable[[Sequence[str]], "SubmittedRun"]
    label: str
    resume: str
    fs3g: Sequence[str] = ()

    def argv(self) -> list[str]:
        return list(self.fs3g) or fs3g_argv()


@dataclass(frozen=True)
class RunOutcome:
    """How a run left its executor: ran here (exit_code: the merge's, or 130 when stopped), or submitted (the job ids;
    with `wait`, the merge job's final state)."""

    exit_code: int | None = None
    submitted: "SubmittedRun | None" = None
    merge_state: "JobState | None" = None


class RunExecutor(Protocol):
    name: Executor

    def run(self, run: RunSpec, *, wait: bool) -> RunOutcome: ...


INTERRUPTED_EXIT = 130
WAIT_TIMEOUT_S = 7 * 86400


T = TypeVar("T")


def run_here(run_dir: Path, shards: Sequence[Mapping[str, Any]], fs3g: Sequence[str], *, shard_command: str,
             merge: Callable[[], T], label: str, resume: str, interrupted: T) -> T:
    """A run's shards as local processes (at most one per CPU) with a progress line across them, then `merge` here;
    stopped by a signal: one line saying how to `resume`, and `interrupted` (localexec.run_locally does the
    processes: signals forwarded, children die with their parent)."""
    from ..localexec import STOP_GRACE_S, Interrupted, run_locally
    from .progress import RunProgress

    def on_interrupt(outcome: Interrupted) -> T:
        killed = f", {len(outcome.killed)} killed after {STOP_GRACE_S:.0f} s" if outcome.killed else ""
        print(f"{label} stopped by {outcome.signal_name}: {len(outcome.stopped)} running shards stopped{killed}, "
              f"{outcome.never_started} not started, no merge; to resume: {resume}", file=sys.stderr)
        return interrupted

    progress = RunProgress(label, RunLayout(run_dir), list(shards), sys.stderr)
    return run_locally(run_dir, len(shards), fs3g, max(1, len(os.sched_getaffinity(0))),
                       shard_command=shard_command, merge=merge, on_interrupt=on_interrupt, progress=progress)


class LocalExecutor:
    """The run's shards as local processes, then its merge, here (always waits)."""

    name = Executor.LOCAL

    def run(self, run: RunSpec, *, wait: bool = True) -> RunOutcome:
        code = run_here(run.run_dir, [s.to_json() for s in run.shards], run.argv(), shard_command=run.shard_command,
                        merge=run.merge, label=run.label, resume=run.resume, interrupted=INTERRUPTED_EXIT)
        return RunOutcome(exit_code=code)


class SlurmExecutor:
    """The run's arrays and merge submitted to Slurm; with `wait`, its merge job followed to its end."""

    name = Executor.SLURM

    def run(self, run: RunSpec, *, wait: bool) -> RunOutcome:
        submitted = run.submit(run.argv())
        if not wait:
            return RunOutcome(submitted=submitted)
        return RunOutcome(submitted=submitted, merge_state=wait_for_job(submitted.merge_id))


def wait_for_job(job_id: str, timeout_s: float = WAIT_TIMEOUT_S) -> "JobState":
    """A submitted job followed through sacct to its final state (slurm/submit.py)."""
    from ..slurm.submit import wait_for_job as wait

    return wait(job_id, timeout_s=timeout_s)


def choose_executor(choice: Executor) -> RunExecutor:
    """The executor a command's --executor names (auto: slurm when Slurm answers, else local)."""
    return SlurmExecutor() if resolve(choice) is Executor.SLURM else LocalExecutor()

