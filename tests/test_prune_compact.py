"""Pack compaction in `fs3g prune` (issue 17, part 3): which packs qualify (pure rules), retention forgetting a
superseded snapshot, and against the services: a pack whose live fraction fell below storage.pack_compact_below is
rewritten into a new pack holding exactly its live members, the newest snapshot restores byte-identical, the dry
run changes nothing, a pack an older kept snapshot references is held, kill -9 at two points of the compaction then
a rerun loses nothing referenced, and an archived pack is compacted only with --include-archived (moto)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone

import pytest

from fs3g_hpc.model.compaction import PackFacts, PackVerdict, judge
from fs3g_hpc.model.retention import KeepReason, RetentionRule, decide_snapshots
from fs3g_hpc.model.snapshots import SnapshotManifest

from helpers import fs3g, write_policy
from test_restore import assert_same_tree

PREFIX = "labs/cp"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- pure rules ----------------------------------------------------------------------------------------------------

def test_judge_orders_the_rules_and_archive_classes_need_include_archived():
    base = PackFacts("packs/r/000000-00000.tar", 10 * 1024 + 1024, 2048, 2, "STANDARD")
    assert base.live_fraction == pytest.approx(0.2)
    assert judge(base, 0.5, False) is PackVerdict.COMPACT
    assert judge(base, 0.2, False) is PackVerdict.ABOVE  # not strictly below
    assert judge(PackFacts(base.pack, base.pack_bytes, 0, 0, "STANDARD"), 0.5, False) is PackVerdict.NO_LIVE
    assert judge(PackFacts(**{**base.__dict__, "held_by": "s2"}), 0.5, False) is PackVerdict.HELD
    assert judge(PackFacts(**{**base.__dict__, "young": True}), 0.5, False) is PackVerdict.YOUNG
    for klass in ("GLACIER", "DEEP_ARCHIVE"):
        archived = PackFacts(**{**base.__dict__, "storage_class": klass})
        assert judge(archived, 0.5, False) is PackVerdict.ARCHIVED
        assert judge(archived, 0.5, True) is PackVerdict.THAW  # never asked: restore first
        assert judge(PackFacts(**{**archived.__dict__, "restored": False}), 0.5, True) is PackVerdict.THAW
        assert judge(PackFacts(**{**archived.__dict__, "restored": True}), 0.5, True) is PackVerdict.COMPACT
    ir = PackFacts(**{**base.__dict__, "storage_class": "GLACIER_IR"})  # read directly: no thaw
    assert judge(ir, 0.5, False) is PackVerdict.COMPACT


def test_a_superseded_snapshot_is_forgotten_and_its_successor_judged_in_its_place():
    snaps = [("a1", _t("2026-05-01T08:00"), ""), ("a2", _t("2026-05-02T08:00"), ""),
             ("a3", _t("2026-05-03T08:00"), ""), ("c3", _t("2026-05-05T10:00"), "a3")]
    decisions = decide_snapshots(snaps, RetentionRule(keep_daily=2), _t("2026-05-06T00:00"))
    kept = {d.snapshot_id for d in decisions if d.keep}
    assert kept == {"c3", "a2"}  # c3 counts for a3's day (May 3rd), so May 2nd's a2 is the second day
    assert decisions[0].snapshot_id == "c3" and KeepReason.NEWEST in decisions[0].reasons
    [superseded] = [d for d in decisions if d.superseded_by]
    assert superseded.snapshot_id == "a3" and not superseded.keep and superseded.superseded_by == "c3"
    # no rules keep everything -- except a superseded snapshot, never kept on its own
    assert {d.snapshot_id for d in decide_snapshots(snaps, RetentionRule(), _t("2026-05-06")) if d.keep} == \
        {"a1", "a2", "c3"}


def test_supersedes_round_trips_and_old_readers_see_it_as_an_extra_key():
    chunk = {"name": "chunk-000000.rec.gz", "entries": 0, "size": 20, "sha256": "0" * 64, "first": ""}
    data = {"format": "fs3g-snapshot", "version": 1, "snapshot_id": "20261201T100000Z-0000000b", "created": "",
            "lab": "l", "roots": ["/d"], "counts": {}, "chunks": [chunk], "supersedes": "20261201T090000Z-0000000a"}
    manifest = SnapshotManifest.from_json(data, "m")
    assert manifest.supersedes == "20261201T090000Z-0000000a" and manifest.extra == {}
    assert manifest.to_json()["supersedes"] == data["supersedes"]
    assert "supersedes" not in SnapshotManifest.from_json({**data, "supersedes": ""}, "m").to_json()
    with pytest.raises(Exception, match="bad supersedes"):
        SnapshotManifest.from_json({**data, "supersedes": "../x"}, "m")


# -- against the services --------------------------------------------------------------------------------------------

def _listing(bucket, prefix: str = PREFIX + "/") -> dict[str, tuple[str, int, str]]:
    out = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["Size"], o.get("StorageClass", "STANDARD"))
    return out


def _policy(tmp_path, root, bucket, retention: str = "keep_last: 1", storage: str = "pack_compact_below: 0.5"):
    return write_policy(tmp_path, root, bucket, name="cp", prefix=PREFIX, shards="max_files: 50",
                        uploader="buffer_size_bytes: 5MiB, large_buffers: 4", memory_budget_bytes="2GiB",
                        retention=retention, storage=storage)


def _backup(policy) -> None:
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    time.sleep(1.1)  # run ids and snapshot ids are stamped to the second


def _packs(listing: dict, run: str | None = None) -> set[str]:
    return {k for k in listing if k.endswith(".tar") and (run is None or f"/packs/{run}/" in k)}


def _three_backups(tmp_path, bucket, storage: str = "pack_compact_below: 0.5"):
    """Backup 1: pack P1 {a..j, link}; 2: b..h deleted, k added (P2 {k}); 3: m added (P3 {m}). P1 keeps a, i, j
    and the symlink live: well under half of it."""
    root = tmp_path / "data"
    (root / "p").mkdir(parents=True)
    for name in "abcdefghij":
        (root / "p" / name).write_bytes(os.urandom(3000 + ord(name)))
    os.symlink("a", root / "p" / "link")
    policy = _policy(tmp_path, root, bucket, storage=storage)
    _backup(policy)
    first = _packs(_listing(bucket))
    assert len(first) == 1
    for name in "bcdefgh":
        (root / "p" / name).unlink()
    (root / "p" / "k").write_bytes(os.urandom(2000))
    _backup(policy)
    (root / "p" / "m").write_bytes(os.urandom(1000))
    _backup(policy)
    return root, policy, first.pop()


def _restore_same(tmp_path, policy, root, name: str = "restored", as_of: str | None = None) -> int:
    """Restore (from the local catalog, or with `as_of` from that bucket snapshot) and compare with `root`."""
    dest = tmp_path / name
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local",
                *(("--as-of", as_of) if as_of else ()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return assert_same_tree(root, dest)


def _manifests(bucket) -> dict[str, dict]:
    out = {}
    for key in _listing(bucket, PREFIX + "/catalog/"):
        if key.endswith("/manifest.json"):
            body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
            out[key.split("/")[-2]] = json.loads(body)
    return out


def _tar_names(bucket, key: str) -> set[str]:
    body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    proc = subprocess.run(["tar", "-tf", "-"], input=body, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:  # and every member's bytes read back
        assert all(tar.extractfile(m).read() is not None for m in tar.getmembers() if m.isfile())
    return set(proc.stdout.decode().split())


def _rel(root, *names: str) -> set[str]:
    return {str(root / "p" / n).lstrip("/") for n in names}


def test_prune_apply_compacts_a_pack_below_the_threshold_into_exactly_its_live_members(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy, p1 = _three_backups(tmp_path, bucket)
    before = _listing(bucket)
    old_newest = max(_manifests(bucket))

    dry = fs3g("prune", "--config", str(policy), "--executor", "local", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    report = json.loads(dry.stdout)["compaction"]
    [line] = [p for p in report["packs"] if p["verdict"] == "compact"]
    assert PREFIX + "/" + line["pack"] == p1 and line["live_members"] == 4 and 0 < line["live_fraction"] < 0.5
    assert report["bytes_copied"] == line["live_bytes"] and report["bytes_freed"] > report["bytes_copied"]
    assert report["requests"]["GET"] == 1 and report["members"] == 4
    assert _listing(bucket) == before  # the dry run changed nothing
    text = fs3g("prune", "--config", str(policy), "--executor", "local")
    assert "pack compaction" in text.stdout and line["pack"] in text.stdout and _listing(bucket) == before

    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    done = out["compaction"]
    assert done["compacted"] == [line["pack"]] and len(done["new_packs"]) == 1 and not done["skipped"]
    after = _listing(bucket)
    assert p1 not in after and p1 + ".idx" not in after  # the old pack and its index: deleted by the delete pass
    [new] = [PREFIX + "/" + k for k in done["new_packs"]]
    assert new in after and new + ".idx" in after
    assert _tar_names(bucket, new) == _rel(root, "a", "i", "j", "link")  # exactly the live members
    manifests = _manifests(bucket)
    assert set(manifests) == {done["snapshot"]} and manifests[done["snapshot"]]["supersedes"] == old_newest
    assert manifests[done["snapshot"]]["source"] == "compact"
    assert old_newest in out["forgotten"]
    # the other packs (P2 {k}, P3 {m}) are fully live: untouched
    assert _packs(after) == (_packs(before) - {p1}) | {new}
    run_dir = next((tmp_path / "runs" / "cp").glob("prune-*"))
    steps = [json.loads(x)["step"] for x in (run_dir / "compact.jsonl").read_text().splitlines()]
    assert steps == ["planned", "pack-copied", "pack-written", "snapshot-published", "snapshot-verified",
                     "catalog-rewritten", "done"]
    assert (run_dir / "compact.jsonl").stat().st_mode & 0o777 == 0o600
    origin = json.loads((tmp_path / "runs" / "cp" / "catalog-snapshot.json").read_text())
    assert origin["snapshot_id"] == done["snapshot"]

    assert _restore_same(tmp_path, policy, root) == 6  # a, i, j, k, m, link
    assert _restore_same(tmp_path, policy, root, "from-snapshot", as_of=done["snapshot"]) == 6
    again = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--json")  # nothing left to compact or delete
    assert again.returncode == 0 and not json.loads(again.stdout)["compaction"]["compacted"]
    assert _listing(bucket) == after
    (root / "p" / "n").write_bytes(b"after compaction")  # a backup after it plans against the rewritten catalog
    _backup(policy)
    assert _restore_same(tmp_path, policy, root, "restored2") == 7


def test_a_pack_an_older_kept_snapshot_references_is_held_not_compacted(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    root, policy, p1 = _three_backups(tmp_path, bucket)
    policy = _policy(tmp_path, root, bucket, retention="keep_last: 2")
    before = _listing(bucket)
    second = sorted(_manifests(bucket))[1]  # kept with the newest; it still has b..h, in P1
    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)["compaction"]
    [line] = [p for p in report["packs"] if PREFIX + "/" + p["pack"] == p1]
    assert line["verdict"] == "held" and line["held_by"] == second and not report["compacted"]
    assert p1 in _listing(bucket) and _packs(_listing(bucket)) == _packs(before)
    assert f"held by snapshot {second}" in fs3g("prune", "--config", str(policy), "--executor", "local").stdout


KILLER = """
import os, sys
from fs3g_hpc.config import load_policy
from fs3g_hpc.prune.run import prune
def hook(line):
    if line.step.value == sys.argv[2]:
        os.kill(os.getpid(), 9)
