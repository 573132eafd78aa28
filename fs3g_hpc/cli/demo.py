"""`fs3g demo`: a whole backup on this machine. A sample tree, a loopback moto server (unless an endpoint is given),
then plan, shards and the verifying merge. Nothing is left running; moto's dummy credentials exist only in the
environment of the processes it starts."""

from __future__ import annotations

import argparse
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..config import Policy, load_policy
from ..errors import Fs3gError, UsageError
from ..runs.executor import Executor

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


def cmd_demo(args: argparse.Namespace) -> int:
    from ..backup.plan import PlanOptions, make_plan
    from ..backup.run import cluster_max_array_size, submit_backup_run
    from ..runs.catalog import catalog_path
    from ..scan import ScanSettings
    from ..transfer.client import ClientSettings, ensure_bucket, make_s3_client

    base = Path(args.dir).resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    count = make_sample_tree(base / "data")
    print(f"demo: sample tree {base / 'data'} ({count} files and links)")
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL")
        fresh_endpoint = endpoint is None
        if endpoint is None:
            endpoint = stack.enter_context(moto_server(base / "moto.log"))
            # moto accepts any credentials; these dummy ones live only in this process's environment and its children.
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "fs3g-demo")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "fs3g-demo")
            print(f"demo: started a moto server at {endpoint} (stopped at the end)")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        policy_file = base / "lab.yaml"
        write_demo_policy(policy_file, base / "data", base / "runs", endpoint, args.bucket)
        policy = load_policy(policy_file, environ={})
        ensure_bucket(make_s3_client(ClientSettings.from_policy(policy)), policy.s3.bucket)
        max_array, source = cluster_max_array_size(Executor(args.executor))
        # A moto server started here is empty: whatever the catalog says, everything must go again.
        summary = make_plan(policy, default_demo_run(policy), PlanOptions(
            full=fresh_endpoint, catalog=catalog_path(policy), scan=ScanSettings(workers=len(os.sched_getaffinity(0))),
            max_array_size=max_array, max_array_size_source=source))
        print("\n".join(summary.lines()))
        code = submit_backup_run(summary.run_dir, Executor(args.executor), wait=True)
        print(f"demo: run directory {summary.run_dir} (report.json, summary.txt); policy {policy_file}")
        return code


def default_demo_run(policy: Policy) -> Path:
    from ..runs.layout import default_run_dir

    return default_run_dir(policy, datetime.now(timezone.utc))
