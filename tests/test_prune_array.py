"""`fs3g prune` as a job array of key ranges (issue 17): several shards delete exactly the unreferenced keys, each
within its range; an array task killed -9 mid-delete leaves the run incomplete (lock kept, no snapshot deleted,
backups refused) and `--apply` again resumes it to the same end; a Slurm run of `prune --apply --executor slurm`;
backups (fs3g and fasts3plusglacier) refused while the prune lock is held. Against SeaweedFS and the test cluster."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from helpers import SMALL_SLURM, fs3g, write_policy
from test_prune import PREFIX, _backup, _expected_deletions, _journal_lines, _killing, _listing, _three_backups
from test_restore import assert_same_tree

ORPHANS = [f"{PREFIX}/largefile/aaa/orphan", f"{PREFIX}/largefile/zzz/orphan", f"{PREFIX}/packs/zz-orphan.tar",
           f"{PREFIX}/pathmap/orphan", f"{PREFIX}/smallfile/mid/orphan", f"{PREFIX}/symlinks/x/orphan"]


def _lab(tmp_path, bucket, *, slurm: bool = False):
    """Three backups (test_prune's), unreferenced orphans put before the last one (so older than the newest
    snapshot), and a policy for the same lab cutting prune shards at every referenced key (shards.max_files 1)."""
    root, policy = _three_backups(tmp_path, bucket)
    for key in ORPHANS:
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"orphan")
    (root / "p" / "big3").write_bytes(os.urandom(300 * 1024))  # a second large file: largefile/ gets two shards
    _backup(policy)
    extra = f"slurm: {{{SMALL_SLURM}}}\n" if slurm else ""
    fine = write_policy(tmp_path, root, bucket, name="pr", prefix=PREFIX, file="pr-fine.yaml", shards="max_files: 1",
                        uploader="buffer_size_bytes: 5MiB, large_buffers: 4", memory_budget_bytes="2GiB",
                        retention="keep_last: 1", extra=extra)
    return root, fine


def _expected(before: dict) -> set[str]:
    """test_prune's expectation for the first three backups, now that a fourth snapshot is the newest: the third
    snapshot is forgotten too (its pack P3 still referenced by the fourth), and the orphans."""
    snaps = sorted({k.split("/")[3] for k in before if k.startswith(PREFIX + "/catalog/")})
    assert len(snaps) == 4
    three = {k: v for k, v in before.items() if not k.startswith(f"{PREFIX}/catalog/{snaps[3]}/") and k not in ORPHANS}
    expected = _expected_deletions(three) | {k for k in before if k.startswith(f"{PREFIX}/catalog/{snaps[2]}/")}
    return expected | set(ORPHANS)


def _within_ranges(run_dir: Path) -> tuple[int, set[str]]:
    """(shards, the union of their delete lists), every listed key checked to lie in its shard's range."""
    header = json.loads((run_dir / "prune.json").read_text())
    listed: set[str] = set()
    for shard in header["shards"]:
        keys = (run_dir / "results" / f"shard-{shard['index']:06d}.delete").read_text().split()
        for key in keys:
            assert key.startswith(shard["list_prefix"]) and key > shard["after"], (key, shard)
            assert not shard["until"] or key <= shard["until"], (key, shard)
        listed |= set(keys)
    return header["shard_count"], listed


