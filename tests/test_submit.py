"""A backup through the real Slurm cluster: arrays, afterany merge, several arrays under one merge, local executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import helpers
from helpers import SMALL_SLURM, fs3g, make_tree

from fs3g_hpc.config import load_policy
from fs3g_hpc.runs.catalog import catalog_path
from fs3g_hpc.model.records import EntryKind, read_records
from fs3g_hpc.slurm.jobs import array_chunks


def write_policy(tmp: Path, name: str, root: Path, bucket, max_files: int) -> Path:
    return helpers.write_policy(tmp, root, bucket, name=name, prefix=f"labs/{name}", shards=f"max_files: {max_files}",
                                slurm=SMALL_SLURM, memory_budget_bytes="2GiB")


def plan_dir(tmp: Path, policy: Path, name: str) -> Path:
    run_dir = tmp / "runs" / name
    proc = fs3g("plan", "--config", str(policy), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    return run_dir


def submit_and_wait_for_multipart(run_dir: Path) -> tuple[subprocess.Popen, str]:
    """`fs3g submit --wait` in the background, returned once shard 0 has started its multipart upload."""
    submit = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "submit", str(run_dir), "--executor", "slurm",
                               "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = run_dir / "results" / "shard-000000.journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (journal.exists() and '"t":"mpu"' in journal.read_text()):
        time.sleep(0.05)
    return submit, json.loads((run_dir / "jobs" / "submitted.json").read_text())["arrays"][0]


def test_array_chunks_follow_max_array_size():
    assert [(c.offset, c.count) for c in array_chunks(95, 40)] == [(0, 40), (40, 40), (80, 15)]
    assert [(c.offset, c.count) for c in array_chunks(3, 1001)] == [(0, 3)]


def test_backup_through_slurm_arrays_matches_the_local_executor(slurm_cluster, seaweed_bucket, shared_tmp):
    bucket = seaweed_bucket  # one endpoint is enough for the cluster path
    tmp = shared_tmp
    tmp.chmod(0o755)
    root = tmp / "data"
    files = make_tree(root, 30, 100)  # 3,000 files
    slurm_policy = write_policy(tmp, "viaslurm", root, bucket, max_files=500)
    run_dir = plan_dir(tmp, slurm_policy, "slurm-run")
    header = json.loads((run_dir / "plan.json").read_text())
    assert header["shard_count"] >= 6

    proc = fs3g("submit", str(run_dir), "--executor", "slurm", "--wait", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{files:,} verified, 0 failed" in proc.stdout
    submitted = json.loads((run_dir / "jobs" / "submitted.json").read_text())
    assert len(submitted["arrays"]) == 1
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verified"]["files"] == files and report["shard_states"] == {"done": header["shard_count"]}

    # Incremental through the cluster: change three files, back up again: exactly those go.
    for name in ("proj00/f0001.dat", "proj10/f0050.dat", "proj29/f0099.dat"):
        (root / name).write_bytes(b"changed " + name.encode())
    proc = fs3g("backup", "--config", str(slurm_policy), "--executor", "slurm", "--wait", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "planned  3 entries" in proc.stdout and "3 verified, 0 failed" in proc.stdout

    local_policy = write_policy(tmp, "vialocal", root, bucket, max_files=500)
    local_dir = plan_dir(tmp, local_policy, "local-run")
    proc = fs3g("submit", str(local_dir), "--executor", "local", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm_catalog = list(read_records(catalog_path(load_policy(slurm_policy, environ={}))))
    local_catalog = list(read_records(catalog_path(load_policy(local_policy, environ={}))))
    directories = 1 + sum(p.is_dir() for p in root.rglob("*"))  # the catalog records them too (no object)
    # A directory's atime moves when a scan lists it, and never makes its record change: compare without it.
    def without_dir_atime(entries):
        return [e._replace(atime_ns=0) if e.kind is EntryKind.DIRECTORY else e for e in entries]

    # Both packed every file, each into its own run's packs (another run id): compare all but the location.
    assert all(e.location for e in slurm_catalog + local_catalog if e.kind is EntryKind.FILE)
    slurm_catalog = [e._replace(location=b"") for e in slurm_catalog]
    local_catalog = [e._replace(location=b"") for e in local_catalog]
    assert len(slurm_catalog) == files + directories
    assert without_dir_atime(slurm_catalog) == without_dir_atime(local_catalog)

    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    for directory in (run_dir, local_dir):
        for path in directory.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path

    # submitit submitted the cluster's jobs (its wckey in accounting) and its pickles there hold no secret.
    from fs3g_hpc.slurm import commands

    ids = [*submitted["arrays"], submitted["merge"]]
    rows = commands.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "--format=JobID,JobName,WCKey"]).splitlines()
    assert rows and all(row.split("|")[2] == "submitit" for row in rows), rows
    assert {row.split("|")[1] for row in rows} == {"fs3g-viaslurm-shards", "fs3g-viaslurm-merge"}
    assert assert_pickles_hold_no_secrets(run_dir / "jobs", [os.environ["AWS_SECRET_ACCESS_KEY"]]) > header["shard_count"]


def test_more_shards_than_max_array_size_run_as_several_arrays_under_one_merge(slurm_cluster, seaweed_bucket, shared_tmp):
    bucket = seaweed_bucket  # one endpoint is enough for the cluster path
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 10, 50)
    policy = write_policy(tmp, "manyarrays", root, bucket, max_files=10)
    run_dir = plan_dir(tmp, policy, "many")
    max_array = int(slurm_cluster["max_array_size"])
    header = json.loads((run_dir / "plan.json").read_text())
    assert header["shard_count"] == 50 > max_array
    proc = fs3g("submit", str(run_dir), "--executor", "slurm", "--wait", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    submitted = json.loads((run_dir / "jobs" / "submitted.json").read_text())
    assert len(submitted["arrays"]) == 2
    merge_script = (run_dir / "jobs" / "merge.sbatch").read_text()
    assert f"#SBATCH --dependency=afterany:{submitted['arrays'][0]}:{submitted['arrays'][1]}" in merge_script
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["verified"]["files"], report["failed"]["files"]) == (files, 0)


def test_backup_command_local_executor_incremental(bucket, shared_tmp):
    """`fs3g backup` = plan + submit; a second backup after changing two files uploads exactly those."""
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 3, 20)
    policy = write_policy(tmp, f"backup{bucket.endpoint_name}", root, bucket, max_files=25)
    first = fs3g("backup", "--config", str(policy), "--executor", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"new {files:,}" in first.stdout and f"verified  {files:,} files" in first.stdout
    (root / "proj01" / "f0003.dat").write_bytes(b"changed")
    (root / "proj02" / "new.dat").write_bytes(b"new")
    second = fs3g("backup", "--config", str(policy), "--executor", "local")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "planned  2 entries" in second.stdout and "verified  2 files" in second.stdout
    catalog = list(read_records(catalog_path(load_policy(policy, environ={}))))
    assert len(catalog) == files + 1 + 1 + sum(p.is_dir() for p in root.rglob("*"))  # and the directories
    # The cancelled task's half-sent upload was aborted by the merge: the retry is a new run, not a resume.
    assert bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", []) == []


def test_demo_runs_to_a_verified_report_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "demo", "--dir", str(tmp_path / "demo")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified  304 files" in proc.stdout and "failed    0 files" in proc.stdout
    port = proc.stdout.split("moto server at http://127.0.0.1:")[1].split()[0]
    import socket

    with socket.socket() as s:  # the demo's moto server is gone
        assert s.connect_ex(("127.0.0.1", int(port))) != 0
    report = json.loads(next((tmp_path / "demo" / "runs" / "demo").glob("demo-*/report.json")).read_text())
    assert report["verified"]["files"] == 304
    again = subprocess.run([sys.executable, "-m", "fs3g_hpc", "demo", "--dir", str(tmp_path / "demo")], env=env,
                           capture_output=True, text=True, timeout=600)
    # A new moto server is empty: the second demo backs everything up again, and verifies it.
    assert again.returncode == 0 and "new 304" in again.stdout and "verified  304 files" in again.stdout


def test_backup_sbatch_template_works_as_shipped(slurm_cluster, seaweed_bucket, shared_tmp):
    """`sbatch slurm_templates/backup.sbatch LAB.yaml`: the driver plans and submits; the merge verifies."""
    from fs3g_hpc.resources import DataDir, data_file
    from fs3g_hpc.slurm import commands

    bucket = seaweed_bucket  # one endpoint is enough for the cluster path
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 4, 30)
    policy = write_policy(tmp, "driver", root, bucket, max_files=50)
    template = data_file(DataDir.SLURM_TEMPLATES, "backup.sbatch")
    env_bin = str(Path(sys.executable).parent)
    fs3g_wrapper = tmp / "fs3g"
    fs3g_wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m fs3g_hpc \"$@\"\n")
    fs3g_wrapper.chmod(0o700)
    proc = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp}", str(template), str(policy)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FS3G": str(fs3g_wrapper), "PATH": f"{env_bin}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    driver = proc.stdout.strip().split(";")[0]
    records = commands.wait_for_accounting([driver], expected_records=1, timeout_s=300)
    log = (tmp / f"fs3g-backup-driver-{driver}.out").read_text()
    assert records[0].state.value == "COMPLETED", log
    run_dir = Path(log.split("plan: ")[1].split()[0])
    merge = json.loads((run_dir / "jobs" / "submitted.json").read_text())["merge"]
    from fs3g_hpc.slurm.submit import wait_for_job

    assert wait_for_job(merge, timeout_s=300).value == "COMPLETED"
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["verified"]["files"], report["failed"]["files"]) == (files, 0)


def test_status_follows_a_run(bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    make_tree(root, 2, 15)
    lab = f"status{bucket.endpoint_name}"
    policy = write_policy(tmp, lab, root, bucket, max_files=10)
    run_dir = plan_dir(tmp, policy, f"{lab}/st")  # under <run_root>/<lab>, where --config looks
    proc = fs3g("status", str(run_dir))
    assert proc.returncode == 0 and "0/30 files" in proc.stdout and "shards: pending 3" in proc.stdout
    assert fs3g("run-shard", str(run_dir), "--shard", "1").returncode == 0
    proc = fs3g("status", str(run_dir))
    assert "10/30 files" in proc.stdout and "shards: done 1, pending 2" in proc.stdout
    assert "shard 0: pending, 0/10 files" in proc.stdout
    assert fs3g("submit", str(run_dir), "--executor", "local").returncode == 0
    proc = fs3g("status", "--config", str(policy))
    assert "30/30 files" in proc.stdout and "merged: 30 verified, 0 failed" in proc.stdout
    assert fs3g("status").returncode == 2


def test_task_cancelled_mid_run_is_reported_and_completed_by_the_retry(slurm_cluster, seaweed_bucket, shared_tmp):
    """scancel one array task while it uploads: the afterany merge reports its files, submits a retry of exactly
    those with its own merge, and `--wait` follows it to a verified end."""
    from fs3g_hpc.slurm import commands

    bucket = seaweed_bucket  # one endpoint is enough for the cluster path
    tmp = shared_tmp
    root = tmp / "data"
    files = make_tree(root, 3, 20)
    (root / "proj00" / "big.bin").write_bytes(os.urandom(1024 * 1024) * 300)  # keeps shard 0 busy for a while
    policy = write_policy(tmp, "cancel", root, bucket, max_files=25)
    policy.write_text(policy.read_text().replace("array_parallelism: 16", "array_parallelism: 1")
                      + "uploader: {buffer_size_bytes: 5MiB, large_buffers: 2, large_workers: 1}\n")
    run_dir = plan_dir(tmp, policy, "cancel-run")
    submit, array = submit_and_wait_for_multipart(run_dir)
    commands.cancel([f"{array}_0"])
    out, err = submit.communicate(timeout=900)
    assert submit.returncode == 0, out + err
    first = json.loads((run_dir / "report.json").read_text())
    assert first["failed"]["files"] >= 1 and first["retry"]["round"] == 1
    failures = [json.loads(l) for l in (run_dir / "failures.jsonl").read_text().splitlines()]
    # scancel sends SIGTERM: the task saved its state, and the merge names every file it did not finish.
    assert {f["shard"] for f in failures} == {0}
    assert all(f["reason"].startswith(("interrupted", "not backed up: shard 0")) for f in failures), failures
    retry_dir = Path(first["retry"]["run_dir"])
    final = json.loads((retry_dir / "report.json").read_text())
    assert final["failed"]["files"] == 0 and final["verified"]["files"] == first["failed"]["files"]
    assert "following retry 1" in out
    catalog = list(read_records(catalog_path(load_policy(policy, environ={}))))
    assert len(catalog) == files + 1 + 1 + sum(p.is_dir() for p in root.rglob("*"))  # and the directories


def test_pre_timeout_signal_requeues_the_task_which_resumes(slurm_cluster, seaweed_bucket, shared_tmp):
    """USR1 (what --signal=B:USR1@180 sends before the time limit) mid-upload: the task saves its journal and
    requeues itself; its next run resumes the same multipart upload and the merge verifies everything."""
    from fs3g_hpc.slurm import commands

    bucket = seaweed_bucket  # one endpoint is enough for the cluster path
    tmp = shared_tmp
    root = tmp / "data"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(1024 * 1024) * 300)
    (root / "small.txt").write_bytes(b"small")
    policy = write_policy(tmp, "requeue", root, bucket, max_files=25)
    policy.write_text(policy.read_text() + "uploader: {buffer_size_bytes: 5MiB, large_buffers: 2, large_workers: 1}\n")
    run_dir = plan_dir(tmp, policy, "requeue-run")
    submit, array = submit_and_wait_for_multipart(run_dir)
    commands.run(["scancel", "--batch", "--signal=USR1", f"{array}_0"])
    out, err = submit.communicate(timeout=900)
    assert submit.returncode == 0, out + err
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["verified"]["files"], report["failed"]["files"]) == (2, 0) and "retry" not in report
    result = json.loads((run_dir / "results" / "shard-000000.json").read_text())
    assert result["status"] == "done" and result["parts_reused"] >= 1  # the requeued run resumed the upload
    assert "requeued" in (run_dir / "logs" / f"shard-{array}_0.out").read_text()


def assert_pickles_hold_no_secrets(jobs_dir: Path, secrets: list[str]) -> int:
    """Unpickle every *.pkl submitit wrote under `jobs_dir`: each is one fs3g command line, with no AWS_* value, no
    credential string and no environment dict in it. The number of pickles."""
    from submitit.core.utils import DelayedSubmission

    from fs3g_hpc.slurm.engine import Fs3gCommand

    pickles = sorted(jobs_dir.rglob("*.pkl"))
    aws_values = [v for k, v in os.environ.items() if k.startswith("AWS_") and len(v) >= 8]
    for path in pickles:
        raw = path.read_bytes()
        for value in [*secrets, *aws_values]:
            assert value.encode() not in raw, path
        delayed = DelayedSubmission.load(path)
        command = delayed.args[0] if delayed.args else delayed.function
        assert isinstance(command, Fs3gCommand), path
        assert all(isinstance(word, str) for word in command.argv)
        assert delayed.kwargs == {} and not any(isinstance(a, dict) for a in delayed.args)
        assert not any(isinstance(v, dict) and v for v in vars(command).values())
    return len(pickles)


def test_submitit_pickles_and_scripts_hold_no_secrets(tmp_path, monkeypatch):
    """Without a cluster (sbatch faked at the choke point, every other subprocess refused): what a backup, a restore
    poll and a schedule link write."""
    from datetime import datetime
    from types import SimpleNamespace

    from fs3g_hpc.slurm import commands, submit

    secret = "fs3g-pickle-secret-value-123"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fs3g-pickle-key-id-456")
    submitted: list[tuple[str, ...]] = []

    def fake_submit(script, *, options=(), cwd=None):
        submitted.append((str(script), *options))
        return str(1000 + len(submitted))

    monkeypatch.setattr(commands, "submit", fake_submit)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess outside slurm/commands: {args}")

    for name in ("run", "Popen", "check_call", "check_output", "call"):  # submitit's own sbatch, sacct, scancel
        monkeypatch.setattr(subprocess, name, no_subprocess)
    root = tmp_path / "data"
    root.mkdir()
    bucket = SimpleNamespace(name="fs3g-pickles", endpoint_url="http://127.0.0.1:1")
    policy = load_policy(write_policy(tmp_path, "pick", root, bucket, 10), environ={})
    run_dir = tmp_path / "runs" / "pick-1"
    run_dir.mkdir(parents=True)
    fs3g = [sys.executable, "-m", "fs3g_hpc"]
    run = submit.submit_backup(policy, run_dir, 5, fs3g, max_array_size=3)
    assert run.array_ids == ["1001", "1002"] and run.merge_id == "1003"
    assert submit.submit_restore_stage(policy, run_dir, fs3g, begin_in_s=60) == "1004"
    assert submitted[-1][1:] == ("--begin=now+60",)
    state = tmp_path / "state"
    submit.submit_schedule_link(policy, tmp_path / "pick.yaml", state, fs3g, datetime(2030, 1, 2, 3, 4, 5))
    assert submitted[-1][1:] == ("--begin=2030-01-02T03:04:05",)
    jobs = run_dir / "jobs"
    # One pickle per array task (3 + 2), the merge's, the poll's; submitit's script names link to ours.
    assert assert_pickles_hold_no_secrets(jobs, [secret, "fs3g-pickle-key-id-456"]) == 7
    assert assert_pickles_hold_no_secrets(state, [secret]) == 1
    assert (jobs / "1001_submission.sh").resolve() == (jobs / "shards-000000.sbatch").resolve()
    assert "#SBATCH --dependency=afterany:1001:1002" in (jobs / "merge.sbatch").read_text()
    assert oct(jobs.stat().st_mode & 0o777) == "0o700"
    for path in [*jobs.rglob("*"), *state.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
