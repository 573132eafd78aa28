"""Restores and compares from the bucket's catalog snapshots: without the run root (the newest snapshot, no HEAD per
object), as of an earlier snapshot (packs; per-object keys with and without bucket versioning), and `fs3g snapshots
verify`."""

from __future__ import annotations

import json
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
    # No HEAD at all, large files included: the snapshot's records say where every file is and what it holds (its
    # metadata and tree hash), and the stage's listing of the large files' directories gives their size and the ETag
    # the ranged parts are pinned to.
    assert any(r["op"] == "GetObject" and "/largefile/" in r["key"] for r in sent)  # the tree has large files
    heads = [r["key"] for r in sent if r["op"] == "HeadObject"]
    assert not heads, heads
    listed = [r["prefix"] for r in sent if r["op"] in ("ListObjectsV2", "ListObjects")]
    # The preflight's probe, catalog/ (the snapshot ids), and the readiness of large files and packs (one listing
    # per directory, per packs/<run_id>/): no listing of small-file or symlink keys, none per file.
    assert all(p.endswith(".fs3g-probe/") or p.endswith("/catalog/") or "/largefile/" in p or
               p.count("/") == 4 and p.startswith("labs/snr/packs/") for p in listed), listed
    assert any(r["op"] == "GetObject" and r["key"].endswith("manifest.json") for r in sent)
    assert not (tmp_path / "runs" / "snr" / "catalog.rec").exists()  # a restore leaves the lab's catalog alone


def small_tree(root: Path) -> None:
    (root / "proj").mkdir(parents=True)
    for name in ("deleted.txt", "overwritten.txt", "kept.txt"):
        (root / "proj" / name).write_bytes(f"{name} as of the first snapshot\n".encode())
    os.symlink("kept.txt", root / "proj" / "link")


def change_after_first_snapshot(root: Path) -> None:
    (root / "proj" / "deleted.txt").unlink()
    (root / "proj" / "overwritten.txt").write_bytes(b"a later, longer content written after the first snapshot\n")


def first_then_second_backup(tmp_path: Path, bucket, layout: str) -> tuple[Path, Path, Path, str]:
    root = tmp_path / "data"
    small_tree(root)
    original = tmp_path / "original"
    shutil.copytree(root, original, symlinks=True)
    policy = lab_policy(tmp_path, root, bucket, layout, name="asof")
    backup(policy)
    [first] = snapshot_ids(bucket, "labs/asof/")
    change_after_first_snapshot(root)
    backup(policy)
    assert len(snapshot_ids(bucket, "labs/asof/")) == 2
    return root, original, policy, first


def restore_as_of(policy: Path, dest: Path, as_of: str, env: dict | None = None):
    return fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local", "--as-of", as_of,
                env=env)


