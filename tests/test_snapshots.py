"""Catalog snapshots in the bucket (issue 16): written by every merge, used when the local catalog is lost, rebuilt
from an original-tool bucket, and the mtime rule that lets the original tool's float strings compare clean."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fs3g_hpc.model.mtimes import float_string_ns, float_text, mtime_matches, mtime_text_matches, stat_float
from fs3g_hpc.model.snapshots import (ChunkInfo, SnapshotError, SnapshotManifest, chunk_name, new_snapshot_id,
                                      select_snapshot)
from test_compat import compat, compat_env
from test_restore import assert_same_tree, backup, fs3g, make_tree, write_policy

# -- pure rules ---------------------------------------------------------------------------------------------------------

ORIGINAL_NS = [1_700_000_000_123_456_789, 1_733_000_000_000_000_001, 1_600_000_000_999_999_999, 86_400_000_000_123,
               1_700_000_000_000_000_000]


@pytest.mark.parametrize("ns", ORIGINAL_NS)
def test_an_original_tool_float_string_equals_the_mtime_it_was_written_for(ns):
    text = float_text(ns)  # str(os.stat(...).st_mtime), as the original tool wrote it
    assert text == str(os.stat_result((0, 0, 0, 0, 0, 0, 0, 0, stat_float(ns), 0)).st_mtime)
    assert mtime_text_matches(text, ns)
    assert mtime_matches(ns, float_string_ns(ns))  # a catalog rebuilt from that text
    # A real change, even of a microsecond, is a change.
    assert not mtime_text_matches(text, ns + 1_000_000)
    assert not mtime_matches(ns + 1_000_000, float_string_ns(ns))


def test_fs3g_exact_times_stay_exact():
    ns = 1_700_000_000_123_456_789
    assert mtime_text_matches("1700000000.123456789", ns)
    assert not mtime_text_matches("1700000000.123456788", ns)
    assert not mtime_matches(ns, ns - 1) or float_string_ns(ns) == ns - 1
    with pytest.raises(ValueError):
        mtime_text_matches("yesterday", ns)


def test_snapshot_ids_sort_by_time_and_as_of_picks_the_one_before():
    a = new_snapshot_id(datetime(2026, 12, 1, 10, tzinfo=timezone.utc), "0000000a")
    b = new_snapshot_id(datetime(2026, 12, 2, 10, tzinfo=timezone.utc), "0000000b")
    assert a < b and a == "20261201T100000Z-0000000a"
    assert select_snapshot([b, a, "junk"], None) == b
    assert select_snapshot([a, b], "2026-12-01T12:00Z") == a
    assert select_snapshot([a, b], "2026-11-30") is None
    assert select_snapshot([a, b], a) == a


def test_a_manifest_is_checked_as_untrusted_input():
    chunk = ChunkInfo(chunk_name(0), 3, 100, "ab" * 32, "data/x")
    good = {"format": "fs3g-snapshot", "version": 1, "snapshot_id": "20261201T100000Z-0000000a", "roots": ["/d"],
            "counts": {"entries": 3}, "chunks": [chunk.to_json()]}
    assert SnapshotManifest.from_json(good, "m").chunks == (chunk,)
    for bad in ({**good, "snapshot_id": "../../x"}, {**good, "chunks": [{**chunk.to_json(), "name": "../c"}]},
                {**good, "counts": {"entries": 4}}, {**good, "chunks": []}, {**good, "format": "x"}):
        with pytest.raises(SnapshotError):
            SnapshotManifest.from_json(bad, "m")


# -- against the services ------------------------------------------------------------------------------------------------

def _objects(bucket, prefix: str = "") -> dict[str, tuple[str, str]]:
    """key -> (ETag, LastModified) of every object outside catalog/."""
    out = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for o in page.get("Contents", []):
            if "/catalog/" not in "/" + o["Key"]:
                out[o["Key"]] = (o["ETag"], str(o["LastModified"]))
    return out


def _snapshot_ids(bucket, prefix: str) -> list[str]:
    page = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{prefix}catalog/", Delimiter="/")
    return sorted(p["Prefix"].split("/")[-2] for p in page.get("CommonPrefixes", []))


def test_merge_writes_a_snapshot_and_a_lost_run_root_uploads_nothing(bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=bucket.endpoint_name != "moto")
    policy = write_policy(tmp_path, "snap", root, bucket, extra="snapshots: {chunk_bytes: 1MiB}\n")
    backup(policy)
    [sid] = _snapshot_ids(bucket, "labs/snap/")
    manifest = json.loads(bucket.client.get_object(Bucket=bucket.name, Key=f"labs/snap/catalog/{sid}/manifest.json")
                          ["Body"].read())
    assert manifest["roots"] == [str(root)] and manifest["counts"]["files"] >= 10 and manifest["chunks"]
    for chunk in manifest["chunks"]:
        body = bucket.client.get_object(Bucket=bucket.name, Key=f"labs/snap/catalog/{sid}/{chunk['name']}")["Body"].read()
        import hashlib
        assert hashlib.sha256(body).hexdigest() == chunk["sha256"] and gzip.decompress(body).startswith(b"FS3GREC")
    before = _objects(bucket, "labs/snap/")

    shutil.rmtree(tmp_path / "runs")  # the scratch purge
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"using the bucket's newest snapshot {sid}" in proc.stdout, proc.stdout
    assert "planned  0 entries" in proc.stdout, proc.stdout
    assert _objects(bucket, "labs/snap/") == before  # no object rewritten

    # A changed file is the only upload; the next plan starts from the local catalog again.
    (root / "proj" / "a.txt").write_bytes(b"changed\n")
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0 and "planned  1 entries" in proc.stdout, proc.stdout + proc.stderr
    after = _objects(bucket, "labs/snap/")
    assert {k for k in after if after[k] != before.get(k)} == {f"labs/snap/smallfile{root}/proj/a.txt"}
    assert len(_snapshot_ids(bucket, "labs/snap/")) == 2

    # A corrupted chunk of the newest snapshot is refused, naming it.
    newest = _snapshot_ids(bucket, "labs/snap/")[-1]
    key = f"labs/snap/catalog/{newest}/chunk-000000.rec.gz"
    body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=body[:-10])
    shutil.rmtree(tmp_path / "runs")
    proc = fs3g("plan", "--config", str(policy))
    assert proc.returncode == 2 and key in proc.stderr and "checksum" in proc.stderr, proc.stdout + proc.stderr

    listing = fs3g("snapshots", "--config", str(policy), "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)["snapshots"]
    assert [r["id"] for r in rows] == _snapshot_ids(bucket, "labs/snap/") and rows[1]["change"]["files"] == 0


def test_compat_backup_after_a_lost_run_root_rewrites_nothing(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    env = compat_env(seaweed_bucket, tmp_path)
    flags = ["--bucketname", seaweed_bucket.name]
    proc = compat(*flags, "--backup", str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _snapshot_ids(seaweed_bucket, "")
    before = _objects(seaweed_bucket)
    shutil.rmtree(tmp_path / "compat-runs")
    proc = compat(*flags, "--backup", str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "planned  0 entries" in proc.stdout, proc.stdout + proc.stderr
    assert _objects(seaweed_bucket) == before


def _write_like_the_original_tool(bucket, root: Path) -> int:
    """Every file and symlink under root PUT with plain boto3 as the original tool did: its keys, its metadata names,
    mtimes as str(float)."""
    from fs3g_hpc.model.keys import encode_path
    from fs3g_hpc.model.treehash import TreeHasher

    count = 0
    for directory, dirs, names in os.walk(os.fsencode(root)):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            link = os.path.islink(path)
            data = os.readlink(path) if link else open(path, "rb").read()
            klass = "symlinks" if link else "smallfile" if st.st_size <= 128 * 1024 else "largefile"
            hasher = TreeHasher()
            hasher.update(data)
            meta = {"mtime": str(st.st_mtime), "ctime": str(st.st_ctime), "atime": str(st.st_atime),
                    "mode": oct(st.st_mode), "owneruid": str(st.st_uid), "groupuid": str(st.st_gid),
                    "ownername": "someone", "groupname": "lab", "sha256hashtree": hasher.hexdigest(),
                    "creator": "fasts3plusglacier", "metadataversion": "1"}
            bucket.client.put_object(Bucket=bucket.name, Key=f"{klass}/{encode_path(path)}", Body=data, Metadata=meta)
            count += 1
    return count


def test_an_original_tool_bucket_compares_clean_rebuilds_and_backs_up_only_changes(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    for i in range(5):  # mtimes with all nine digits, as modern filesystems have them
        f = root / "proj" / f"ns{i}.txt"
        f.write_bytes(b"x" * i)
        os.utime(f, ns=(1_700_000_000_123_456_789 + i, 1_700_000_000_123_456_789 + i * 7919))
    count = _write_like_the_original_tool(seaweed_bucket, root)
    env = compat_env(seaweed_bucket, tmp_path)
    flags = ["--bucketname", seaweed_bucket.name]

    proc = compat(*flags, str(root), cwd=tmp_path, env=env)  # compare: clean
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = _objects(seaweed_bucket)
    assert len(before) == count

    proc = compat(*flags, "--backup", str(root), cwd=tmp_path, env=env)  # rebuild by itself, then nothing to do
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "catalog rebuild" in proc.stdout and "planned  0 entries" in proc.stdout, proc.stdout
    assert _objects(seaweed_bucket) == before

    work = tmp_path / "cwd"
    work.mkdir()
    proc = compat(*flags, "--restore", str(root), cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for directory, _dirs, names in os.walk(root):
        for name in names:
            a = Path(directory) / name
            b = work / "glacierrestore" / a.relative_to(root)
            assert a.is_symlink() and os.readlink(a) == os.readlink(b) or a.read_bytes() == b.read_bytes(), a


def test_catalog_rebuild_of_a_per_object_bucket_then_only_changes_upload(bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    policy = write_policy(tmp_path, "rb", root, bucket)
    backup(policy)
    # A bucket as fs3g wrote it before snapshots: remove the snapshots and the run root.
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix="labs/rb/catalog/"):
        for o in page.get("Contents", []):
            bucket.client.delete_object(Bucket=bucket.name, Key=o["Key"])
    shutil.rmtree(tmp_path / "runs")
    proc = fs3g("plan", "--config", str(policy))
    assert proc.returncode == 2 and "fs3g catalog rebuild --config" in proc.stderr, proc.stdout + proc.stderr

    proc = fs3g("catalog", "rebuild", "--config", str(policy))
    assert proc.returncode == 0 and "catalog rebuild:" in proc.stdout, proc.stdout + proc.stderr
    before = _objects(bucket, "labs/rb/")
    (root / "proj" / "a.txt").write_bytes(b"changed after the backup\n")
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0 and "planned  1 entries" in proc.stdout, proc.stdout + proc.stderr
    after = _objects(bucket, "labs/rb/")
    assert {k for k in after if after[k] != before.get(k)} == {f"labs/rb/smallfile{root}/proj/a.txt"}
    r = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(r), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, r)
