"""The local executor: shard tasks as local processes (bounded concurrency), then the merge. The embedded default
when no Slurm is at hand; it runs the same `fs3g run-shard` and `fs3g merge` as the cluster, so the catalog it writes
is the same."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def run_locally(run_dir: Path, shard_count: int, fs3g: Sequence[str], parallel: int, *,
                shard_command: str = "run-shard", merge_args: Sequence[str] | None = None) -> int:
    """Run every shard (at most `parallel` at once), then the merge; the merge's exit code. The defaults run a
    backup; a restore passes its own shard command and merge."""
    logs = run_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    pending = list(range(shard_count))
    running: list[tuple[int, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < parallel:
            shard = pending.pop(0)
            fd = os.open(logs / f"shard-local-{shard}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                proc = subprocess.Popen([*fs3g, shard_command, str(run_dir), "--shard", str(shard)],
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            running.append((shard, proc))
        for item in list(running):
            code = item[1].poll()
            if code is not None:
                running.remove(item)
                if code != 0:  # the merge reports its files; the log says why
                    log.warning("shard %d exited %d (log: %s)", item[0], code, logs / f"shard-local-{item[0]}.out")
        time.sleep(0.1)
    merge = ["merge", str(run_dir), "--retry-executor", "local"] if merge_args is None else list(merge_args)
    return subprocess.run([*fs3g, *merge], stdin=subprocess.DEVNULL).returncode