def test_as_of_with_packs_brings_back_a_deleted_and_an_overwritten_file_and_compares_with_that_time(bucket, tmp_path):
    root, original, policy, first = first_then_second_backup(tmp_path, bucket, "packs")
    # compare --as-of: the tree now differs from the first snapshot (one file gone, one changed) ...
    proc = fs3g("compare", "--config", str(policy), "--as-of", first, "--scan-workers", "0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "deleted.txt" in proc.stdout and "overwritten.txt" in proc.stdout and "kept.txt" not in proc.stdout
    assert f"snapshot {first}" in proc.stdout, proc.stdout
    # ... and not from the newest catalog.
    proc = fs3g("compare", "--config", str(policy), "--scan-workers", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    shutil.rmtree(tmp_path / "runs")
    dest = tmp_path / "restored"
    proc = restore_as_of(policy, dest, first)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"from catalog snapshot {first}" in proc.stdout
    assert_same_tree(original, dest)  # the deleted file and the overwritten one's first content, byte-identical

    # A time before any snapshot is bad input, said in one line.
    proc = restore_as_of(policy, tmp_path / "never", "2001-01-01")
    assert proc.returncode == 2 and "no snapshot" in proc.stderr and "\n" not in proc.stderr.strip(), proc.stderr


@pytest.fixture
def versioned_bucket(moto_bucket):
    """A moto bucket with versioning on; its versions are removed afterwards, so the fixture can drop the bucket."""
    client = moto_bucket.client
    client.put_bucket_versioning(Bucket=moto_bucket.name, VersioningConfiguration={"Status": "Enabled"})
    yield moto_bucket
    for page in client.get_paginator("list_object_versions").paginate(Bucket=moto_bucket.name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=moto_bucket.name, Key=item["Key"], VersionId=item["VersionId"])


def test_as_of_per_object_with_versioning_reads_the_recorded_versions(versioned_bucket, tmp_path):
    moto_bucket = versioned_bucket
    root, original, policy, first = first_then_second_backup(tmp_path, moto_bucket, "objects")
    hooks = tmp_path / "hooks"
    dest = tmp_path / "restored"
    proc = restore_as_of(policy, dest, first, env=hooked_env(hooks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(original, dest)
    by_version = {r["key"].rsplit("/", 1)[-1] for r in requests(hooks) if r["op"] == "GetObject" and r["version"]}
    assert by_version == {"overwritten.txt"}, by_version  # only the overwritten file needed an older version


def test_as_of_per_object_without_versioning_names_what_it_cannot_restore(seaweed_bucket, tmp_path):
    root, original, policy, first = first_then_second_backup(tmp_path, seaweed_bucket, "objects")
    dest = tmp_path / "restored"
    proc = restore_as_of(policy, dest, first)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "overwritten.txt" in proc.stdout and "versioning is off" in proc.stdout, proc.stdout
    # The rest is restored: the file deleted from the disk still has its object (nothing is deleted from a bucket).
    assert not (dest / "proj" / "overwritten.txt").exists()
    for name in ("deleted.txt", "kept.txt"):
        assert (dest / "proj" / name).read_bytes() == (original / "proj" / name).read_bytes()
    assert os.readlink(dest / "proj" / "link") == "kept.txt"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_snapshots_verify_names_a_missing_object_or_pack_and_refuses_a_corrupt_chunk(bucket, tmp_path, layout):
    root = tmp_path / "data"
    small_tree(root)
    policy = lab_policy(tmp_path, root, bucket, layout, name="ver")
    backup(policy)
    [sid] = snapshot_ids(bucket, "labs/ver/")
    hooks = tmp_path / "hooks"
    proc = fs3g("snapshots", "verify", "--config", str(policy), env=hooked_env(hooks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"snapshot {sid}" in proc.stdout and "all present" in proc.stdout, proc.stdout
    assert not [r for r in requests(hooks) if r["op"] == "HeadObject"]

    # One object gone (a lifecycle rule, a hand): named, exit 1; the others still checked.
    client, name = bucket.client, bucket.name
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="labs/ver/")["Contents"]]
    victim = next(k for k in keys if (k.endswith("kept.txt") if layout == "objects" else k.endswith(".tar")))
    client.delete_object(Bucket=name, Key=victim)
    proc = fs3g("snapshots", "verify", "--config", str(policy), sid)
    assert proc.returncode == 1 and f"missing: s3://{name}/{victim}" in proc.stdout, proc.stdout + proc.stderr

    key = f"labs/ver/catalog/{sid}/chunk-000000.rec.gz"
    body = client.get_object(Bucket=name, Key=key)["Body"].read()
    client.put_object(Bucket=name, Key=key, Body=body[:-7])
    proc = fs3g("snapshots", "verify", "--config", str(policy))
    assert proc.returncode == 2 and key in proc.stderr, proc.stdout + proc.stderr


def test_snapshots_verify_names_a_missing_or_cut_pack_index(bucket, tmp_path):
    root = tmp_path / "data"
    small_tree(root)
    policy = lab_policy(tmp_path, root, bucket, "packs", name="veri")
    backup(policy)
    client, name = bucket.client, bucket.name
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="labs/veri/packs/")["Contents"]]
    [index] = [k for k in keys if k.endswith(".tar.idx")]
    hooks = tmp_path / "hooks"
    proc = fs3g("snapshots", "verify", "--config", str(policy), env=hooked_env(hooks))
    assert proc.returncode == 0 and "1 pack indexes checked" in proc.stdout, proc.stdout + proc.stderr

    # An index cut to a few bytes (no gzip stream is that short): named with its size; the pack itself is fine.
    body = client.get_object(Bucket=name, Key=index)["Body"].read()
    client.put_object(Bucket=name, Key=index, Body=body[:5])
    proc = fs3g("snapshots", "verify", "--config", str(policy))
    assert proc.returncode == 1 and f"size differs: s3://{name}/{index} (a pack's index of 5 bytes" in proc.stdout, \
        proc.stdout + proc.stderr
    assert proc.stdout.count("s3://") == 1, proc.stdout

    # The index deleted (plain boto3, as a hand or a lifecycle rule would): named as missing, by listing, no HEAD.
    client.delete_object(Bucket=name, Key=index)
    hooks = tmp_path / "hooks2"
    proc = fs3g("snapshots", "verify", "--config", str(policy), env=hooked_env(hooks))
    assert proc.returncode == 1 and f"missing: s3://{name}/{index} (a pack's index)" in proc.stdout, \
        proc.stdout + proc.stderr
    assert not [r for r in requests(hooks) if r["op"] == "HeadObject"]
    proc = fs3g("snapshots", "verify", "--config", str(policy), "--json")
    assert proc.returncode == 1 and '"indexes": 1' in proc.stdout, proc.stdout + proc.stderr


def discrepancy_lines(text: str) -> set[tuple[str, str]]:
    return {(line.split(" ", 1)[0], line.split("\t", 1)[0].rsplit("/", 1)[-1]) for line in text.splitlines()
            if line.startswith(("missing-in-s3 ", "changed ", "only-in-s3 ", "cannot-check "))}


def test_compare_as_of_runs_its_hash_checks_as_jobs_like_a_plain_compare(seaweed_bucket, tmp_path):
    root, original, policy, first = first_then_second_backup(tmp_path, seaweed_bucket, "packs")
    kept = root / "proj" / "kept.txt"  # same size and mtime, other bytes: only a hash check sees it
    st = kept.stat()
    kept.write_bytes(kept.read_bytes().upper())
    os.utime(kept, ns=(st.st_atime_ns, st.st_mtime_ns))
    here = fs3g("compare", "--config", str(policy), "--as-of", first, "--check-sha256", "--scan-workers", "0")
    assert here.returncode == 1, here.stdout + here.stderr
    expected = discrepancy_lines(here.stdout)
    assert {name for _, name in expected} == {"deleted.txt", "overwritten.txt", "kept.txt"}, here.stdout

    run = tmp_path / "cmp-asof"
    proc = fs3g("compare", "--config", str(policy), "--as-of", first, "--check-sha256", "--scan-workers", "0",
                "--executor", "local", "--run-dir", str(run))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert discrepancy_lines(proc.stdout) == expected
    assert f"snapshot {first}" in proc.stdout, proc.stdout
    header = json.loads((run / "compare.json").read_text())
    assert header["as_of"] == first and header["summary"]["source"].startswith(f"snapshot {first}")
    assert header["to_hash"]["files"] >= 1 and (run / "results" / "shard-000000.json").is_file()
    # The newest snapshot knows the deletion and the overwrite: only the content-only change is left.
    proc = fs3g("compare", "--config", str(policy), "--check-sha256", "--scan-workers", "0", "--executor", "local",
                "--run-dir", str(tmp_path / "cmp-newest"))
    assert proc.returncode == 1 and {n for _, n in discrepancy_lines(proc.stdout)} == {"kept.txt"}, proc.stdout


MIB = 1024 * 1024


def large_tree_overwritten_after_first_snapshot(tmp_path: Path, bucket) -> tuple[Path, Path, str]:
    """A per-object lab with a multipart large file (three 5 MiB parts) and a single-PUT one, both overwritten (other
    bytes, another size) after the first snapshot; returns (policy, the tree as of that snapshot, its id)."""
    root = tmp_path / "data"
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "multi.bin").write_bytes(os.urandom(11 * MIB + 4321))
    (root / "proj" / "single.bin").write_bytes(os.urandom(300 * 1024))
    (root / "proj" / "kept.txt").write_bytes(b"unchanged\n")
    original = tmp_path / "original"
    shutil.copytree(root, original)
    policy = lab_policy(tmp_path, root, bucket, "objects", name="big")
    backup(policy)
    [first] = snapshot_ids(bucket, "labs/big/")
    (root / "proj" / "multi.bin").write_bytes(os.urandom(12 * MIB))
    (root / "proj" / "single.bin").write_bytes(os.urandom(200 * 1024))
    backup(policy)
    return policy, original, first


def test_as_of_reads_an_overwritten_large_file_at_its_version_with_ranged_gets(versioned_bucket, tmp_path):
    policy, original, first = large_tree_overwritten_after_first_snapshot(tmp_path, versioned_bucket)
    shutil.rmtree(tmp_path / "runs")  # from the bucket alone
    hooks = tmp_path / "hooks"
    dest = tmp_path / "restored"
    proc = restore_as_of(policy, dest, first, env=hooked_env(hooks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(original, dest)  # both large files byte-identical to the first snapshot's
    sent = requests(hooks)
    by_version = [r["key"].rsplit("/", 1)[-1] for r in sent if r["op"] == "GetObject" and r["version"]]
    assert sorted(set(by_version)) == ["multi.bin", "single.bin"], by_version
    assert by_version.count("multi.bin") == 3  # its three parts, each a ranged GET of that version
    looked_up = sorted(r["prefix"].rsplit("/", 1)[-1] for r in sent if r["op"] == "ListObjectVersions")
    assert looked_up == ["multi.bin", "single.bin"], looked_up  # one key's versions each, only the changed files
    assert not [r for r in sent if r["op"] == "HeadObject"]


def test_as_of_without_versioning_names_an_overwritten_large_file_as_lost(seaweed_bucket, tmp_path):
    policy, original, first = large_tree_overwritten_after_first_snapshot(tmp_path, seaweed_bucket)
    dest = tmp_path / "restored"
    proc = restore_as_of(policy, dest, first)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for name in ("multi.bin", "single.bin"):
        assert f"largefile{tmp_path}/data/proj/{name}: overwritten after it; bucket versioning is off" in \
            proc.stdout, proc.stdout
        assert not (dest / "proj" / name).exists()
    assert (dest / "proj" / "kept.txt").read_bytes() == b"unchanged\n"
