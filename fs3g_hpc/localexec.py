"""The local executor: shard tasks as local processes (bounded concurrency), then the merge in this process. The
embedded default when no Slurm is at hand; it runs the same `fs3g run-shard` and merge as the cluster, so the catalog
it writes is the same. The merge needs no process of its own: it runs after every shard, alone, and a new
interpreter with boto3 costs ~0.3 s."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)


# How often finished shard processes are looked for: short, since a shard of small files can take well under a second.
_POLL_S = 0.02


def run_locally(run_dir: Path, shard_count: int, fs3g: Sequence[str], parallel: int, *, shard_command: str,
                merge: Callable[[], int]) -> int:
    """Run `fs3g SHARD_COMMAND RUN_DIR --shard N` for every shard (at most `parallel` at once), then `merge()`;
    the merge's exit code."""
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
        time.sleep(_POLL_S)
    return merge()
