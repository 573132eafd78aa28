"""submitit as the job engine: every job fs3g submits to Slurm is a submitit job, and its shard processes on one
machine are submitit local jobs.

What a job runs. submitit pickles a callable into its folder (RUN_DIR/jobs) and the job script runs
`python -u -m submitit.core._submit FOLDER`, which unpickles and calls it. Ours is `Fs3gCommand`: the command words
of one fs3g run (the interpreter, `-m fs3g_hpc`, the subcommand and the run directory), nothing else -- no
environment, no credentials; the job gets those from Slurm's environment export as before. Calling it `exec`s fs3g,
so the job's process, its exit code in sacct and the signals it gets are fs3g's, exactly as with a script that
`exec`s fs3g; submitit writes no result pickle (nothing here ever asks submitit for a result: job state comes from
sacct, `commands.accounting`).

Signals and requeue: ours win. Transfer arrays get `--signal=B:USR1@180` (it replaces submitit's USR2 signal) and
`--requeue`; the job script `exec`s submitit's runner and that `exec`s fs3g, so the batch shell's USR1 reaches the
task, which saves its journal and requeues itself (`scontrol requeue` through slurm/commands). submitit's
checkpointing does not fit: it would requeue by re-pickling the callable, where our resumable state is the journal;
`Fs3gCommand` has no `checkpoint` and the executors allow no submitit timeouts (max_num_timeout=0). Jobs without our
signal (merges, polls, schedule links) keep submitit's `--signal=USR2@90`, which without `B:` goes to job steps only
-- they start none -- so it is never delivered.

The choke point: submitit's own `sbatch` call is replaced (`_submit_command`), so every Slurm command still goes
through `commands.run` and fails as a CommandError. The job objects submitit hands back are dropped at once: their
state, cancel and result methods would run sacct, scancel or wait on a result pickle themselves. What submitit lacks stays ours: arrays split at MaxArraySize
(jobs.array_chunks), state from sacct, the `--begin` chain, scrontab.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from submitit.core.utils import DelayedSubmission
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

from . import commands
from .render import JobSpec, RenderError, description_line, environment_lines, sbatch_options, short_option_lines

_ARRAY = re.compile(r"0-(\d+)%(\d+)")


@dataclass(frozen=True)
class Fs3gCommand:
    """What submitit pickles for a job: one fs3g command line. Called in the job, it replaces the process with it."""

    argv: tuple[str, ...]

    def __call__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp(self.argv[0], list(self.argv))  # returns only by raising OSError: the job fails with it


def job_python(argv: Sequence[str]) -> str:
    """The interpreter submitit's runner starts in the job: fs3g's own when it is run as `PYTHON -m fs3g_hpc`."""
    return argv[0] if list(argv[1:3]) == ["-m", "fs3g_hpc"] else sys.executable


def job_argv(spec: JobSpec) -> tuple[str, ...]:
    """The fs3g command of a job built by slurm/jobs.py: its one command, `exec fs3g ...`."""
    if len(spec.commands) != 1 or not spec.commands[0] or spec.commands[0][0] != "exec":
        raise RenderError(f"job {spec.job_name}: submitit runs one `exec` command, not {spec.commands!r}")
    return tuple(spec.commands[0][1:])


def array_size(spec: JobSpec) -> int | None:
    """Tasks in the array `spec` asks for (jobs.py writes "0-N%T"), None for a single job."""
    if spec.array is None:
        return None
    match = _ARRAY.fullmatch(spec.array)
    if not match:
        raise RenderError(f"job {spec.job_name}: array {spec.array!r} is not 0-N%T")
    return int(match.group(1)) + 1


def job_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for `spec`: our #SBATCH options through `additional_parameters` (they
    replace submitit's time, signal and output), no srun, stderr with stdout; the setup lines of our scripts."""
    options = sbatch_options(spec)
    extra = {name: True if value is None else value for name, value in options if name != "array"}
    params: dict[str, Any] = {
        "job_name": spec.job_name,
        "use_srun": False,
        "stderr_to_stdout": True,
        "setup": [*short_option_lines(spec), description_line(spec), "set -euo pipefail",
                  "# Run directories and logs hold a lab's file names: owner-only.", "umask 077",
                  *environment_lines(spec)],
        "additional_parameters": extra,
    }
    if spec.array is not None:
        match = _ARRAY.fullmatch(spec.array)
        assert match is not None  # array_size checked it
        params["array_parallelism"] = int(match.group(2))
    return params


