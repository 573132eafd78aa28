"""`backup --dry-run` and `restore --dry-run`: what would move and what it costs, with no write to the bucket, no job
submitted, no restore requested and nothing under the destination; against SeaweedFS, moto (Glacier) and Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from helpers import fs3g, read_report
from test_restore import backup, make_tree, write_policy


def listing(b) -> dict[str, tuple[str, object]]:
    """Every object of the test bucket: key -> (ETag, LastModified)."""
    out = {}
    for page in b.client.get_paginator("list_objects_v2").paginate(Bucket=b.name):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["LastModified"])
    return out


def jobs_named(prefix: str) -> list[str]:
    """Jobs of the last hour whose name starts with `prefix`, queued or finished."""
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1hours", "--format=JobName"], capture_output=True,
                          text=True, check=True).stdout
    return [n for n in (queued + done).split() if n.startswith(prefix)]


def test_backup_dry_run_uploads_nothing_submits_nothing_and_keeps_a_plan_submit_runs(slurm_cluster, seaweed_bucket,
                                                                                     shared_tmp):
    root = shared_tmp / "data"
    make_tree(root, newline_names=True)
    lab = f"dry{uuid.uuid4().hex[:8]}"
    policy = write_policy(shared_tmp, lab, root, seaweed_bucket)
    assert listing(seaweed_bucket) == {}

    proc = fs3g("backup", "--config", str(policy), "--executor", "slurm", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # 9 small files (the 70,000-byte one too), 2 large (one single PUT, one multipart of 3 parts), 3 symlinks.
    assert "would upload: 9 small files" in out and "2 large" in out, out
    assert "1 single PUT, 1 multipart in 3 parts" in out and "3 symlinks" in out, out
    # PUTs: 9 small + 3 symlinks + 1 single + 3 parts + create/complete + the tree-hash tag = 19.
    assert "19 PUT" in out and "USD" in out, out
    assert "dry run: nothing uploaded, no job submitted" in out
    run = Path(out.split("fs3g submit ", 1)[1].split("`", 1)[0])
    assert (run / "plan.json").is_file() and not (run / "jobs").exists()
    assert oct(run.stat().st_mode & 0o777) == "0o700"
    assert listing(seaweed_bucket) == {}  # not one object written
    assert jobs_named(f"fs3g-{lab}-") == []  # and not one job submitted

    # What was shown is what `fs3g submit` runs.
    planned = json.loads((run / "plan.json").read_text())["planned"]["files"]
    proc = fs3g("submit", str(run), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = read_report(run)
    assert report["verified"]["files"] == planned == 14
    before = listing(seaweed_bucket)
    # One object per entry, and the merge's catalog snapshot (one chunk, then its manifest).
    assert len([k for k in before if "/catalog/" not in k]) == 14
    assert sorted(k.rsplit("/", 1)[1] for k in before if "/catalog/" in k) == ["chunk-000000.rec.gz", "manifest.json"]

    # Incremental after it: a dry run as JSON finds nothing to send, and still writes nothing.
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["dry_run"] is True and data["command"] == "backup"
    assert data["plan"]["planned"]["files"] == 0 and data["requests"]["PUT"] == 0
    assert data["stored"]["small_files"] == 9 and data["estimate"]["currency"] == "USD"
    assert Path(data["run_dir"]).is_dir() and data["submit"] == f"fs3g submit {data['run_dir']}"
    assert "plan:" in proc.stderr  # the human lines went to stderr
    assert listing(seaweed_bucket) == before  # same keys, ETags and LastModified


def test_backup_dry_run_json_counts_and_a_region_without_prices(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "nopr", root, seaweed_bucket)
    policy.write_text(policy.read_text().replace("prefix: labs/nopr,", "prefix: labs/nopr, region: sa-east-1,"))
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    up = data["upload"]
    assert (up["small_files"], up["large_files"], up["symlinks"], up["multipart_uploads"], up["parts"]) == (9, 2, 3, 1, 3)
    assert data["requests"]["PUT"] == 19 and data["estimate"] is None
    assert "sa-east-1" in data["prices_note"]
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "no prices for region 'sa-east-1'" in line]
    assert len(notes) == 1 and "19 PUT" in proc.stdout
    assert listing(seaweed_bucket) == {}
    proc = fs3g("backup", "--config", str(policy), "--dry-run", "--wait")
    assert proc.returncode == 2 and "--wait" in proc.stderr and "\n" not in proc.stderr.strip()


def test_restore_dry_run_counts_archived_objects_and_requests_nothing(moto_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    policy = write_policy(tmp_path, "drr", root, moto_bucket, """\
        storage: {archive_storage_class: GLACIER, upload_large_to_archive: true}
        restore: {tier: Bulk, days: 3}
        """)
    backup(policy)
    large = sorted(o["Key"] for o in moto_bucket.client.list_objects_v2(
        Bucket=moto_bucket.name, Prefix="labs/drr/largefile/")["Contents"])
    assert len(large) == 2
    runs = tmp_path / "runs" / "drr"
    before = sorted(p.name for p in runs.iterdir())
    dest = tmp_path / "restored"

    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    stage = data["stage"]
    assert data["planned"]["files"] == 13 and stage["tier"] == "Bulk" and stage["days"] == 3
    assert stage["restore_requests"]["files"] == 2 and stage["archived_by_class"]["GLACIER"]["files"] == 2
    assert stage["ready"]["files"] == 11 and stage["restored"]["files"] == 0 and stage["missing"]["files"] == 0
    assert data["requests"]["RestoreObject"] == 2 and data["requests"]["GET"] == 8 + 3 + 1 + 3
    assert data["cost"]["tier"] == "Bulk" and data["cost"]["total"] > 0 and data["currency"] == "USD"
    # Nothing requested (moto would show a Restore header at once), nothing written, no run kept.
    for key in large:
        assert "Restore" not in moto_bucket.client.head_object(Bucket=moto_bucket.name, Key=key)
    assert not dest.exists()
    assert sorted(p.name for p in runs.iterdir()) == before

    # One object restored by hand: the dry run sees it ready and would request only the other.
    moto_bucket.client.restore_object(Bucket=moto_bucket.name, Key=large[0],
                                      RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Bulk"}})
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "archived: GLACIER 2; 1 (" in proc.stdout and "need a restore request (tier Bulk, 3 days)" in proc.stdout
    assert "1 RestoreObject, 15 GET" in proc.stdout and "  ready     12 (" in proc.stdout, proc.stdout
    assert "Restore" not in moto_bucket.client.head_object(Bucket=moto_bucket.name, Key=large[1])
    assert not dest.exists()
    proc = fs3g("restore", "--config", str(policy), "--dry-run", "--run-dir", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--run-dir" in proc.stderr and not (tmp_path / "x").exists()


def test_restore_dry_run_of_a_standard_only_backup_on_seaweedfs(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "drs", root, seaweed_bucket)
    backup(policy)
    before = listing(seaweed_bucket)
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), str(root / "proj"), "--dest", str(dest), "--dry-run", "--json",
                "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["planned"]["files"] == 6 and data["stage"]["ready"]["files"] == 6
    assert data["stage"]["restore_requests"]["files"] == 0 and data["requests"]["RestoreObject"] == 0
    assert not dest.exists() and listing(seaweed_bucket) == before
    proc = fs3g("restore", "--config", str(policy), str(root / "nothing-here"), "--dry-run")
    assert proc.returncode == 2 and "nothing is backed up" in proc.stderr
    assert not any(p.name.startswith(".restore-dry-run-") for p in (tmp_path / "runs" / "drs").iterdir())
    assert os.listdir(tmp_path / "runs" / "drs")


def test_fasts3plusglacier_dry_run_backup_and_restore_write_nothing(moto_bucket, tmp_path):
    from test_compat import compat, compat_env

    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    env = compat_env(moto_bucket, tmp_path)
    proc = compat("--backup", "--dry-run", "--bucketname", moto_bucket.name, str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would upload: 8 small files" in proc.stdout and "dry run: nothing uploaded" in proc.stdout
    assert listing(moto_bucket) == {}
    proc = compat("--backup", "--bucketname", moto_bucket.name, str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = listing(moto_bucket)
    assert len([k for k in before if not k.startswith("catalog/")]) == 13  # beside the catalog snapshot
    proc = compat("--restore", "--dry-run", "--bucketname", moto_bucket.name, str(root / "proj"), cwd=tmp_path,
                  env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restore dry run: 6 files" in proc.stdout and "0 RestoreObject" in proc.stdout, proc.stdout
    assert not (tmp_path / "glacierrestore").exists() and listing(moto_bucket) == before
    proc = compat("--dry-run", "--bucketname", moto_bucket.name, str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "--backup or --restore" in proc.stderr
