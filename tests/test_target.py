"""A bucket the user must fix (missing, credentials absent or refused, endpoint dead): every command that talks to it
stops at the start with one line and exit 2, never "internal error", and a backup runs no job and no retry round.

Against the real endpoints: moto and SeaweedFS for a missing bucket, SeaweedFS for refused credentials (moto accepts
any), a closed port on 127.0.0.1 for a dead endpoint, and an environment with no credentials at all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest

from fs3g_hpc.transfer.target import FailureKind, PROBE_DIR, check_target


def write_policy(tmp: Path, bucket_name: str, endpoint_url: str) -> Path:
    root = tmp / "data"
    root.mkdir(exist_ok=True)
    for i in range(5):
        (root / f"f{i}.dat").write_bytes(os.urandom(50 + i))
    return helpers.write_policy(tmp, root, bucket_name, name="tgt", file="lab.yaml", endpoint_url=endpoint_url,
                                prefix="labs/tgt")

COMMANDS = {
    "backup": ["backup", "--executor", "local", "--wait"],
    "restore": ["restore", "--executor", "local"],
    "compare": ["compare", "--against-bucket"],
    "policy-show": ["policy", "show"],
    "policy-apply": ["policy", "apply"],
}


def run(tmp: Path, command: str, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = COMMANDS[command]
    args = [*argv[:2], "--config", str(config), *argv[2:]] if command.startswith("policy") else \
        [argv[0], "--config", str(config), *argv[1:]]
    return helpers.fs3g(*args, timeout=120, cwd=tmp, env=env)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_no_backup_ran(tmp: Path, proc: subprocess.CompletedProcess) -> None:
    """The plan was written, but no shard process, no merge and no retry round ran."""
    runs = list((tmp / "runs" / "tgt").glob("tgt-*"))
    assert len(runs) == 1, runs
    assert not list(runs[0].glob("logs/shard-*")) and not list(runs[0].glob("results/*"))
    assert not (runs[0] / "report.json").exists() and not list(runs[0].glob("retry-*"))
    assert len(proc.stdout.splitlines()) < 15, proc.stdout
    assert f"fs3g submit {runs[0]}" in proc.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_bucket_is_one_line_exit_2(command, bucket, tmp_path):
    absent = f"{bucket.name}-absent"
    config = write_policy(tmp_path, absent, bucket.endpoint_url)
    started = time.monotonic()
    proc = run(tmp_path, command, config)
    assert_one_line_exit_2(proc, f"bucket '{absent}' does not exist at {bucket.endpoint_url}", "s3.bucket")
    if command == "backup":
        assert_no_backup_ran(tmp_path, proc)
        assert time.monotonic() - started < 30


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_refused_credentials_are_one_line_exit_2(command, seaweed_bucket, tmp_path):
    config = write_policy(tmp_path, seaweed_bucket.name, seaweed_bucket.endpoint_url)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "fs3g-not-a-key", "AWS_SECRET_ACCESS_KEY": "fs3g-not-a-secret"}
    proc = run(tmp_path, command, config, env)
    assert_one_line_exit_2(proc, f"{seaweed_bucket.endpoint_url} refused the credentials", "InvalidAccessKeyId")
    assert "fs3g-not-a-secret" not in proc.stderr + proc.stdout
    if command == "backup":
        assert_no_backup_ran(tmp_path, proc)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_dead_endpoint_is_one_line_exit_2(command, tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    config = write_policy(tmp_path, "fs3g-any", endpoint)
    started = time.monotonic()
    proc = run(tmp_path, command, config, {**os.environ, "AWS_ACCESS_KEY_ID": "fs3g", "AWS_SECRET_ACCESS_KEY": "fs3g"})
    assert_one_line_exit_2(proc, f"endpoint {endpoint} unreachable", "s3.endpoint_url")
    assert time.monotonic() - started < 60  # the preflight's short retry budget, not the uploader's
    if command == "backup":
        assert_no_backup_ran(tmp_path, proc)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_credentials_is_one_line_exit_2(command, moto_bucket, tmp_path):
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty), HOME=str(tmp_path))
    config = write_policy(tmp_path, moto_bucket.name, moto_bucket.endpoint_url)
    proc = run(tmp_path, command, config, env)
    assert_one_line_exit_2(proc, "no AWS credentials found", "AWS_ACCESS_KEY_ID")
    if command == "backup":
        assert_no_backup_ran(tmp_path, proc)


def test_write_probe_leaves_nothing_in_the_bucket(bucket, tmp_path):
    """The backup preflight's probe is a multipart upload created and aborted: no object, no open upload remains."""
    from fs3g_hpc.config import load_policy

    policy = load_policy(write_policy(tmp_path, bucket.name, bucket.endpoint_url), environ={})
    check_target(policy, write=True)
    assert bucket.client.list_objects_v2(Bucket=bucket.name).get("KeyCount", 0) == 0
    open_uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    assert [u["Key"] for u in open_uploads if PROBE_DIR in u["Key"]] == []


def test_retryable_kinds():
    assert all(k.retryable for k in (FailureKind.THROTTLED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT,
                                     FailureKind.CONNECTION, FailureKind.DAMAGED))
    assert not any(k.retryable for k in (FailureKind.ACCESS_DENIED, FailureKind.NO_SUCH_BUCKET,
                                         FailureKind.BAD_CREDENTIALS, FailureKind.NO_CREDENTIALS,
                                         FailureKind.REFUSED))


def test_submit_of_a_plan_and_fasts3plusglacier_backup_check_the_bucket_first(moto_bucket, tmp_path):
    """`fs3g submit RUN_DIR` and `fasts3plusglacier --backup` to a missing bucket: one line, exit 2, no shard ran."""
    from fs3g_hpc.config import load_policy
    from fs3g_hpc.backup.plan import PlanOptions, make_plan
    from fs3g_hpc.scan import ScanSettings

    absent = f"{moto_bucket.name}-absent"
    config = write_policy(tmp_path, absent, moto_bucket.endpoint_url)
    run_dir = make_plan(load_policy(config, environ={}), tmp_path / "runs" / "tgt" / "tgt-plan",
                        PlanOptions(scan=ScanSettings(workers=0))).run_dir
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "submit", str(run_dir), "--executor", "local", "--wait"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_exit_2(proc, f"bucket '{absent}' does not exist")
    assert_no_backup_ran(tmp_path, proc)

    env = {**os.environ, "AWS_ENDPOINT_URL": moto_bucket.endpoint_url, "FS3G_RUN_ROOT": str(tmp_path / "compat")}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc.cli.compat", "--bucketname", absent, "--backup",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert_one_line_exit_2(proc, f"bucket '{absent}' does not exist at {moto_bucket.endpoint_url}")
    assert not list((tmp_path / "compat").rglob("shard-local-*")) and not list((tmp_path / "compat").rglob("retry-*"))
