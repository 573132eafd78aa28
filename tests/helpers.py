"""Helpers the test files share: run fs3g as a subprocess, write a policy, build a sharded tree, read a report.

A plain module (tests/ is on sys.path through pytest's rootdir conftest), imported as `from helpers import ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Slurm limits small enough for the CI cluster.
SMALL_SLURM = 'time_limit: "10", cpus_per_task: 1, mem_bytes: 3GiB, array_parallelism: 16'


def fs3g(*args: str, timeout: float = 600, text: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    """`python -m fs3g_hpc ARGS` with its output captured; `kw` goes to subprocess.run (env, cwd, input, ...)."""
    return subprocess.run([sys.executable, "-m", "fs3g_hpc", *args], capture_output=True, text=text,
                          timeout=timeout, **kw)


def write_policy(tmp: Path, roots: Path | list[Path], bucket: Any = "unused-bucket", *, name: str = "lab",
                 endpoint_url: str | None = None, prefix: str | None = None, file: str | None = None,
                 exclude: list[str] | tuple[str, ...] | None = None, extra: str = "", **sections: str) -> Path:
    """A policy file `tmp/FILE` (default `NAME.yaml`) for lab NAME backing ROOTS up into BUCKET.

    BUCKET is a bucket fixture (its name and endpoint are used) or a bucket name; ENDPOINT_URL and PREFIX go into the
    s3 section when given. The run root is `tmp/runs`. Each keyword in SECTIONS is one top-level section: a body
    such as `max_files: 6` becomes `shards: {max_files: 6}`; a body without a colon is written as a scalar
    (`memory_budget_bytes="2GiB"`). EXTRA is appended verbatim (dedent it first).
    """
    if not isinstance(bucket, str):
        bucket, endpoint_url = bucket.name, endpoint_url or bucket.endpoint_url
    roots = roots if isinstance(roots, list) else [roots]
    s3 = [f"bucket: {bucket}"] + ([f"prefix: {prefix}"] if prefix is not None else []) + \
        ([f"endpoint_url: {endpoint_url}"] if endpoint_url else [])
    lines = [f"lab: {{name: {name}}}", f"roots: [{', '.join(str(r) for r in roots)}]"]
    if exclude is not None:
        lines.append(f"exclude: [{', '.join(json.dumps(p) for p in exclude)}]")
    lines += [f"s3: {{{', '.join(s3)}}}", f"run_root: {tmp / 'runs'}"]
    for section, body in sections.items():
        lines.append(f"{section}: {{{body}}}" if ":" in body else f"{section}: {body}")
    path = tmp / (file or f"{name}.yaml")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def make_tree(root: Path, dirs: int, per_dir: int, *, min_size: int = 0) -> int:
    """DIRS directories proj00.. of PER_DIR random files each (MIN_SIZE to MIN_SIZE+1999 bytes); returns the count."""
    for d in range(dirs):
        (root / f"proj{d:02d}").mkdir(parents=True)
        for f in range(per_dir):
            (root / f"proj{d:02d}" / f"f{f:04d}.dat").write_bytes(os.urandom(min_size + (f * 37) % 2000))
    return dirs * per_dir


def read_report(run_dir: Path) -> dict:
    """The run's report.json as a dict."""
    return json.loads((run_dir / "report.json").read_text())
