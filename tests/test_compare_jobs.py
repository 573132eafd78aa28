"""`fs3g compare --check-sha256 --executor slurm|local`: the same verdict as the in-process compare, with the files
read by an array (several shards), on the real cluster."""

from __future__ import annotations

import json

import pytest

from helpers import read_report
from test_compare import compare, fs3g, make_tree, modify, write_policy


def lines_of(text: bytes) -> set[tuple[str, str, str]]:
    found = set()
    for line in text.decode().splitlines():
        if line.startswith(("missing-in-s3 ", "changed ", "only-in-s3 ", "cannot-check ")):
            category, klass, rest = line.split(" ", 2)
            found.add((category, klass, rest.split("\t", 1)[0]))
    return found


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_hash_checks_as_a_job_array_find_what_the_in_process_compare_finds(executor, slurm_cluster, seaweed_bucket,
                                                                          shared_tmp):
    root = shared_tmp / "data"
    make_tree(root, newline=True)
    policy = write_policy(shared_tmp, root, bucket_name=seaweed_bucket.name, endpoint=seaweed_bucket.endpoint_url)
    with open(policy, "a") as f:  # small shards, so the array has several tasks
        f.write('shards: {max_files: 3}\nslurm: {time_limit: "10", cpus_per_task: 1, mem_bytes: 1GiB}\n'
                'memory_budget_bytes: 1GiB\n')
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()

    clean = fs3g("compare", "--config", str(policy), "--check-sha256", "--executor", executor, "--wait")
    assert clean.returncode == 0, clean.stdout.decode() + clean.stderr.decode()
    assert b"result: no discrepancy" in clean.stdout

    expected = modify(root)
    code, in_process, _ = compare(policy, "--check-sha256")
    assert code == 1 and in_process > expected  # the content-only change too
    proc = fs3g("compare", "--config", str(policy), "--check-sha256", "--executor", executor, "--wait",
                "--run-dir", str(shared_tmp / "runs" / "cmp-jobs"))
    assert proc.returncode == 1, proc.stdout.decode() + proc.stderr.decode()
    assert lines_of(proc.stdout) == in_process
    run = shared_tmp / "runs" / "cmp-jobs"
    header = json.loads((run / "compare.json").read_text())
    assert header["shard_count"] >= 3
    report = read_report(run)
    assert report["discrepancies"] == len(in_process) and not report["ok"]
    assert report["hashed_files"] == header["to_hash"]["files"] > 5
    # Elapsed from the coordinator's join to the merge, and the reading's throughput over it.
    assert report["elapsed_s"] >= report["shard_phase_s"] > 0
    assert report["throughput"]["bytes_per_s"] == pytest.approx(report["hashed_bytes"] / report["elapsed_s"],
                                                                rel=1e-3)
    assert b"  elapsed   " in proc.stdout


def test_executor_without_check_sha256_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    policy = write_policy(tmp_path, root)
    proc = fs3g("compare", "--config", str(policy), "--executor", "local")
    assert proc.returncode == 2 and b"--check-sha256" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_an_interrupted_hash_check_leaves_the_files_it_did_not_reach_cannot_check(seaweed_bucket, tmp_path):
    from fs3g_hpc.compare.report import merge_compare
    from fs3g_hpc.model.records import read_records

    root = tmp_path / "data"
    make_tree(root, newline=True)
    policy = write_policy(tmp_path, root, bucket_name=seaweed_bucket.name, endpoint=seaweed_bucket.endpoint_url)
    with open(policy, "a") as f:
        f.write("shards: {max_files: 3}\n")
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    run = tmp_path / "cmp"
    proc = fs3g("compare", "--config", str(policy), "--check-sha256", "--executor", "local", "--wait",
                "--run-dir", str(run))
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    result_file = run / "results" / "shard-000000.json"
    result = json.loads(result_file.read_text())
    assert result["status"] == "done" and result["hashed"] == result["files"]
    # As a task stopped by a signal after its first file leaves it:
    result.update(status="interrupted", signal="SIGUSR1", hashed=1)
    result_file.write_text(json.dumps(result))
    found = []
    summary = merge_compare(run, found.append)
    unreached = [e.path for e in read_records(run / "shards" / "shard-000000.rec")][1:]
    assert unreached and sorted(d.path for d in found if "was interrupted" in d.detail) == sorted(unreached)
    assert all(d.category.value == "cannot-check" for d in found if "was interrupted" in d.detail)
    assert summary.hashed_files == json.loads((run / "compare.json").read_text())["to_hash"]["files"] - len(unreached)
