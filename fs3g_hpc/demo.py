"""`fs3g demo`: a whole backup on this machine. A sample tree, a loopback moto server (unless an endpoint is given),
then plan, shards and the verifying merge. Nothing is left running; moto's dummy credentials exist only in the
environment of the processes it starts."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from .errors import Fs3gError, UsageError

MIB = 1024 * 1024


def make_sample_tree(root: Path, seed: int = 7) -> int:
    """~300 small files in a few directories, two large files, a symlink and an awkward name; returns the count."""
    if root.exists() and any(root.iterdir()):
        return sum(1 for p in root.rglob("*") if p.is_file() or p.is_symlink())
    rng = random.Random(seed)
    count = 0
    for project in ("imaging", "genomics", "notes"):
        for run in range(4):
            directory = root / project / f"run{run:02d}"
            directory.mkdir(parents=True)
            for i in range(25):
                (directory / f"sample{i:03d}.dat").write_bytes(rng.randbytes(rng.randint(0, 16 * 1024)))
                count += 1
    (root / "imaging" / "stack.tif").write_bytes(rng.randbytes(12 * MIB + 17))
    (root / "genomics" / "reads.bam").write_bytes(rng.randbytes(3 * MIB))
    os.symlink("imaging/stack.tif", root / "latest-stack")
    (root / "notes" / "résumé (final) v2.txt").write_text("an awkward name\n")
    return count + 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """A loopback moto server for the duration of the block; its URL."""
    if importlib.util.find_spec("moto") is None:  # a clear message when the extra is missing
        raise UsageError("moto is not installed", hint="pip install 'fs3g-hpc[demo]', or give --endpoint URL")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise Fs3gError(f"moto server did not start (log: {log_path})") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_demo_policy(path: Path, root: Path, run_root: Path, endpoint: str, bucket: str) -> None:
    text = (f"# Written by `fs3g demo`.\nlab: {{name: demo}}\nroots: [{json_quote(str(root))}]\n"
            f"s3: {{bucket: {bucket}, prefix: demo, endpoint_url: {json_quote(endpoint)}}}\n"
            f"run_root: {json_quote(str(run_root))}\n"
            "shards: {max_files: 100}\n"
            "uploader: {small_workers: 8, large_workers: 2, large_buffers: 4, buffer_size_bytes: 8MiB}\n"
            "memory_budget_bytes: 1GiB\n"
            "slurm: {time_limit: \"30\", cpus_per_task: 1, mem_bytes: 2GiB}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def json_quote(text: str) -> str:
    return json.dumps(text)  # a YAML flow scalar that holds any path
