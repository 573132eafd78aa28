"""The local executor: shard tasks as local processes (bounded concurrency), then the merge in this process. The
embedded default when no Slurm is at hand; it runs the same `fs3g run-shard` and merge as the cluster, so the catalog
it writes is the same. The merge needs no process of its own: it runs after every shard, alone, and a new
interpreter with boto3 costs ~0.3 s.

Each shard is a submitit local job (fs3g_hpc/slurm/local.py: its pickle under RUN_DIR/jobs/local, submitit's runner
`exec`ing fs3g), started by this module's loop rather than submitit's controller, which cannot keep what follows.

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
import signal
import subprocess
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
                progress: "RunProgress | None" = None, stop_grace_s: float = STOP_GRACE_S) -> T:
    """Run `fs3g SHARD_COMMAND RUN_DIR --shard N` for every shard (at most `parallel` at once), then `merge()`;
    what the merge returns. Stopped by a signal: what `on_interrupt(...)` returns, without merging."""
    logs = run_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    pending = list(range(shard_count))
    running: list[tuple[int, subprocess.Popen]] = []
    finished: list[int] = []
    executor: "Fs3gLocalExecutor | None" = None  # made when a shard starts: a run with nothing to do pays nothing
    signals = StopOnSignals(tuple(FORWARDED))
    with signals:
        while (pending or running) and not signals.stop.is_set():
            while pending and len(running) < parallel and not signals.stop.is_set():
                shard = pending.pop(0)
                if executor is None:
                    from .slurm.local import local_executor  # submitit is imported only when a shard starts

                    executor = local_executor(run_dir, fs3g)
                proc = executor.start([*fs3g, shard_command, str(run_dir), "--shard", str(shard)],
                                      f"shard-{shard}", logs / f"shard-local-{shard}.out")
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


def _stop(running: list[tuple[int, subprocess.Popen]], signals: StopOnSignals, grace_s: float,
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