class Fs3gSlurmExecutor(SlurmExecutor):
    """submitit's SlurmExecutor, submitting through `commands.submit` (`sbatch --parsable`, CommandError on failure)
    with the job script at a name of ours (`script`), and arrays of any size, one included, as arrays."""

    def __init__(self, folder: Path, *, python: str, script: Path | None, cwd: Path,
                 options: Sequence[str] = ()) -> None:
        super().__init__(folder, max_num_timeout=0, python=shlex.quote(python))
        self.script = script
        self.cwd = cwd
        self.options = tuple(options)

    @classmethod
    def affinity(cls) -> int:
        return 2  # no `srun` check: a missing sbatch is reported by commands.run, with its hint

    @property
    def _submitit_command_str(self) -> str:
        return "exec " + super()._submitit_command_str  # the batch shell becomes the job's process: signals reach it

    def script_text(self) -> str:
        return self._make_submission_file_text(self._submitit_command_str, "")

    def _internal_process_submissions(self, delayed_submissions: list[DelayedSubmission]) -> list[SlurmJob]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = []
        for delayed in delayed_submissions:
            path = self.folder / f".{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(0, self.max_num_timeout)
            delayed.dump(path)
            path.chmod(0o600)
            staged.append(path)
        first = self._submit_command(self._submitit_command_str)
        if self.parameters.get("map_count") is not None:
            jobs = [SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{task}", tasks=[0])
                    for task in range(len(staged))]
        else:
            jobs = [first]
        for job, path in zip(jobs, staged):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs

    def _submit_command(self, command: str) -> SlurmJob:
        if self.script is None:
            raise RenderError("an executor made for rendering only cannot submit")
        self.script.unlink(missing_ok=True)  # a link of an earlier submission must not be written through
        fd = os.open(self.script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self._make_submission_file_text(command, ""))
        job_id = commands.submit(self.script, options=self.options, cwd=self.cwd)
        job = SlurmJob(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        link = job.paths.submission_file  # submitit's name for the script
        if self.script.parent == link.parent and self.script.name != link.name:
            link.unlink(missing_ok=True)
            link.symlink_to(self.script.name)
        return job


def executor_for(spec: JobSpec, *, folder: Path, script: Path | None, cwd: Path,
                 options: Sequence[str] = ()) -> Fs3gSlurmExecutor:
    executor = Fs3gSlurmExecutor(folder, python=job_python(job_argv(spec)), script=script, cwd=cwd, options=options)
    executor.update_parameters(**job_parameters(spec))
    size = array_size(spec)
    if size is not None:
        executor.parameters["map_count"] = size  # as SlurmExecutor.map_array sets it for its array copy
    return executor


def job_script(spec: JobSpec, folder: Path) -> str:
    """The batch script submitit writes for `spec` with its pickles in `folder`: pure, so golden files pin it."""
    return executor_for(spec, folder=folder, script=None, cwd=folder).script_text()


def submit_job(spec: JobSpec, *, folder: Path, script: Path, cwd: Path, options: Sequence[str] = ()) -> str:
    """Submit `spec` through submitit (an array of `Fs3gCommand`s when it has an array); its Slurm job id."""
    executor = executor_for(spec, folder=folder, script=script, cwd=cwd, options=options)
    command = Fs3gCommand(job_argv(spec))
    size = array_size(spec)
    if size is None:
        return executor.submit(command).job_id
    # Every task runs the same command: the task finds its shard from SLURM_ARRAY_TASK_ID + FS3G_SHARD_OFFSET, as
    # under slurm_templates/backup.sbatch.
    jobs = executor.map_array(run_command, [command] * size)
    return jobs[0].job_id.split("_")[0]


def run_command(command: Fs3gCommand) -> None:
    """What each task of an array calls (map_array's function)."""
    command()