def test_several_shards_delete_exactly_the_unreferenced_keys(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy = _lab(tmp_path, bucket)
    before = _listing(bucket)
    expected = _expected(before)
    dry = fs3g("prune", "--config", str(policy), "--json", "--executor", "local")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    report = json.loads(dry.stdout)
    assert report["shards"] >= 9 and report["unreferenced"]["objects"] == len(
        [k for k in expected if "/catalog/" not in k])
    assert _listing(bucket) == before and not list((tmp_path / "runs" / "pr").glob(".prune-dry-*"))

    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _listing(bucket)
    assert set(before) - set(after) == expected and set(after) <= set(before)
    [run_dir] = (tmp_path / "runs" / "pr").glob("prune-*")
    shards, listed = _within_ranges(run_dir)
    header = json.loads((run_dir / "prune.json").read_text())
    per_dir = {d: sum(1 for s in header["shards"] if s["dir"] == d) for d in ("largefile", "packs")}
    assert shards >= 9 and per_dir["largefile"] >= 2 and per_dir["packs"] >= 3, per_dir
    assert listed == {k for k in expected if "/catalog/" not in k}
    assert (run_dir / "delete.txt").read_text().split()[-3:] == sorted(
        k for k in expected if k.endswith("/manifest.json"))
    assert f"{PREFIX}/locks/prune.json" not in after
    assert fs3g("snapshots", "verify", "--config", str(policy)).returncode == 0
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert assert_same_tree(root, dest) == 5  # a, e, d, big1, big3


def test_an_array_task_killed_mid_delete_leaves_the_lock_and_a_rerun_resumes(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy = _lab(tmp_path, bucket)
    before = _listing(bucket)
    expected = _expected(before)
    # One key per batch; the task sending the run's second DeleteObjects is killed (-9) just before it: the others
    # and the merge go on, the merge finds that shard never reported.
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local", "--batch-keys", "1",
                env=_killing(tmp_path, 2, parent=False))
    assert proc.returncode == 1 and "incomplete: shards" in proc.stdout, proc.stdout + proc.stderr
    middle = _listing(bucket)
    gone = set(before) - set(middle)
    assert gone and gone <= expected and not any("/catalog/" in k for k in gone)  # no snapshot touched yet
    assert f"{PREFIX}/locks/prune.json" in middle
    [run_dir] = (tmp_path / "runs" / "pr").glob("prune-*")
    report = json.loads((run_dir / "report.json").read_text())
    assert not report["complete"] and len(report["unfinished_shards"]) == 1
    assert report["shard_states"]["never reported"] == 1
    status = fs3g("status", str(run_dir), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["phase"] == "incomplete", status.stdout + status.stderr

    # While the prune is unfinished its lock stands: a backup refuses, naming it and how to go on.
    backup = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert backup.returncode == 2, backup.stdout + backup.stderr
    assert f"{PREFIX}/locks/prune.json" in backup.stderr and socket.gethostname() in backup.stderr
    assert "--break-lock" in backup.stderr and "--apply" in backup.stderr

    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local", "--batch-keys", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resuming {run_dir}" in proc.stdout
    after = _listing(bucket)
    assert set(before) - set(after) == expected  # all unreferenced gone, nothing referenced lost
    assert list((tmp_path / "runs" / "pr").glob("prune-*")) == [run_dir]  # the same run, resumed
    [killed] = report["unfinished_shards"]
    batches = [json.loads(line)["batch"] for line in
               (run_dir / "results" / f"shard-{killed:06d}.journal").read_text().splitlines()]
    assert batches == sorted(set(batches)) and _journal_lines(run_dir) == len(
        [k for k in expected if "/catalog/" not in k])  # each batch done once
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, dest)


def test_prune_apply_as_a_slurm_job_array(slurm_cluster, seaweed_bucket, shared_tmp):
    bucket = seaweed_bucket
    root, policy = _lab(shared_tmp, bucket, slurm=True)
    before = _listing(bucket)
    expected = _expected(before)
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "slurm", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted: arrays " in proc.stdout
    assert set(before) - set(_listing(bucket)) == expected
    [run_dir] = (shared_tmp / "runs" / "pr").glob("prune-*")
    submitted = json.loads((run_dir / "jobs" / "submitted.json").read_text())
    assert submitted["arrays"] and submitted["merge"]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["complete"] and report["shard_states"] == {"done": report["shards"]} and report["shards"] >= 9
    assert list((run_dir / "logs").glob("prune-*.out"))  # the array tasks' logs
    assert f"{PREFIX}/locks/prune.json" not in _listing(bucket)  # the merge job released it


def test_backups_refuse_while_a_prune_holds_its_lock(seaweed_bucket, tmp_path):
    from fs3g_hpc.config import load_policy
    from fs3g_hpc.model.locks import LockKind, LockRecord
    from fs3g_hpc.prune.locks import take_lock

    from test_compat import compat, compat_env

    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    (root / "x").write_bytes(b"x")
    path = write_policy(tmp_path, root, bucket, name="pr", prefix=PREFIX)
    take_lock(load_policy(path), bucket.client, LockKind.PRUNE, "/runs/pr/prune-x")
    proc = fs3g("backup", "--config", str(path), "--executor", "local", "--wait")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"s3://{bucket.name}/{PREFIX}/locks/prune.json" in line and "prune lock held by" in line
    assert "--break-lock" in line
    assert f"{PREFIX}/locks/backup.json" not in _listing(bucket)  # refused before taking its own
    assert not any(k.startswith(f"{PREFIX}/packs/") for k in _listing(bucket))  # nothing uploaded

    # The original command too (its layout has no prefix: the lock at the bucket's root).
    record = LockRecord(LockKind.PRUNE, "login1", 4242, "777", "/runs/x/prune-y",
                        datetime.now(timezone.utc).isoformat(timespec="seconds"))
    bucket.client.put_object(Bucket=bucket.name, Key="locks/prune.json", Body=record.encode())
    proc = compat("--bucketname", bucket.name, "--backup", str(root), cwd=tmp_path, env=compat_env(bucket, tmp_path))
    assert proc.returncode == 2 and "login1 pid 4242, Slurm job 777" in proc.stderr, proc.stdout + proc.stderr
    assert not any(k.startswith("smallfile/") for k in _listing(bucket, ""))

    # Broken, the backup runs (and removes its own lock at its merge).
    assert "removed: prune lock" in fs3g("prune", "--config", str(path), "--break-lock").stdout
    proc = fs3g("backup", "--config", str(path), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{PREFIX}/locks/backup.json" not in _listing(bucket)


def test_a_backup_lock_taken_meanwhile_makes_prune_let_go_of_its_own(seaweed_bucket, tmp_path):
    """The two-flag protocol of prune/locks.take_exclusive: after writing its lock, prune reads the backup's again;
    found, it removes its own and refuses."""
    import pytest

    from fs3g_hpc.config import load_policy
    from fs3g_hpc.model.locks import LockError, LockKind
    from fs3g_hpc.prune import locks

    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    policy = load_policy(write_policy(tmp_path, root, bucket, name="pr", prefix=PREFIX))
    real_take = locks.take_lock

    class Racing:  # a client whose first lock PUT is followed by a backup writing its lock
        def __init__(self, client):
            self.client, self.raced = client, False

        def __getattr__(self, name):
            return getattr(self.client, name)

        def put_object(self, **kw):
            out = self.client.put_object(**kw)
            if not self.raced:
                self.raced = True
                real_take(policy, self.client, LockKind.BACKUP, "/runs/pr/pr-x")
            return out

    with pytest.raises(LockError, match="a backup is running"):
        locks.take_exclusive(policy, Racing(bucket.client), LockKind.PRUNE, "/runs/pr/prune-x")
    assert set(_listing(bucket)) == {f"{PREFIX}/locks/backup.json"}


def test_a_key_s3_refuses_is_reported_by_name_and_the_rest_deleted(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy = _three_backups(tmp_path, bucket)
    before = _listing(bucket)
    expected = _expected_deletions(before)
    [refused] = [k for k in expected if k.endswith("/p/big2")]
    env = {**_killing(tmp_path, 10 ** 6, parent=False), "FS3G_BOTOCORE_HOOK": "prune_hooks:refuse_key",
           "FS3G_TEST_REFUSE_DELETE": "/p/big2"}
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local", "--batch-keys", "1", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"not deleted: {refused}: DeleteObjects refused it: AccessDenied" in proc.stdout
    assert set(before) - set(_listing(bucket)) == expected - {refused}  # the rest of its shard and run went on
    [run_dir] = (tmp_path / "runs" / "pr").glob("prune-*")
    named = [json.loads(line) for p in (run_dir / "results").glob("*.failures.jsonl")
             for line in p.read_text().splitlines()]
    assert [f["path"] for f in named] == [refused] and named[0]["outcome"] == "not deleted"
    assert f"{PREFIX}/locks/prune.json" not in _listing(bucket)  # the run ended: lock released
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(before) - set(_listing(bucket)) == expected
