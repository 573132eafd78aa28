"""An internal error in an array task leaves its full traceback in an owner-only crash file under RUN_DIR/logs/,
named in the task's one error line (no -vv needed, nothing of the environment in it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from fs3g_hpc.config import load_policy
from fs3g_hpc.backup.plan import PlanOptions, make_plan
from fs3g_hpc.scan import ScanSettings


def test_internal_error_in_run_shard_writes_a_crash_file_in_the_run_dir(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    config = tmp_path / "lab.yaml"
    config.write_text(textwrap.dedent(f"""\
        lab: {{name: crash}}
        roots: [{root}]
        s3: {{bucket: fs3g-any, endpoint_url: http://127.0.0.1:9}}
        run_root: {tmp_path / 'runs'}
        """))
    run_dir = make_plan(load_policy(config, environ={}), tmp_path / "runs" / "r",
                        PlanOptions(scan=ScanSettings(workers=0))).run_dir
    tests_dir = Path(__file__).resolve().parent
    secret = "fs3g-secret-never-in-a-file"
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": "upload_hooks:explode", "AWS_SECRET_ACCESS_KEY": secret,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir), "--shard", "0"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    match = re.fullmatch(r"fs3g: internal error: RuntimeError: the test hook exploded \(traceback in (\S+)\); "
                         r"please report it", lines[0])
    assert match, lines[0]
    crash = Path(match.group(1))
    assert crash.parent == run_dir / "logs" and re.fullmatch(r"crash-.+-\d+-\d{8}T\d{6}\.txt", crash.name)
    assert crash.stat().st_mode & 0o777 == 0o600 and (run_dir / "logs").stat().st_mode & 0o777 == 0o700
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "upload_hooks.py" in text and "def explode" not in text
    assert "raise RuntimeError" in text and f"run-shard {run_dir} --shard 0" in text
    assert secret not in text
