"""Restores and compares from the bucket's catalog snapshots: without the run root (the newest snapshot, no HEAD per
object), as of an earlier snapshot (packs; per-object keys with and without bucket versioning), and `fs3g snapshots
verify`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import helpers
from conftest import REPO
from count_hooks import requests
from helpers import SMALL_SLURM, fs3g, read_report
from test_restore import assert_same_tree, backup, make_tree

LAYOUTS = ("objects", "packs")


def lab_policy(tmp: Path, root: Path, bucket, layout: str, name: str = "snr") -> Path:
    return helpers.write_policy(tmp, root, bucket, name=name, prefix=f"labs/{name}", shards="max_files: 6",
                                uploader="buffer_size_bytes: 5MiB, large_buffers: 4", slurm=SMALL_SLURM,
                                memory_budget_bytes="2GiB", storage=f"small_files: {layout}")


def hooked_env(hooks: Path) -> dict[str, str]:
    hooks.mkdir(exist_ok=True)
    return {**os.environ, "FS3G_BOTOCORE_HOOK": "count_hooks:install", "FS3G_TEST_HOOK_DIR": str(hooks),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}


def snapshot_ids(bucket, prefix: str) -> list[str]:
    page = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{prefix}catalog/", Delimiter="/")
    return sorted(p["Prefix"].split("/")[-2] for p in page.get("CommonPrefixes", []))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_restore_without_the_run_root_reads_the_newest_snapshot_and_heads_no_object(bucket, tmp_path, layout):
    root = tmp_path / "data"
    make_tree(root, newline_names=bucket.endpoint_name != "moto")
    policy = lab_policy(tmp_path, root, bucket, layout)
    backup(policy)
    [sid] = snapshot_ids(bucket, "labs/snr/")
    shutil.rmtree(tmp_path / "runs")  # a fresh machine: only the policy

    hooks = tmp_path / "hooks"
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local", env=hooked_env(hooks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"from catalog snapshot {sid}" in proc.stdout, proc.stdout
    count = assert_same_tree(root, dest)
    report = read_report(max((tmp_path / "runs" / "snr").glob("restore-*")))
    assert report["restored"]["files"] == count
    sent = requests(hooks)
    # No HEAD for a per-object small file, a symlink or a packed file (a large file's one HEAD gives its ETag for
    # the ranged parts), and no listing of the data keys: the snapshot says where every file is.
    heads = [r["key"] for r in sent if r["op"] == "HeadObject"]
    assert all("/largefile/" in k for k in heads), heads
    listed = [r["prefix"] for r in sent if r["op"] in ("ListObjectsV2", "ListObjects")]
    # The preflight's probe, catalog/ (the snapshot ids), and the readiness of large files and packs (one listing
    # per directory, per packs/<run_id>/): no listing of small-file or symlink keys, none per file.
    assert all(p.endswith(".fs3g-probe/") or p.endswith("/catalog/") or "/largefile/" in p or
               p.count("/") == 4 and p.startswith("labs/snr/packs/") for p in listed), listed
    assert any(r["op"] == "GetObject" and r["key"].endswith("manifest.json") for r in sent)
    assert not (tmp_path / "runs" / "snr" / "catalog.rec").exists()  # a restore leaves the lab's catalog alone
