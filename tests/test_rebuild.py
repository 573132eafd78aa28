"""`fs3g catalog rebuild` as a job array split by key range (issue 16): several shards build the catalog one shard
builds, a merge refuses while a shard is not done, a resumed run keeps the shards already done (no HEAD of their
keys again), and the same run on Slurm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers
from count_hooks import requests
from fs3g_hpc.model.records import read_records
from test_restore import SMALL_SLURM, assert_same_tree, backup, fs3g, make_tree
from test_snapshots_restore import hooked_env


def rebuild_policy(tmp: Path, root: Path, bucket, shard_keys: int, file: str) -> Path:
    return helpers.write_policy(tmp, root, bucket, name="rbk", prefix="labs/rbk", file=file, shards="max_files: 6",
                                uploader="buffer_size_bytes: 5MiB, large_buffers: 4", slurm=SMALL_SLURM,
                                memory_budget_bytes="2GiB", storage="small_files: objects",
                                snapshots=f"rebuild_shard_keys: {shard_keys}")


def forget_catalog(bucket, tmp: Path) -> None:
    """A bucket as fs3g wrote it before snapshots: no snapshot, no run root."""
    client = bucket.client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix="labs/rbk/catalog/"):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=bucket.name, Key=o["Key"])
    shutil.rmtree(tmp / "runs", ignore_errors=True)


def catalog_records(tmp: Path) -> list:
    return list(read_records(tmp / "runs" / "rbk" / "catalog.rec"))


def backed_up_tree(tmp: Path, bucket) -> tuple[Path, Path, Path]:
    root = tmp / "data"
    make_tree(root, newline_names=False)
    one = rebuild_policy(tmp, root, bucket, 100_000, "one.yaml")
    many = rebuild_policy(tmp, root, bucket, 3, "many.yaml")
    backup(one)
    return root, one, many


def test_key_range_shards_build_the_one_shard_catalog_and_a_resume_keeps_done_shards(moto_bucket, tmp_path):
    root, one, many = backed_up_tree(tmp_path, moto_bucket)
    forget_catalog(moto_bucket, tmp_path)
    proc = fs3g("catalog", "rebuild", "--config", str(one))
    assert proc.returncode == 0 and "in 1 shard(s)" in proc.stdout, proc.stdout + proc.stderr
    expected = catalog_records(tmp_path)
    assert len(expected) > 6

    # Several shards (3 keys each), run as local processes: the same catalog, record for record.
    forget_catalog(moto_bucket, tmp_path)
    run = tmp_path / "rb-many"
    proc = fs3g("catalog", "rebuild", "--config", str(many), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = json.loads((run / "rebuild.json").read_text())
    assert header["shard_count"] == -(-header["listed"] // 3) > 2
    assert catalog_records(tmp_path) == expected
    report = json.loads((run / "report.json").read_text())
    assert report["heads"] == header["listed"] and report["entries"] == len(expected) and report["snapshot"]

    # A run stopped after its first shard (the others never ran, or were killed -9 before writing their records):
    # the merge refuses and replaces nothing; the resume HEADs only the keys of the shards not done.
    forget_catalog(moto_bucket, tmp_path)
    from fs3g_hpc.config import load_policy
    from fs3g_hpc.snapshots.rebuild import prepare_rebuild

    run = tmp_path / "rb-stopped"
    layout, header = prepare_rebuild(load_policy(str(many)), run, workers=4)
    proc = fs3g("rebuild-shard", str(run), "--shard", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = layout.shard_records(0).stat()
    proc = fs3g("rebuild-merge", str(run))
    assert proc.returncode == 1 and "not done" in proc.stdout, proc.stdout + proc.stderr
    assert "--resume" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs" / "rbk" / "catalog.rec").exists()
    proc = fs3g("status", str(run), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(proc.stdout)
    assert status["kind"] == "rebuild" and status["phase"] == "heads"
    assert status["shard_states"] == {"done": 1, "pending": header.shard_count - 1}, status

    hooks = tmp_path / "hooks"
    proc = fs3g("catalog", "rebuild", "--config", str(many), "--resume", str(run), env=hooked_env(hooks))
    assert proc.returncode == 0 and "catalog rebuild:" in proc.stdout, proc.stdout + proc.stderr
    after = layout.shard_records(0).stat()
    assert (after.st_ino, after.st_mtime_ns) == (done.st_ino, done.st_mtime_ns)  # shard 0 not redone
    heads = [r for r in requests(hooks) if r["op"] == "HeadObject"]
    assert len(heads) == header.listed - header.shards[0].files
    assert not any(r["op"] in ("ListObjectsV2", "ListObjects") and "/smallfile/" in (r["prefix"] or "")
                   for r in requests(hooks))  # no new listing of the data keys
    assert catalog_records(tmp_path) == expected

    # The rebuilt catalog serves as any: the next backup uploads nothing, the restore is byte-identical.
    proc = fs3g("backup", "--config", str(many), "--executor", "local", "--wait")
    assert proc.returncode == 0 and "planned  0 entries" in proc.stdout, proc.stdout + proc.stderr
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(many), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, dest)


def test_rebuild_as_a_slurm_job_array(slurm_cluster, seaweed_bucket, shared_tmp):
    root, one, many = backed_up_tree(shared_tmp, seaweed_bucket)
    forget_catalog(seaweed_bucket, shared_tmp)
    run = shared_tmp / "runs" / "rbk" / "rb-slurm"
    proc = fs3g("catalog", "rebuild", "--config", str(many), "--executor", "slurm", "--wait", "--run-dir", str(run))
    assert proc.returncode == 0 and "submitted: arrays" in proc.stdout and "catalog rebuild:" in proc.stdout, \
        proc.stdout + proc.stderr
    header = json.loads((run / "rebuild.json").read_text())
    assert header["shard_count"] > 2
    assert all(json.loads((run / "results" / f"shard-{i:06d}.json").read_text())["status"] == "done"
               for i in range(header["shard_count"]))
    assert list((run / "logs").glob("rebuild-*.out"))  # the tasks ran as array jobs
    proc = fs3g("backup", "--config", str(many), "--executor", "local", "--wait")
    assert proc.returncode == 0 and "planned  0 entries" in proc.stdout, proc.stdout + proc.stderr
