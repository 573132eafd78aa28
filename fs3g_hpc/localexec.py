"""The local executor: shard tasks as local processes (bounded concurrency), then the merge in this process. The
embedded default when no Slurm is at hand; it runs the same `fs3g run-shard` and merge as the cluster, so the catalog
it writes is the same. The merge needs no process of its own: it runs after every shard, alone, and a new
interpreter with boto3 costs ~0.3 s.

How a shard process starts. When the shards run this same fs3g (`fs3g_argv()`: this interpreter, `-m fs3g_hpc`, the
backup, restore and compare runs), each is FORKED from this process and runs `fs3g SHARD_COMMAND RUN_DIR --shard N`
through fs3g's own `__main__` in the child, exactly as the exec'd command would (arguments, logging, exit codes,
crash files), with nothing imported or parsed again: the child starts with boto3 and botocore's S3 model already
loaded, which an exec'd shard pays 0.5-1 s for (two interpreters: submitit's runner, then fs3g). The child gets the
same process setup as an exec'd one: a session of its own, stdin from /dev/null, stdout and stderr into its log,
default signal handlers, SIGTERM when this process dies. A process with other threads alive (a caller's own, through
the Python API) is never forked: a lock one of them holds would stay held in the child; its shards are exec'd. Any
other command line (a test's stand-in) is a submitit
local job (fs3g_hpc/slurm/local.py: its pickle under RUN_DIR/jobs/local, submitit's runner `exec`ing it), started by
this module's loop rather than submitit's controller, which cannot keep what follows.

Signals: each shard process runs in a session of its own, so a signal reaches it once, from here: SIGTERM, SIGINT
(Ctrl-C on a terminal reaches only this process) and SIGHUP (sent on as SIGTERM) are forwarded to every running
shard, which saves its journal and stops (fs3g_hpc/signals.py); no further shard starts, the merge does not run, and
this process waits up to STOP_GRACE_S for them (a second signal, or the grace running out, SIGKILLs the rest: their
journals still hold every file finished). Should this process die without that (kill -9), the kernel sends each shard
SIGTERM (PR_SET_PDEATHSIG), so none is left uploading.

Progress: a line across all shards (fs3g_hpc/runs/progress.py RunProgress) from the shards' small counters files.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from .signals import StopOnSignals

if TYPE_CHECKING:
    from .runs.progress import RunProgress
    from .slurm.local import Fs3gLocalExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")


# How often finished shard processes are looked for: short, since a shard of small files can take well under a second.
_POLL_S = 0.02
# How long stopped shards get to save their state (abort or journal their uploads) before they are killed.
STOP_GRACE_S = 30.0
# The signals this process stops on, and what each shard is sent for them.
FORWARDED = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}


@dataclass(frozen=True)
class Interrupted:
    """How a stopped local run ended: the signal, the shards that stopped by themselves, the ones killed."""

    signal_name: str
    stopped: list[int]
    killed: list[int]
    never_started: int


def run_locally(run_dir: Path, shard_count: int, fs3g: Sequence[str], parallel: int, *, shard_command: str,
                merge: Callable[[], T], on_interrupt: Callable[[Interrupted], T],
                progress: "RunProgress | None" = None, stop_grace_s: float = STOP_GRACE_S,
                fork: bool | None = None) -> T:
    """Run `fs3g SHARD_COMMAND RUN_DIR --shard N` for every shard (at most `parallel` at once), then `merge()`;
    what the merge returns. Stopped by a signal: what `on_interrupt(...)` returns, without merging. `fork`: start
    the shards forked from here (default: when `fs3g` is this same fs3g, see the module's docstring)."""
    logs = run_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    pending = list(range(shard_count))
    running: list[tuple[int, "subprocess.Popen | ForkedShard"]] = []
    finished: list[int] = []
    executor: "Fs3gLocalExecutor | None" = None  # made when a shard starts: a run with nothing to do pays nothing
    forked = fork if fork is not None else forkable(fs3g)
    signals = StopOnSignals(tuple(FORWARDED))
    with signals:
        while (pending or running) and not signals.stop.is_set():
            while pending and len(running) < parallel and not signals.stop.is_set():
                shard = pending.pop(0)
                words = [shard_command, str(run_dir), "--shard", str(shard)]
                log_path = logs / f"shard-local-{shard}.out"
                if forked and threading.active_count() == 1:  # never fork a process with threads (their locks)
                    proc: "subprocess.Popen | ForkedShard" = fork_shard(words, log_path)
                else:
                    if executor is None:
                        from .slurm.local import local_executor  # submitit is imported only when a shard starts

                        executor = local_executor(run_dir, fs3g)
                    proc = executor.start([*fs3g, *words], f"shard-{shard}", log_path)
                running.append((shard, proc))
            for item in list(running):
                code = item[1].poll()
                if code is not None:
                    running.remove(item)
                    finished.append(item[0])
                    if code != 0:  # the merge reports its files; the log says why
                        log.warning("shard %d exited %d (log: %s)", item[0], code, logs / f"shard-local-{item[0]}.out")
            if progress is not None:
                progress.tick([s for s, _ in running], finished)
            signals.stop.wait(_POLL_S)
        if signals.stop.is_set():
            outcome = _stop(running, signals, stop_grace_s, len(pending))
            if progress is not None:
                progress.close()
            return on_interrupt(outcome)
    if progress is not None:
        progress.tick([], finished, force=True)
        progress.close()
    return merge()


def _stop(running: list[tuple[int, "subprocess.Popen | ForkedShard"]], signals: StopOnSignals, grace_s: float,
          never_started: int) -> Interrupted:
    """Forward the signal to every running shard, wait for them (bounded), kill what is left."""
    name = signals.first or "SIGTERM"
    sent = FORWARDED.get(signal.Signals[name], signal.SIGTERM)
    for _shard, proc in running:
        if proc.poll() is None:
            try:
                proc.send_signal(sent)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    killed: list[int] = []
    stopped: list[int] = []
    for shard, proc in running:
        while proc.poll() is None and time.monotonic() < deadline and len(signals.caught) < 2:
            time.sleep(_POLL_S)
        if proc.poll() is None:  # the grace ran out, or a second signal asked for it now
            log.warning("shard %d did not stop within %.0f s: killing it (its journal keeps what it finished)",
                        shard, grace_s)
            proc.kill()
            proc.wait()
            killed.append(shard)
        else:
            stopped.append(shard)
    return Interrupted(name, stopped, killed, never_started)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """The child's step between fork and exec (or a forked shard's first) that asks for SIGTERM when `parent` dies
    (kept across exec). Made only when a shard starts: a run with nothing to upload pays nothing (CDLL(None) is this
    process's own symbols, libc's prctl among them: no ldconfig)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # in the child, between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


# -- forked shards ------------------------------------------------------------------------------------------------


def forkable(fs3g: Sequence[str]) -> bool:
    """Whether shards of the command line `fs3g` can be forked from here: it is this interpreter running this
    package (what runs/executor.fs3g_argv() gives), on a system with fork."""
    return hasattr(os, "fork") and list(fs3g) == [sys.executable, "-m", __package__]


class ForkedShard:
    """A forked shard process, with the part of subprocess.Popen the loop above uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_shard(words: Sequence[str], log_path: Path) -> ForkedShard:
    """Fork a child that runs `fs3g WORDS` (this package's __main__, as `python -m` would) with its output in
    `log_path` (truncated, 0600), and exits with its exit code; never returns in the child."""
    preexec = die_with_parent(os.getpid())
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(fd)
        return ForkedShard(pid)
    code = 1
    try:  # the child: the process an exec'd shard would be, then fs3g's own entry point
        os.setsid()
        preexec()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(null)
        os.close(fd)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging.root.handlers.clear()  # configured again by the command, from its own arguments
        sys.argv = [sys.argv[0], *words]
        try:
            runpy.run_module(__package__, run_name="__main__", alter_sys=False)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # noqa: BLE001 - nothing may return into the parent's stack
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
