"""Backups with `storage.small_files: packs` against the real endpoints: packs and indexes in the bucket, what GNU tar
and Python's tarfile read from them, the merge's verification and catalog locations, kill -9 mid-pack and a rerun,
files changed while read, incremental runs, a lab switching from per-object to packs, and the requests sent."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import helpers
import pytest

from fs3g_hpc.backup.merge import merge_run
from fs3g_hpc.backup.plan import PlanOptions, make_plan
from fs3g_hpc.backup.task import run_shard
from fs3g_hpc.config import load_policy
from fs3g_hpc.model.keys import KeyClass, object_key
from fs3g_hpc.model.packs import (PackRef, RUN_ID_PATTERN, absolute_key, index_key, is_index_key, is_pack_key,
                                  read_index)
from fs3g_hpc.model.records import EntryKind, read_records
from fs3g_hpc.model.sizes import MIB
from fs3g_hpc.model.treehash import tree_hash_reference
from fs3g_hpc.runs.catalog import catalog_path, packs_usage_path, read_packs_usage
from fs3g_hpc.scan import ScanSettings
from fs3g_hpc.status import shard_states
from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

PREFIX = "labs/packtest"
TESTS = Path(__file__).resolve().parent


def write_policy(tmp: Path, root: Path, bucket, *, small_files: str = "packs", pack_size: str = "16MiB",
                 extra_storage: str = "") -> Path:
    storage = f"small_files: {small_files}, pack_size_bytes: {pack_size}" + (f", {extra_storage}" if extra_storage
                                                                            else "")
    return helpers.write_policy(tmp, root, bucket, name="packtest", file="lab.yaml", prefix=PREFIX,
                                uploader="buffer_size_bytes: 5MiB, large_buffers: 3, max_attempts: 10",
                                storage=storage)


def plan(tmp: Path, policy_file: Path, name: str) -> Path:
    policy = load_policy(policy_file, environ={})
    catalog = catalog_path(policy)
    return make_plan(policy, tmp / "runs" / name, PlanOptions(catalog=catalog if catalog.is_file() else None,
                                                              scan=ScanSettings(workers=0))).run_dir


def journal_lines(run_dir: Path, shard: int = 0) -> list[dict]:
    path = run_dir / "results" / f"shard-{shard:06d}.journal"
    return [json.loads(line) for line in path.read_text().splitlines()]


def listing(bucket, prefix: str = PREFIX + "/") -> dict[str, dict]:
    """The data objects under `prefix`: everything but the catalog snapshots every merge writes under catalog/."""
    out = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for obj in page.get("Contents", []):
            if f"{PREFIX}/catalog/" not in obj["Key"]:
                out[obj["Key"]] = obj
    return out


def get_bytes(bucket, key: str) -> bytes:
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()


def index_of(bucket, pack: str):
    header, entries = read_index(io.BytesIO(get_bytes(bucket, index_key(pack))), index_key(pack))
    return header, list(entries)


def run_packs(bucket, run_dir: Path) -> list[str]:
    run_id = json.loads((run_dir / "plan.json").read_text())["run_id"]
    return sorted(k for k in listing(bucket, f"{PREFIX}/packs/{run_id}/") if is_pack_key(k))


def hostile_tree(root: Path) -> dict[bytes, bytes]:
    """Files with hostile names (as tests/test_upload.py's), a deep path, a symlink and a hard-link pair."""
    broot = os.fsencode(str(root))
    files = {}
    for name in (b"new\nline", b"bad-\xff\xfe-utf8", b"per%cent", b"back\\slash", b"tab\tspace ", b"caf\xc3\xa9",
                 b"L" * 255, b"\xff" * 100, b"empty"):
        data = b"" if name == b"empty" else name * 7
        with open(broot + b"/" + name, "wb") as f:
            f.write(data)
        files[broot + b"/" + name] = data
    deep = broot + b"/" + b"/".join([b"d" * 200] * 6)
    os.makedirs(deep)
    with open(deep + b"/leaf", "wb") as f:
        f.write(b"deep")
    files[deep + b"/leaf"] = b"deep"
    os.symlink(b"bad-\xff\xfe-utf8", broot + b"/link\xff")
    with open(broot + b"/hard-a", "wb") as f:
        f.write(b"shared bytes")
    os.link(broot + b"/hard-a", broot + b"/hard-b")
    files[broot + b"/hard-a"] = files[broot + b"/hard-b"] = b"shared bytes"
    return files


def test_hostile_names_in_packs_verify_and_plain_tar_reads_them(bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    files = hostile_tree(root)
    link = os.fsencode(str(root)) + b"/link\xff"
    policy_file = write_policy(tmp_path, root, bucket)
    run_dir = plan(tmp_path, policy_file, "first")
    run_id = json.loads((run_dir / "plan.json").read_text())["run_id"]
    assert re.fullmatch(RUN_ID_PATTERN, run_id)
    outcome = run_shard(run_dir, 0)
    assert (outcome.status, outcome.failed, outcome.uploaded) == ("done", 0, len(files) + 1)
    report = merge_run(run_dir)
    assert report.ok and report.data["verified"]["files"] == len(files) + 1
    # Nothing went to per-object keys: only packs and their indexes.
    keys = listing(bucket)
    assert keys and all(is_pack_key(k) or is_index_key(k) for k in keys), sorted(keys)
    packs = run_packs(bucket, run_dir)
    assert len(packs) == 1 and report.data["packs"]["count"] == 1
    assert report.data["packs"]["bytes"] == keys[packs[0]]["Size"]

    policy = load_policy(policy_file, environ={})
    records = {e.path: e for e in read_records(catalog_path(policy)) if e.kind is not EntryKind.DIRECTORY}
    assert set(records) == set(files) | {link}
    pack = packs[0]
    body = get_bytes(bucket, pack)
    for path, entry in records.items():
        ref = PackRef.decode(entry.location, repr(path))
        assert absolute_key(PREFIX, ref.pack) == pack
        if entry.kind is EntryKind.FILE:
            assert body[ref.data_offset:ref.data_end] == files[path]
            assert entry.tree_hash.hex() == tree_hash_reference(files[path])
    # The hard link's record points at its first link's data.
    assert PackRef.decode(records[os.fsencode(str(root)) + b"/hard-b"].location, "b") == \
        PackRef.decode(records[os.fsencode(str(root)) + b"/hard-a"].location, "a")

    # GNU tar lists every member with its exact name (relative to /), in pack order, as the index does.
    header, entries = index_of(bucket, pack)
    assert header.members == len(files) + 1 and header.pack_bytes == len(body) and header.run_id == run_id
    names = subprocess.run(["tar", "--quoting-style=literal", "-tf", "-"], input=body, capture_output=True,
                           check=True).stdout
    assert names == b"".join(e.path[1:] + b"\n" for e in entries)
    assert {e.path for e in entries} == set(files) | {link}
    verbose = subprocess.run(["tar", "-tvf", "-"], input=body, capture_output=True)
    assert verbose.returncode == 0 and len(verbose.stdout.splitlines()) >= len(entries), verbose.stderr
    # Python's tarfile: every regular member's FS3G.sha256 is the SHA-256 of the file; links are links.
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        members = tar.getmembers()
        assert len(members) == len(entries)
        for member in members:
            path = b"/" + os.fsencode(member.name)
            if member.isreg():
                assert member.pax_headers["FS3G.sha256"] == hashlib.sha256(files[path]).hexdigest()
                assert tar.extractfile(member).read() == files[path]
            elif member.issym():
                assert path == link and os.fsencode(member.linkname) == b"bad-\xff\xfe-utf8"
            else:
                assert member.islnk() and path == os.fsencode(str(root)) + b"/hard-b"
    # packs.jsonl: this pack, every member live.
    usage = list(read_packs_usage(packs_usage_path(policy)))
    assert [(u.pack, u.members, u.bytes, u.live_members) for u in usage] == [
        (PREFIX and pack[len(PREFIX) + 1:], len(entries), len(body), len(entries))]
    meta = bucket.client.head_object(Bucket=bucket.name, Key=pack)["Metadata"]
    assert meta["fs3g-run-id"] == run_id and meta["fs3g-members"] == str(len(entries))


def _counting(counts: Counter, lock: threading.Lock):
    def factory(policy):
        client = make_s3_client(ClientSettings.from_policy(policy))

        def count(model, params, **_):
            with lock:
                counts[model.name] += 1
                if model.name == "PutObject":
                    counts["put:" + ("index" if is_index_key(params["Key"]) else "pack" if is_pack_key(params["Key"])
                                     else "other")] += 1
        client.meta.events.register("before-parameter-build.s3", count)
        return client
    return factory


def test_requests_one_per_pack_part_and_index_none_per_file(seaweed_bucket, tmp_path):
    """300 files of 60 KiB (17.6 MiB) with 16 MiB packs and 5 MiB parts: pack 0 is multipart (3 full parts and a
    last one), pack 1 one PUT; one index PUT each; no request names a file."""
    bucket = seaweed_bucket
    root = tmp_path / "data"
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (root / f"d{d}" / f"f{f:03d}").write_bytes(os.urandom(60 * 1024))
    (root / "big").write_bytes(os.urandom(7 * MIB))  # a large file keeps its own object, beside the packs
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket), "run")
    counts: Counter = Counter()
    outcome = run_shard(run_dir, 0, client_factory=_counting(counts, threading.Lock()))
    assert (outcome.status, outcome.failed, outcome.uploaded) == ("done", 0, 301)
    done = [r for r in journal_lines(run_dir) if r["t"] == "pack-done"]
    assert len(done) == 2
    sizes = [d["b"] for d in done]
    assert all(s <= 16 * MIB for s in sizes) and sizes[0] > 15 * MIB
    pack_parts = -(-sizes[0] // (5 * MIB))
    big_parts = 2
    assert counts["UploadPart"] == pack_parts + big_parts
    assert counts["CreateMultipartUpload"] == counts["CompleteMultipartUpload"] == 2
    assert (counts["put:pack"], counts["put:index"], counts["put:other"]) == (1, 2, 0)
    report = merge_run(run_dir)
    assert report.ok and report.data["verified"]["files"] == 301
    key = object_key(PREFIX, KeyClass.LARGE, os.fsencode(str(root / "big"))).key
    assert key in listing(bucket)


def test_kill_9_mid_pack_then_rerun_verifies_everything(seaweed_bucket, tmp_path):
    """A real kill -9 while the second pack is half sent (every PUT slowed by the hook); the rerun aborts that upload,
    packs its members again into the next n, never redoes the finished pack, and leaves no open upload."""
    bucket, client, name = seaweed_bucket, seaweed_bucket.client, seaweed_bucket.name
    root = tmp_path / "data"
    root.mkdir()
    for f in range(500):
        (root / f"f{f:03d}").write_bytes(os.urandom(100 * 1024))  # 48.8 MiB: 3-4 packs of 16 MiB
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket), "run")
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": "upload_hooks:slow", "FS3G_TEST_SLOW_S": "0.3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir), "--shard", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    journal = run_dir / "results" / "shard-000000.journal"
    open_pack = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and open_pack is None:
        if journal.exists():
            lines = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("}")]
            finished = {r["k"] for r in lines if r["t"] == "pack-done"}
            started = [r for r in lines if r["t"] == "pack" and r["u"] and r["k"] not in finished]
            if finished and started:
                open_pack = started[-1]
        time.sleep(0.02)
    assert open_pack is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    assert open_pack["u"] in [u["UploadId"] for u in uploads]
    before = journal_lines(run_dir)
    finished_before = [r["k"] for r in before if r["t"] == "pack-done"]
    lost = {r["p"] for r in before if r["t"] == "packed" and r["k"] == open_pack["k"]}
    assert lost
    # `status` counts the members of finished packs as done, those of the open one not.
    (line,) = shard_states(run_dir)
    assert line.files_done == sum(1 for r in before if r["t"] == "packed" and r["k"] in finished_before) > 0

    again = run_shard(run_dir, 0)
    assert (again.status, again.failed) == ("done", 0)
    assert again.skipped == sum(1 for r in before if r["t"] == "packed" and r["k"] in finished_before)
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    after = journal_lines(run_dir)
    done_keys = [r["k"] for r in after if r["t"] == "pack-done"]
    assert len(done_keys) == len(set(done_keys))  # no pack done twice
    assert open_pack["k"] not in done_keys
    numbers = [r["n"] for r in after if r["t"] == "pack"]
    assert min(n for n in numbers[len([r for r in before if r["t"] == "pack"]):]) > max(
        r["n"] for r in before if r["t"] == "pack")
    report = merge_run(run_dir)
    assert report.ok and report.data["verified"]["files"] == 500
    assert open_pack["k"] not in listing(bucket)
    members = set()
    for pack in run_packs(bucket, run_dir):
        members |= {os.fsdecode(e.path) for e in index_of(bucket, pack)[1]}
    assert lost <= members and len(members) == 500


