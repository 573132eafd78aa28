"""Retention and prune (issue 17): which snapshots a rule keeps (restic's forget semantics), the retention keys'
validation, and `fs3g prune` against the services: exactly the unreferenced objects and packs deleted, the newest
snapshot restoring byte-identical, the dry run changing nothing, a kill -9 mid-apply resumed, the backup lock, and
early-deletion charges from the objects' class and age."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from fs3g_hpc.config.parsers import parse_duration
from fs3g_hpc.model.retention import Duration, KeepReason, RetentionRule, decide

from helpers import fs3g, write_policy


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _kept(snaps: dict[str, str], rule: RetentionRule, now: str = "2026-05-05T12:00") -> set[str]:
    return {d.snapshot_id for d in decide([(k, _t(v)) for k, v in snaps.items()], rule, _t(now)) if d.keep}


# The example of restic's forum answer on keep vs keep-within (snapshots a1..a5, forget run on May 5th at noon).
MAY = {"a1": "2026-05-01T08:00", "a2": "2026-05-02T08:00", "a3": "2026-05-02T11:00", "a4": "2026-05-04T09:00",
       "a5": "2026-05-05T10:00"}


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days_that_have_one():
    assert _kept(MAY, RetentionRule(keep_daily=4)) == {"a1", "a3", "a4", "a5"}
    assert _kept(MAY, RetentionRule(keep_daily=2)) == {"a4", "a5"}


def test_keep_within_is_relative_to_the_newest_snapshot_not_to_now():
    # 4d before May 5th 10:00 is May 1st 10:00: a1 (08:00) is outside; a2 and a3 inside (keep-within keeps all).
    assert _kept(MAY, RetentionRule(keep_within=Duration.parse("4d"))) == {"a2", "a3", "a4", "a5"}
    # Run a year later: the same answer (restic measures from the latest snapshot).
    assert _kept(MAY, RetentionRule(keep_within=Duration.parse("4d")), now="2027-05-05T12:00") == \
        {"a2", "a3", "a4", "a5"}


def test_keep_last_and_rules_combine_by_union_and_the_newest_is_always_kept():
    assert _kept(MAY, RetentionRule(keep_last=1)) == {"a5"}
    assert _kept(MAY, RetentionRule(keep_last=2, keep_daily=3)) == {"a3", "a4", "a5"}
    decisions = decide([(k, _t(v)) for k, v in MAY.items()], RetentionRule(keep_monthly=1), _t("2026-06-01T00:00"))
    assert [d.snapshot_id for d in decisions if d.keep] == ["a5"]
    assert KeepReason.NEWEST in decisions[0].reasons and KeepReason.MONTHLY in decisions[0].reasons


def test_weekly_and_monthly_buckets_follow_iso_weeks_and_calendar_months():
    # Sun 2026-05-03 and Mon 2026-05-04 are in different ISO weeks; Sat 2026-05-09 shares Monday's week.
    snaps = {"sun": "2026-05-03T12:00", "mon": "2026-05-04T12:00", "sat": "2026-05-09T12:00",
             "apr": "2026-04-30T12:00", "mar": "2026-03-15T12:00"}
    assert _kept(snaps, RetentionRule(keep_weekly=2)) == {"sat", "sun"}
    assert _kept(snaps, RetentionRule(keep_monthly=3)) == {"sat", "apr", "mar"}


def test_no_rule_keeps_everything_and_deleted_restorable_days_is_a_wall_time_floor():
    assert _kept(MAY, RetentionRule()) == set(MAY)
    # keep_last 1, but every snapshot younger than 2 days at May 5th noon is kept too: a4 (May 4th 09:00).
    assert _kept(MAY, RetentionRule(keep_last=1, deleted_restorable_days=2)) == {"a4", "a5"}


def test_durations_parse_like_restic_plus_weeks_and_count_months_by_the_calendar():
    assert Duration.parse("1y5m7d2h") == Duration(years=1, months=5, days=7, hours=2)
    assert str(parse_duration("12w")) == "12w"
    assert Duration.parse("1m").before(_t("2026-03-31T00:00")) == _t("2026-02-28T00:00")
    assert Duration.parse("6m").before(_t("2026-05-05T10:00")) == _t("2025-11-05T10:00")
    for bad in ("30", "d30", "1d1y", "", "3 days", 30):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("body, message", [
    ("retention: {keep_last: 0}\n", "retention.keep_last: must be >= 1"),
    ("retention: {keep_within: 30days}\n", "retention.keep_within: '30days' is not a duration"),
    ("retention: {keep_dayly: 3}\n", "retention.keep_dayly: unknown key; did you mean 'keep_daily'?"),
    ("storage: {pack_compact_below: 1.5}\n", "storage.pack_compact_below: must be from 0 to 1"),
])
def test_retention_keys_are_validated_naming_file_and_key(tmp_path, body, message):
    root = tmp_path / "d"
    root.mkdir()
    policy = write_policy(tmp_path, root, extra=body)
    proc = fs3g("validate", str(policy))
    assert proc.returncode == 2 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert str(policy) in proc.stdout + proc.stderr


def test_a_retention_policy_survives_the_plan_snapshot_round_trip(tmp_path):
    from fs3g_hpc.config import load_policy, policy_from_snapshot, policy_to_dict

    root = tmp_path / "d"
    root.mkdir()
    policy = load_policy(write_policy(tmp_path, root, extra="retention: {keep_last: 3, keep_within: 1y6m}\n"))
    again = policy_from_snapshot(policy_to_dict(policy), "plan.json")
    assert again.retention == policy.retention and again.retention.rule().keep_within == Duration(years=1, months=6)


# -- against the services ------------------------------------------------------------------------------------------------

import os  # noqa: E402
from pathlib import Path  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

from test_restore import assert_same_tree  # noqa: E402

PREFIX = "labs/pr"


def _listing(bucket, prefix: str = PREFIX + "/") -> dict[str, tuple[str, int]]:
    out = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["Size"])
    return out


def _policy(tmp_path, root, bucket, retention: str = "keep_last: 1"):
    return write_policy(tmp_path, root, bucket, name="pr", prefix=PREFIX, shards="max_files: 50",
                        uploader="buffer_size_bytes: 5MiB, large_buffers: 4", memory_budget_bytes="2GiB",
                        retention=retention)


def _backup(policy) -> None:
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    time.sleep(1.1)  # run ids and snapshot ids are stamped to the second


def _three_backups(tmp_path, bucket):
    """Backup 1: pack P1 {a, b, c, e} and largefile big2; 2: b deleted, a overwritten (pack P2 {a'}), big2 deleted;
    3: a overwritten again (P3 {a'', d}), c deleted. With keep_last 1, P2 and big2 are unreferenced; P1 still
    holds e (live) and is kept."""
    root = tmp_path / "data"
    (root / "p").mkdir(parents=True)
    for name in "abce":
        (root / "p" / name).write_bytes(os.urandom(3000))
    (root / "p" / "big2").write_bytes(os.urandom(300 * 1024))
    (root / "p" / "big1").write_bytes(os.urandom(200 * 1024))
    policy = _policy(tmp_path, root, bucket)
    _backup(policy)
    (root / "p" / "b").unlink()
    (root / "p" / "big2").unlink()
    (root / "p" / "a").write_bytes(os.urandom(3100))
    _backup(policy)
    (root / "p" / "c").unlink()
    (root / "p" / "a").write_bytes(os.urandom(3200))
    (root / "p" / "d").write_bytes(os.urandom(10))
    _backup(policy)
    return root, policy


def _expected_deletions(before: dict) -> set[str]:
    runs = sorted({k.split("/")[3] for k in before if k.startswith(PREFIX + "/packs/")})
    snaps = sorted({k.split("/")[3] for k in before if k.startswith(PREFIX + "/catalog/")})
    assert len(runs) == 3 and len(snaps) == 3, (runs, snaps)
    return ({k for k in before if k.startswith(f"{PREFIX}/packs/{runs[1]}/")}
            | {k for k in before if k.startswith(f"{PREFIX}/catalog/{snaps[0]}/")}
            | {k for k in before if k.startswith(f"{PREFIX}/catalog/{snaps[1]}/")}
            | {k for k in before if k.endswith("/p/big2") and "/largefile/" in k})


def test_prune_keep_last_1_deletes_exactly_the_unreferenced_and_the_newest_restores(bucket, tmp_path):
    root, policy = _three_backups(tmp_path, bucket)
    before = _listing(bucket)
    expected = _expected_deletions(before)
    assert len([k for k in expected if k.endswith(".tar")]) == 1 and any(k.endswith("big2") for k in expected)

    dry = fs3g("prune", "--config", str(policy), "--json", "--executor", "local")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    report = json.loads(dry.stdout)
    assert len(report["forgotten"]) == 2 and report["unreferenced"]["packs"] == 1
    assert report["unreferenced"]["objects"] == 3  # P2's tar and index, big2
    assert _listing(bucket) == before  # the dry run changed nothing

    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _listing(bucket)
    assert set(before) - set(after) == expected and set(after) <= set(before)
    [run_dir] = (tmp_path / "runs" / "pr").glob("prune-*")
    listed = (run_dir / "delete.txt").read_text().split()
    assert set(listed) == expected and listed[-2:] == sorted(k for k in expected if k.endswith("manifest.json"))
    assert (run_dir / "delete.txt").stat().st_mode & 0o777 == 0o600 and run_dir.stat().st_mode & 0o777 == 0o700

    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert assert_same_tree(root, dest) == 4  # a, e, d, big1

    again = fs3g("prune", "--config", str(policy), "--apply", "--json", "--executor", "local")  # nothing left to do
    assert json.loads(again.stdout)["unreferenced"]["objects"] == 0 and _listing(bucket) == after


def _killing(tmp_path, at: int, parent: bool) -> dict:
    """The environment of a prune killed (SIGKILL) just before the AT-th DeleteObjects of its run (tests/prune_hooks)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    return {**os.environ, "FS3G_BOTOCORE_HOOK": "prune_hooks:kill_at", "FS3G_TEST_KILL_AT": str(at),
            "FS3G_TEST_HOOK_DIR": str(hooks), "FS3G_TEST_KILL_PARENT": "1" if parent else "0",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}


def _journal_lines(run_dir) -> int:
    return sum(len(p.read_text().splitlines()) for p in (run_dir / "results").glob("*.journal"))


def test_kill_9_during_apply_then_a_rerun_loses_nothing_referenced(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy = _three_backups(tmp_path, bucket)
    before = _listing(bucket)
    expected = _expected_deletions(before)
    # Killed (the prune and its task) just before the third DeleteObjects, one key per batch: two batches done.
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local", "--batch-keys", "1",
                env=_killing(tmp_path, 3, parent=True))
    assert proc.returncode == -9, proc.stdout + proc.stderr
    middle = _listing(bucket)
    assert len(set(before) - set(middle)) == 2 and set(before) - set(middle) <= expected
    [run_dir] = (tmp_path / "runs" / "pr").glob("prune-*")
    assert _journal_lines(run_dir) == 2
    proc = fs3g("prune", "--config", str(policy), "--apply", "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(before) - set(_listing(bucket)) == expected
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, dest)


def test_prune_refuses_while_a_backup_holds_the_lock_and_break_lock_removes_it(seaweed_bucket, tmp_path):
    from fs3g_hpc.config import load_policy
    from fs3g_hpc.model.locks import LockKind
    from fs3g_hpc.prune.locks import take_lock

    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    (root / "x").write_bytes(b"x")
    path = _policy(tmp_path, root, bucket)
    _backup(path)
    assert f"{PREFIX}/locks/backup.json" not in _listing(bucket)  # the merge removed the backup's lock
    policy = load_policy(path)
    take_lock(policy, bucket.client, LockKind.BACKUP, "/runs/pr/pr-x")
    proc = fs3g("prune", "--config", str(path), "--apply", "--executor", "local")
    assert proc.returncode == 2 and "a backup is running" in proc.stderr and "--break-lock" in proc.stderr, \
        proc.stdout + proc.stderr
    take_lock(policy, bucket.client, LockKind.BACKUP, "/runs/pr/pr-x", now=datetime.now(timezone.utc) -
              timedelta(hours=100))
    proc = fs3g("prune", "--config", str(path), "--executor", "local")
    assert proc.returncode == 2 and "stale backup lock" in proc.stderr, proc.stdout + proc.stderr
    assert "removed: backup lock" in fs3g("prune", "--config", str(path), "--break-lock").stdout
    proc = fs3g("prune", "--config", str(path), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_early_deletion_charges_follow_storage_class_and_age(moto_bucket, tmp_path):
    from fs3g_hpc.config import load_policy
    from fs3g_hpc.estimate import prices_for
    from fs3g_hpc.prune.run import prune

    bucket = moto_bucket
    old = {f"{PREFIX}/largefile/elsewhere/g.bin": ("GLACIER", 2 * 1024 * 1024),
           f"{PREFIX}/largefile/elsewhere/d.bin": ("DEEP_ARCHIVE", 1024 * 1024),
           f"{PREFIX}/largefile/elsewhere/s.bin": ("STANDARD", 1024 * 1024)}
    for key, (klass, size) in old.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=os.urandom(size), StorageClass=klass)
    root = tmp_path / "data"
    root.mkdir()
    (root / "x").write_bytes(b"x")
    path = _policy(tmp_path, root, bucket)
    _backup(path)
    policy = load_policy(path)
    prices = prices_for(policy)
    now = datetime.now(timezone.utc) + timedelta(days=100)  # GLACIER past its 90 days, DEEP_ARCHIVE not (180)
    plan = prune(policy, prices=prices, now=now).plan
    deep = 1024 * 1024 / 1024 ** 3 * prices.storage("DEEP_ARCHIVE") * 80 / 30
    assert plan.objects == 3 and plan.held_objects == 1 and plan.early_charge == pytest.approx(deep, rel=0.01)
    result = prune(policy, prices=prices, now=now, apply=True)
    assert result.deleted == 2 and set(_listing(bucket, f"{PREFIX}/largefile/")) == \
        {f"{PREFIX}/largefile/elsewhere/d.bin"}
    # 10 days later in wall time the GLACIER object would have been held too: 80 days of charge shown.
    bucket.client.put_object(Bucket=bucket.name, Key=f"{PREFIX}/largefile/elsewhere/g2.bin", Body=b"g" * 1024,
                             StorageClass="GLACIER")
    time.sleep(1.1)
    # Newer than the newest snapshot (an unmerged backup's, as far as prune can tell): kept, said so.
    assert prune(policy, prices=prices, now=now).plan.young_objects == 1
    (root / "x").write_bytes(b"changed")  # an unchanged run writes no snapshot
    _backup(path)
    soon = datetime.now(timezone.utc) + timedelta(days=10)
    plan = prune(policy, prices=prices, now=soon).plan
    glacier = 1024 / 1024 ** 3 * prices.storage("GLACIER") * 80 / 30
    assert plan.held_objects == 2 and plan.early_charge == pytest.approx(
        glacier + 1024 * 1024 / 1024 ** 3 * prices.storage("DEEP_ARCHIVE") * 170 / 30, rel=0.01)
    assert prune(policy, prices=prices, now=soon, apply=True, allow_early_delete=True).deleted >= 2
    assert not _listing(bucket, f"{PREFIX}/largefile/elsewhere/")


def test_the_hard_check_refuses_a_batch_holding_a_key_the_newest_snapshot_references(tmp_path):
    from fs3g_hpc.prune.run import NewestGuard, ReferencedKeyError

    refs = tmp_path / "newest.sorted"
    refs.write_text("p/packs/r3/000000-00000.tar\np/smallfile/d/x\n")
    guard = NewestGuard(refs, "p/catalog/20261201T100000Z-0000000a/")
    guard.check(["p/largefile/d/gone", "p/packs/r2/000000-00000.tar"])  # unreferenced: passes
    with pytest.raises(ReferencedKeyError, match="p/smallfile/d/x"):
        guard.check(["p/packs/r4/000000-00000.tar", "p/smallfile/d/x"])
    with pytest.raises(ReferencedKeyError, match="newest snapshot"):
        NewestGuard(refs, "p/catalog/20261201T100000Z-0000000a/").check(
            ["p/catalog/20261201T100000Z-0000000a/manifest.json"])