prune(load_policy(sys.argv[1]), apply=True, after_compact_step=hook)
"""


@pytest.mark.parametrize("step", ["pack-written", "snapshot-verified"])
def test_kill_9_during_compaction_then_a_rerun_loses_nothing_referenced(seaweed_bucket, tmp_path, step):
    bucket = seaweed_bucket
    root, policy, p1 = _three_backups(tmp_path, bucket)
    before = _listing(bucket)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(policy), step], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    middle = _listing(bucket)
    assert set(before) <= set(middle)  # nothing deleted yet: the old pack is still there
    new_runs = _packs(middle) - _packs(before)
    assert len(new_runs) == 1
    if step == "snapshot-verified":
        assert len(_manifests(bucket)) == 4  # the new snapshot is published, the catalog not yet rewritten
    assert _restore_same(tmp_path, policy, root, "mid") == 6  # restorable in between

    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _listing(bucket)
    assert p1 not in after and p1 + ".idx" not in after
    [newest] = _manifests(bucket).values()
    assert newest["source"] == "compact"
    if step == "pack-written":  # the orphan of the killed run is gone, the rerun's pack holds the members
        assert not new_runs & set(after)
    else:  # the rerun finished the catalog step; the killed run's pack is the one referenced
        assert json.loads(proc.stdout)["compaction"]["resumed_catalog"] == newest["snapshot_id"]
        assert new_runs <= set(after)
    assert len(_packs(after)) == 3
    assert _restore_same(tmp_path, policy, root) == 6
    assert _restore_same(tmp_path, policy, root, "from-snapshot", as_of=newest["snapshot_id"]) == 6


def test_an_archived_pack_is_compacted_only_with_include_archived(moto_bucket, tmp_path):
    bucket = moto_bucket
    root, policy, p1 = _three_backups(tmp_path, bucket,
                                      storage="pack_compact_below: 0.5, pack_storage_class: GLACIER")
    assert _listing(bucket)[p1][2] == "GLACIER"
    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)["compaction"]
    [line] = [p for p in report["packs"] if PREFIX + "/" + p["pack"] == p1]
    assert line["verdict"] == "archived" and not report["compacted"] and not report["thaw_requested"]
    assert p1 in _listing(bucket)

    dry = json.loads(fs3g("prune", "--config", str(policy), "--executor", "local", "--include-archived", "--json").stdout)["compaction"]
    [line] = [p for p in dry["packs"] if PREFIX + "/" + p["pack"] == p1]
    assert line["verdict"] == "thaw" and dry["thaw_bytes"] == line["pack_bytes"] and dry["requests"]["RESTORE"] == 1
    head = bucket.client.head_object(Bucket=bucket.name, Key=p1)
    assert "Restore" not in head  # the dry run asked for nothing

    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--include-archived", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)["compaction"]
    assert report["thaw_requested"] == [line["pack"]] and not report["compacted"]
    assert "Restore" in bucket.client.head_object(Bucket=bucket.name, Key=p1)

    # the next prune finds the restored copy readable and compacts it; the GLACIER original is inside its 90 days,
    # so it is deleted only with --allow-early-delete
    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--include-archived", "--allow-early-delete", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)["compaction"]
    assert report["compacted"] == [line["pack"]]
    after = _listing(bucket)
    assert p1 not in after
    [new] = [PREFIX + "/" + k for k in report["new_packs"]]
    assert after[new][2] == "GLACIER"


def test_a_glacier_ir_pack_is_read_directly_and_compacted_without_include_archived(moto_bucket, tmp_path):
    bucket = moto_bucket
    root, policy, p1 = _three_backups(tmp_path, bucket,
                                      storage="pack_compact_below: 0.5, pack_storage_class: GLACIER_IR")
    assert _listing(bucket)[p1][2] == "GLACIER_IR"
    # GLACIER_IR's 90 days: the compacted original is deleted only with --allow-early-delete
    proc = fs3g("prune", "--config", str(policy), "--executor", "local", "--apply", "--allow-early-delete", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)["compaction"]
    assert PREFIX + "/" + report["compacted"][0] == p1 and not report["thaw_requested"]
    assert p1 not in _listing(bucket)
    assert _restore_same(tmp_path, policy, root) == 6
