"""The local executor under signals and over time, for real (SeaweedFS, shard processes): SIGTERM or SIGINT stops the
parent and every shard it started (journals saved, no merge, exit 130, one line saying how to resume) and the resume
completes; the progress line in a log; elapsed time and throughput in the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import helpers
from helpers import SMALL_SLURM, fs3g, read_report

from fs3g_hpc.localexec import STOP_GRACE_S

TESTS = Path(__file__).resolve().parent


def make_tree(root: Path, dirs: int, per_dir: int) -> int:
    return helpers.make_tree(root, dirs, per_dir, min_size=100)

def write_policy(tmp: Path, name: str, root: Path, bucket, max_files: int, workers: int) -> Path:
    # The per-object layout: these tests stop runs between per-file PUTs (packs: tests/test_packs_backup.py).
    return helpers.write_policy(tmp, root, bucket, name=name, prefix=f"labs/{name}", shards=f"max_files: {max_files}",
                                uploader=f"small_workers: {workers}", restore=f"download_workers: {workers}",
                                slurm=SMALL_SLURM, memory_budget_bytes="2GiB", storage="small_files: objects")

def slow_env(tmp: Path, delay_s: float, **extra: str) -> dict[str, str]:
    """Every object PUT and GET of the shard processes waits `delay_s` (tests/upload_hooks.py slow)."""
    return {**os.environ, "FS3G_BOTOCORE_HOOK": "upload_hooks:slow", "FS3G_TEST_SLOW_S": str(delay_s),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])), **extra}


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def done_lines(journals: list[Path]) -> int:
    return sum(p.read_text().count('"t":"done"') for p in journals if p.exists())


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def journal_keys(run_dir: Path) -> dict[str, int]:
    keys: dict[str, int] = {}
    for journal in (run_dir / "results").glob("shard-*.journal"):
        for line in journal.read_text().splitlines():
            item = json.loads(line)
            if item["t"] == "done":
                keys[item["k"]] = item["s"]
    return keys


def bucket_keys(bucket, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return found


def signal_when_busy(proc: subprocess.Popen, journals, sig: signal.Signals, busy_lines: int) -> set[int]:
    """Send `sig` to `proc` once its shards have journaled `busy_lines` files; the shard pids it had then."""
    wait_until(lambda: done_lines(journals()) >= busy_lines or proc.poll() is not None, 120, "a growing journal")
    assert proc.poll() is None, "the run finished before the test could stop it: make it slower"
    children = children_of(proc.pid)
    assert children, "no shard process running"
    proc.send_signal(sig)
    return children


def assert_stopped(proc: subprocess.Popen, children: set[int], started: float) -> str:
    _out, err = proc.communicate(timeout=STOP_GRACE_S + 60)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < STOP_GRACE_S, "the shards did not stop by themselves within the grace"
    assert not [pid for pid in children if alive(pid)], "a shard process outlived its parent"
    resume = [line for line in err.splitlines() if "to resume:" in line]
    assert len(resume) == 1 and "stopped by" in resume[0], err
    return resume[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_local_backup_and_every_shard_and_submit_resumes(seaweed_bucket, shared_tmp, sig):
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 4, 40)
    lab = f"sig{sig.name.lower()}"
    policy = write_policy(tmp, lab, root, seaweed_bucket, max_files=40, workers=2)  # 4 shards, 2 at once here
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "backup", "--config", str(policy), "--executor",
                             "local"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=slow_env(tmp, 0.15))
    runs = tmp / "runs" / lab
    children = signal_when_busy(proc, lambda: list(runs.glob("*/results/shard-*.journal")), sig, busy_lines=4)
    line = assert_stopped(proc, children, time.monotonic())
    run_dir = next(p.parent for p in runs.glob("*/plan.json"))
    assert f"fs3g submit {run_dir} --executor local" in line and f"stopped by {sig.name}" in line

    assert not (run_dir / "report.json").exists(), "the merge ran after a signal"
    results = [json.loads(p.read_text()) for p in (run_dir / "results").glob("shard-??????.json")]
    assert results and {r["status"] for r in results} == {"interrupted"}
    assert {r["signal"] for r in results} == {sig.name}
    journaled = journal_keys(run_dir)
    assert 0 < len(journaled) < files
    # The journals hold exactly what reached the bucket: nothing uploaded and forgotten, nothing journaled and absent.
    # The stopped run still holds the lab's backup lock (a prune waits for it) until the merge that ends it.
    lock = f"labs/{lab}/locks/backup.json"
    keys = bucket_keys(seaweed_bucket, f"labs/{lab}/")
    assert lock in keys
    assert {k: v for k, v in keys.items() if k != lock} == journaled

    rerun = fs3g("submit", str(run_dir), "--executor", "local")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert lock not in bucket_keys(seaweed_bucket, f"labs/{lab}/")
    report = read_report(run_dir)
    assert (report["verified"]["files"], report["failed"]["files"]) == (files, 0)
    resumed = [json.loads(p.read_text()) for p in (run_dir / "results").glob("shard-??????.json")]
    assert sum(r["already_done"] for r in resumed) == len(journaled)


def test_sigterm_stops_a_local_restore_and_its_shards_which_then_resume(seaweed_bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 3, 30)
    policy = write_policy(tmp, "sigrst", root, seaweed_bucket, max_files=30, workers=2)
    backup = fs3g("backup", "--config", str(policy), "--executor", "local")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    dest = tmp / "restored"
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "restore", "--config", str(policy), "--dest", str(dest),
                             "--executor", "local"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=slow_env(tmp, 0.15))
    runs = tmp / "runs" / "sigrst"

    def journals() -> list[Path]:
        return list(runs.glob("restore-*/results/shard-*.journal"))

    def restored_lines(_journals) -> int:
        return sum(len(p.read_text().splitlines()) for p in _journals if p.exists())

    # The restore journal is flushed about once a second: wait for its first lines.
    wait_until(lambda: restored_lines(journals()) >= 2 or proc.poll() is not None, 120, "a growing journal")
    assert proc.poll() is None, "the restore finished before the test could stop it"
    children = children_of(proc.pid)
    assert children
    proc.send_signal(signal.SIGTERM)
    line = assert_stopped(proc, children, time.monotonic())
    run_dir = next(runs.glob("restore-*"))
    assert f"fs3g restore-shard {run_dir} --shard N" in line
    assert not (run_dir / "report.json").exists()
    header = json.loads((run_dir / "restore.json").read_text())
    for shard in range(header["shard_count"]):
        step = fs3g("restore-shard", str(run_dir), "--shard", str(shard))
        assert step.returncode == 0, step.stdout + step.stderr
    merged = fs3g("restore-merge", str(run_dir))
    assert merged.returncode == 0, merged.stdout + merged.stderr
    report = read_report(run_dir)
    assert report["restored"]["files"] + report["already_present"] == files
    assert report["elapsed_s"] >= report["shard_phase_s"] > 0  # from the selection; the shards of the last rerun
    assert report["throughput"]["bytes_per_s"] == pytest.approx(report["restored"]["bytes"] / report["elapsed_s"],
                                                                rel=1e-3)
    assert "  elapsed   " in merged.stdout
    for path in root.rglob("*.dat"):
        assert (dest / path.relative_to(root)).read_bytes() == path.read_bytes()


def test_a_local_backup_logs_progress_and_reports_elapsed_and_throughput(seaweed_bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 2, 20)
    policy = write_policy(tmp, "prog", root, seaweed_bucket, max_files=20, workers=2)
    proc = fs3g("backup", "--config", str(policy), "--executor", "local",
                env=slow_env(tmp, 0.1, FS3G_PROGRESS_INTERVAL_S="0.3"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Not a terminal: plain timestamped lines across all shards, every 0.3 s here.
    lines = [line for line in proc.stderr.splitlines() if " backup: " in line]
    assert lines, proc.stderr
    assert all("\r" not in line and f"/{files:,} files" in line and "ETA" in line for line in lines)
    assert lines[-1].split(" backup: ")[1].startswith(f"{files:,}/{files:,} files")
    run_dir = next((tmp / "runs" / "prog").glob("*/plan.json")).parent
    # Each shard logs its own line too.
    assert "shard 0: 20/20 files" in (run_dir / "logs" / "shard-local-0.out").read_text()

    report = read_report(run_dir)
    verified = report["verified"]
    assert verified["files"] == files
    # 40 files over 2 shards of 2 workers at >= 0.1 s per PUT: at least a second of shards.
    assert 1.0 <= report["shard_phase_s"] <= report["elapsed_s"]
    assert report["throughput"]["bytes_per_s"] == pytest.approx(verified["bytes"] / report["elapsed_s"], rel=1e-3)
    assert report["throughput"]["files_per_s"] == pytest.approx(files / report["elapsed_s"], rel=1e-3)
    assert report["shard_throughput"]["files_per_s"] == pytest.approx(files / report["shard_phase_s"], rel=1e-3)
    assert "  elapsed   00:00:" in proc.stdout and "files/s" in proc.stdout
    assert "  elapsed   " in (run_dir / "summary.txt").read_text()


def test_a_bad_progress_interval_is_one_line_and_exit_2(seaweed_bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    make_tree(root, 1, 2)
    policy = write_policy(tmp, "badint", root, seaweed_bucket, max_files=20, workers=2)
    proc = fs3g("backup", "--config", str(policy), "--executor", "local",
                env={**os.environ, "FS3G_PROGRESS_INTERVAL_S": "soon"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "FS3G_PROGRESS_INTERVAL_S='soon'" in proc.stderr


def test_sigterm_ends_a_local_restore_waiting_for_glacier_between_polls(moto_bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    make_tree(root, 1, 2)
    (root / "big.bin").write_bytes(os.urandom(300 * 1024))  # over the small-file threshold: archived
    policy = write_policy(tmp, "sigglac", root, moto_bucket, max_files=10, workers=2)
    policy.write_text(policy.read_text().replace(
        "storage: {small_files: objects}",
        "storage: {small_files: objects, archive_storage_class: GLACIER, upload_large_to_archive: true}"))
    policy.write_text(policy.read_text().replace("restore: {download_workers: 2}",
                                                 "restore: {download_workers: 2, poll_interval_s: 3600}"))
    backup = fs3g("backup", "--config", str(policy), "--executor", "local")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    hooks = tmp / "hooks"
    hooks.mkdir()
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": "restore_hooks:install", "FS3G_TEST_HOOK_DIR": str(hooks),
           "FS3G_TEST_IN_PROGRESS_POLLS": "5",  # this process's polls all see the restore in progress
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "restore", "--config", str(policy), "--dest",
                             str(tmp / "restored"), "--executor", "local"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    runs = tmp / "runs" / "sigglac"
    wait_until(lambda: any(runs.glob("restore-*/stage/state.json")) or proc.poll() is not None, 120, "the first poll")
    time.sleep(0.5)  # in the hour-long wait now
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)  # not an hour
    assert proc.returncode == 130, err
    run_dir = next(runs.glob("restore-*"))
    assert f"while waiting for Glacier; to resume: fs3g restore-stage {run_dir}" in err
    assert not (run_dir / "report.json").exists() and not list(run_dir.glob("results/shard-*.journal"))


def test_a_local_backup_on_a_terminal_shows_a_live_line_cleared_before_the_summary(seaweed_bucket, shared_tmp):
    import pty

    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 2, 10)
    policy = write_policy(tmp, "tty", root, seaweed_bucket, max_files=10, workers=2)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "backup", "--config", str(policy), "--executor",
                             "local"], stdout=subprocess.PIPE, stderr=slave, text=True, env=slow_env(tmp, 0.1))
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed: the process has exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + seen.decode()
    assert b"\rbackup: " in seen and f"/{files:,} files".encode() in seen
    assert seen.endswith(b"\r\x1b[K")  # cleared, not left above the summary
    assert "verified  20 files" in out