def test_sigterm_mid_pack_closes_that_pack_then_the_rerun_packs_the_rest(seaweed_bucket, tmp_path):
    """SIGTERM while a pack is half sent: the task takes no new member, finishes and closes the pack it has (its
    members done), leaves no upload open, and exits 130; the rerun packs only the rest."""
    bucket, client, name = seaweed_bucket, seaweed_bucket.client, seaweed_bucket.name
    root = tmp_path / "data"
    root.mkdir()
    for f in range(400):
        (root / f"f{f:03d}").write_bytes(os.urandom(100 * 1024))
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket), "run")
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": "upload_hooks:slow", "FS3G_TEST_SLOW_S": "0.3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir), "--shard", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    journal = run_dir / "results" / "shard-000000.journal"
    open_pack = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and open_pack is None:
        if journal.exists():
            lines = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("}")]
            finished = {r["k"] for r in lines if r["t"] == "pack-done"}
            started = [r for r in lines if r["t"] == "pack" and r["u"] and r["k"] not in finished]
            if started:
                open_pack = started[-1]
        time.sleep(0.02)
    assert open_pack is not None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopped by SIGTERM" in out, out + err
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    lines = journal_lines(run_dir)
    assert open_pack["k"] in {r["k"] for r in lines if r["t"] == "pack-done"}
    packed = sum(1 for r in lines if r["t"] == "packed")
    assert 0 < packed < 400
    again = run_shard(run_dir, 0)
    assert (again.status, again.failed, again.skipped, again.uploaded) == ("done", 0, packed, 400 - packed)
    report = merge_run(run_dir)
    assert report.ok and report.data["verified"]["files"] == 400


