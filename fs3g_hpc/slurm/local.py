"""The local backend: each shard a submitit local job. Its pickle (one `Fs3gCommand`, nothing secret) goes to
RUN_DIR/jobs/local/shard-N_submitted.pkl and submitit's runner (`python -u -m submitit.core._submit FOLDER`, with
submitit's local job environment) unpickles it and `exec`s fs3g, so the shard process is fs3g itself.

What is not submitit's: the process is started here, not by submitit's local controller (`submitit.local._local`),
since the controller would break three properties of fs3g_hpc/localexec.py: it exits 0 whatever its task's exit
code, it answers SIGINT by killing its task within about a second (`kill_tasks`: SIGINT, then SIGKILL) where a
shard gets STOP_GRACE_S to save its journal, and it starts in our session without PR_SET_PDEATHSIG. So each shard's
runner is started directly, in a session of its own, stdin closed, stdout and stderr into its log, asking the kernel
for SIGTERM should the starting process die; signals go to it from localexec, once.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.local.local import LocalExecutor

from ..localexec import die_with_parent
from .engine import Fs3gCommand, job_python


class Fs3gLocalExecutor(LocalExecutor):
    """submitit's LocalExecutor for fs3g's shards: its folder, pickles, runner and job environment; `start` in place
    of its controller (see the module's docstring)."""

    def __init__(self, folder: Path, *, python: str) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        super().__init__(folder, max_num_timeout=0, python=shlex.quote(python))
        self._preexec: Callable[[], None] | None = None

    def start(self, argv: Sequence[str], job_id: str, log_path: Path) -> subprocess.Popen:
        """Start the job `job_id` running `argv` (an fs3g command line); its log is truncated first."""
        paths = JobPaths(self.folder, job_id)
        pickle = paths.submitted_pickle
        DelayedSubmission(Fs3gCommand(tuple(argv))).dump(pickle)  # in place before the runner looks for it
        pickle.chmod(0o600)
        env = {**os.environ, "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": job_id,
               "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0",
               "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"}
        self._preexec = self._preexec or die_with_parent(os.getpid())
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            return subprocess.Popen(shlex.split(self._submitit_command_str), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=self._preexec)


def local_executor(run_dir: Path, fs3g: Sequence[str]) -> Fs3gLocalExecutor:
    """The executor for a run's local shards: pickles under RUN_DIR/jobs/local (owner-only)."""
    jobs = run_dir / "jobs"
    jobs.mkdir(mode=0o700, exist_ok=True)
    jobs.chmod(0o700)
    return Fs3gLocalExecutor(jobs / "local", python=job_python(fs3g))