def test_a_file_changed_while_read_is_left_out_of_the_pack_and_reported(bucket, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(6):
        (root / f"keep{i}").write_bytes(b"k" * (i + 1))
    (root / "growing").write_bytes(b"g" * 1000)
    policy_file = write_policy(tmp_path, root, bucket)
    run_dir = plan(tmp_path, policy_file, "run")
    import fs3g_hpc.transfer.uploader as uploader

    real_read_all = uploader._read_all

    def read_and_grow(fd, size):  # every read of `growing` sees the file change under it
        data = real_read_all(fd, size)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/growing"):
            with open(root / "growing", "ab") as f:
                f.write(b"+")
        return data

    monkeypatch.setattr(uploader, "_read_all", read_and_grow)
    outcome = run_shard(run_dir, 0)
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("failed", 6, 1)
    failures = [json.loads(line) for line in
                (run_dir / "results" / "shard-000000.failures.jsonl").read_text().splitlines()]
    assert [(Path(f["path"]).name, f["outcome"]) for f in failures] == [("growing", "changed while read")]
    assert "growing" not in (run_dir / "results" / "shard-000000.journal").read_text()
    (pack,) = run_packs(bucket, run_dir)
    assert sorted(os.path.basename(os.fsdecode(e.path)) for e in index_of(bucket, pack)[1]) == [
        f"keep{i}" for i in range(6)]
    report = merge_run(run_dir)
    assert report.data["verified"]["files"] == 6 and report.data["failed"]["files"] == 1
    catalog = catalog_path(load_policy(policy_file, environ={}))
    assert os.fsencode(str(root / "growing")) not in {e.path for e in read_records(catalog)}


def test_incremental_packs_exactly_the_changed_and_new_files(bucket, tmp_path):
    root = tmp_path / "data"
    helpers.make_tree(root, 3, 10)
    policy_file = write_policy(tmp_path, root, bucket)
    first = plan(tmp_path, policy_file, "first")
    assert run_shard(first, 0).status == "done" and merge_run(first).ok
    (old_pack,) = run_packs(bucket, first)
    changed = [root / "proj00" / "f0001.dat", root / "proj01" / "f0005.dat", root / "proj02" / "f0009.dat"]
    for path in changed:
        path.write_bytes(b"changed " + path.name.encode() * 3)
    added = [root / "proj00" / "new-a", root / "proj02" / "new-b"]
    for path in added:
        path.write_bytes(b"new " + path.name.encode())
    second = plan(tmp_path, policy_file, "second")
    assert run_shard(second, 0).status == "done"
    report = merge_run(second)
    assert report.ok and report.data["verified"]["files"] == 5
    (new_pack,) = run_packs(bucket, second)
    wanted = {os.fsencode(str(p)) for p in changed + added}
    assert {e.path for e in index_of(bucket, new_pack)[1]} == wanted
    policy = load_policy(policy_file, environ={})
    relative_new, relative_old = new_pack[len(PREFIX) + 1:], old_pack[len(PREFIX) + 1:]
    for entry in read_records(catalog_path(policy)):
        if entry.kind is EntryKind.FILE:
            ref = PackRef.decode(entry.location, "catalog")
            assert ref.pack == (relative_new if entry.path in wanted else relative_old), entry.path
    usage = {u.pack: u for u in read_packs_usage(packs_usage_path(policy))}
    assert (usage[relative_old].members, usage[relative_old].live_members) == (30, 27)
    assert (usage[relative_new].members, usage[relative_new].live_members) == (5, 5)
    assert usage[relative_old].live_bytes < usage[relative_old].bytes


def test_a_per_object_lab_switches_to_packs_without_rewriting_an_object(bucket, tmp_path):
    root = tmp_path / "data"
    helpers.make_tree(root, 2, 10)
    objects = write_policy(tmp_path, root, bucket, small_files="objects")
    first = plan(tmp_path, objects, "first")
    assert run_shard(first, 0).status == "done" and merge_run(first).ok
    before = {k: (o["ETag"], o["LastModified"]) for k, o in listing(bucket).items()}
    assert len(before) == 20 and not any(is_pack_key(k) for k in before)

    packs = write_policy(tmp_path, root, bucket, small_files="packs")
    second = plan(tmp_path, packs, "second")
    assert json.loads((second / "plan.json").read_text())["planned"]["files"] == 0
    assert merge_run(second).ok
    (root / "proj00" / "added").write_bytes(b"one new file")
    third = plan(tmp_path, packs, "third")
    assert run_shard(third, 0).status == "done" and merge_run(third).ok
    after = listing(bucket)
    assert {k: (o["ETag"], o["LastModified"]) for k, o in after.items() if k in before} == before
    new = set(after) - set(before)
    assert len(new) == 2 and all(is_pack_key(k) or is_index_key(k) for k in new)
    policy = load_policy(packs, environ={})
    locations = {e.path: e.location for e in read_records(catalog_path(policy)) if e.kind is EntryKind.FILE}
    assert sum(1 for loc in locations.values() if loc) == 1
    assert locations[os.fsencode(str(root / "proj00" / "added"))]
    assert all(not loc for path, loc in locations.items() if not path.endswith(b"/added"))


@pytest.mark.parametrize("pack_class", ["GLACIER"])
def test_pack_storage_class_and_index_in_standard(moto_bucket, tmp_path, pack_class):
    """moto has Glacier behaviour: the pack is in the policy's class, its index in STANDARD, and the merge verifies
    both from the listing."""
    bucket = moto_bucket
    root = tmp_path / "data"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_bytes(os.urandom(100 + i))
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket, extra_storage=f"pack_storage_class: {pack_class}"),
                   "run")
    assert run_shard(run_dir, 0).status == "done"
    (pack,) = run_packs(bucket, run_dir)
    keys = listing(bucket)
    assert keys[pack]["StorageClass"] == pack_class
    assert keys[index_key(pack)].get("StorageClass", "STANDARD") == "STANDARD"
    report = merge_run(run_dir)
    assert report.ok and report.data["verified"]["files"] == 5


def test_a_pack_missing_from_the_bucket_fails_its_members_naming_it(moto_bucket, tmp_path):
    bucket = moto_bucket
    root = tmp_path / "data"
    root.mkdir()
    for i in range(4):
        (root / f"f{i}").write_bytes(b"x" * i)
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket), "run")
    assert run_shard(run_dir, 0).status == "done"
    (pack,) = run_packs(bucket, run_dir)
    bucket.client.delete_object(Bucket=bucket.name, Key=index_key(pack))  # the test's own damage, not fs3g's
    report = merge_run(run_dir)
    assert report.data["failed"]["files"] == 4 and report.data["verified"]["files"] == 0
    reasons = {json.loads(line)["reason"] for line in (run_dir / "failures.jsonl").read_text().splitlines()}
    assert reasons == {f"pack {pack}: its index {index_key(pack)} is not in the bucket"}
