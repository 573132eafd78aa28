"""run-shard against the real endpoints: bytes, metadata, tree hashes, checksums on the wire, faults, resume."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import helpers
import pytest
from botocore.awsrequest import AWSResponse

from fs3g_hpc.config import load_policy
from fs3g_hpc.runs.layout import RunLayout, shard_result_file
from fs3g_hpc.model.checksums import composite_crc32, crc32_b64
from fs3g_hpc.model.keys import KeyClass, decode_path, object_key, parse_key, pathmap_key
from fs3g_hpc.model.objectmeta import parse_ns
from fs3g_hpc.model.records import read_records
from fs3g_hpc.model.s3limits import S3_MAX_OBJECT_BYTES, S3_MAX_PART_BYTES, ObjectTooLarge, part_size_for
from fs3g_hpc.model.sizes import MIB
from fs3g_hpc.model.treehash import tree_hash_reference
from fs3g_hpc.backup.plan import PlanOptions, make_plan
from fs3g_hpc.scan import ScanSettings
from fs3g_hpc.backup.task import run_shard
from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

PREFIX = "labs/uptest"


def write_policy(tmp: Path, root: Path, bucket, **extra: str) -> Path:
    """A lab of the per-object layout (`small_files: objects`): what these tests are about; packs have their own
    (tests/test_packs_backup.py)."""
    storage = ", ".join(filter(None, ["small_files: objects", extra.pop("storage", "")]))
    uploader = extra.pop("uploader", "buffer_size_bytes: 5MiB, large_buffers: 3")
    return helpers.write_policy(tmp, root, bucket, name="uptest", file="lab.yaml", prefix=PREFIX,
                                uploader=f"{uploader}, max_attempts: 10", storage=storage)

def plan(tmp: Path, policy_file: Path, name: str = "run") -> Path:
    policy = load_policy(policy_file, environ={})
    return make_plan(policy, tmp / "runs" / name, PlanOptions(scan=ScanSettings(workers=0))).run_dir


def result(run_dir: Path) -> dict:
    return json.loads(shard_result_file(RunLayout(run_dir), 0).read_text())


def fixture_files(root: Path) -> dict[bytes, bytes]:
    """The sizes the issue names: empty, 1 byte, 131072/131073 (either side of the threshold), multipart, sparse."""
    rng = random.Random(5)
    files = {
        "empty": b"",
        "one": b"x",
        "s131072": rng.randbytes(131072),
        "s131073": rng.randbytes(131073),
        "multi.bin": rng.randbytes(17 * MIB + 3),  # 4 parts of 5 MiB with the test's small buffers
    }
    out = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        out[os.fsencode(str(root / name))] = data
    sparse = root / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(11 * MIB)
        f.seek(7 * MIB)
        f.write(b"island")
    out[os.fsencode(str(sparse))] = sparse.read_bytes()
    return out


def get_bytes(bucket, key: str) -> bytes:
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()


def test_objects_are_byte_identical_with_metadata_and_tree_hashes(bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    files = fixture_files(root)
    os.symlink("one", root / "link")
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    outcome = run_shard(run_dir, 0)
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("done", len(files) + 1, 0)

    for path, data in files.items():
        klass = KeyClass.SMALL if len(data) <= 131072 else KeyClass.LARGE
        key = object_key(PREFIX, klass, path).key
        assert get_bytes(bucket, key) == data, key
        head = bucket.client.head_object(Bucket=bucket.name, Key=key)
        meta = head["Metadata"]
        st = os.stat(path)
        assert parse_ns(meta["mtime"]) == st.st_mtime_ns and int(meta["mode"], 8) == st.st_mode
        assert (meta["owneruid"], meta["groupuid"]) == (str(st.st_uid), str(st.st_gid))
        assert meta["ownername"] == "root" and meta["creator"].startswith("fs3g-hpc/")
        expected_tree = tree_hash_reference(data)
        if len(data) > 5 * MIB:  # multipart: the tree hash is the object's tag
            tags = bucket.client.get_object_tagging(Bucket=bucket.name, Key=key)["TagSet"]
            assert tags == [{"Key": "sha256hashtree", "Value": expected_tree}]
        else:
            assert meta["sha256hashtree"] == expected_tree
    assert hashlib.sha256(b"").hexdigest() == tree_hash_reference(b"")
    link_key = object_key(PREFIX, KeyClass.SYMLINK, os.fsencode(str(root / "link"))).key
    assert get_bytes(bucket, link_key) == b"one"
    journal = (RunLayout(run_dir).run_dir / "results" / "shard-000000.journal").read_text().splitlines()
    assert sum(json.loads(line)["t"] == "done" for line in journal) == len(files) + 1
    assert bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", []) == []

    again = run_shard(run_dir, 0)  # a rerun finds everything done
    assert (again.status, again.uploaded, again.skipped) == ("done", 0, len(files) + 1)


def test_storage_classes_and_archived_object_refused(moto_bucket, tmp_path):
    """moto is the endpoint with Glacier behaviour: large files straight to GLACIER, GET refused until restored."""
    bucket, client, name = moto_bucket, moto_bucket.client, moto_bucket.name
    root = tmp_path / "data"
    root.mkdir()
    (root / "small").write_bytes(b"s" * 100)
    (root / "large").write_bytes(os.urandom(300_000))
    (root / "multi").write_bytes(os.urandom(11 * MIB))
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket, storage="upload_large_to_archive: true"))
    assert run_shard(run_dir, 0).status == "done"
    heads = {n: client.head_object(Bucket=name, Key=object_key(PREFIX, k, os.fsencode(str(root / n))).key)
             for n, k in (("small", KeyClass.SMALL), ("large", KeyClass.LARGE), ("multi", KeyClass.LARGE))}
    assert heads["small"].get("StorageClass", "STANDARD") == "STANDARD"
    assert heads["large"]["StorageClass"] == "GLACIER" and heads["multi"]["StorageClass"] == "GLACIER"
    with pytest.raises(client.exceptions.InvalidObjectState):
        client.get_object(Bucket=name, Key=object_key(PREFIX, KeyClass.LARGE, os.fsencode(str(root / "large"))).key)


def test_hostile_names_round_trip(bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    broot = os.fsencode(str(root))
    names = [b"new\nline", b"bad-\xff\xfe-utf8", b"per%cent", b"back\\slash", b"tab\tspace ", b"caf\xc3\xa9",
             b"L" * 255, b"\xff" * 100]
    paths = []
    for name in names:
        with open(broot + b"/" + name, "wb") as f:
            f.write(name)
        paths.append(broot + b"/" + name)
    deep = broot + b"/" + b"/".join([b"d" * 200] * 6)
    os.makedirs(deep)
    with open(deep + b"/leaf", "wb") as f:
        f.write(b"deep")
    paths.append(deep + b"/leaf")
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    outcome = run_shard(run_dir, 0)
    assert (outcome.status, outcome.failed) == ("done", 0)
    listed = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=PREFIX + "/"):
        for obj in page.get("Contents", []):
            listed[obj["Key"]] = obj["Size"]
    decoded = set()
    for key in listed:
        if key.startswith(f"{PREFIX}/pathmap/"):
            continue
        klass, path, digest = parse_key(PREFIX, key)
        if path is None:  # hashed long key: the exact path is in the pathmap object
            path = get_bytes(bucket, pathmap_key(PREFIX, digest))
            assert hashlib.sha256(path).hexdigest() == digest
        decoded.add(path)
    assert decoded == set(paths)
    assert object_key(PREFIX, KeyClass.SMALL, broot + b"/" + b"L" * 255).long_path_sha256 is None
    escaped = object_key(PREFIX, KeyClass.SMALL, broot + b"/" + b"\xff" * 100)  # 300 bytes once escaped
    assert escaped.long_path_sha256 is not None
    assert get_bytes(bucket, escaped.key) == b"\xff" * 100
    too_long = object_key(PREFIX, KeyClass.SMALL, deep + b"/leaf")  # over 1,024 bytes
    assert too_long.long_path_sha256 is not None and get_bytes(bucket, too_long.key) == b"deep"
    assert decode_path("x/new%0Aline%FF") == b"/x/new\nline\xff"


def _with_hooks(register):
    def factory(policy):
        client = make_s3_client(ClientSettings.from_policy(policy))
        register(client)
        return client
    return factory


def test_part_damaged_in_flight_is_sent_again(seaweed_bucket, tmp_path):
    """SeaweedFS checks the CRC32: a body altered after the checksum was computed is refused, then sent again."""
    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    data = os.urandom(12 * MIB)
    (root / "big").write_bytes(data)
    (root / "small").write_bytes(b"tiny")
    damaged = []

    def damage_once(request, **_):
        if damaged or request.body is None:
            return
        raw = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
        if hasattr(request.body, "seek"):
            request.body.seek(0)
        request.body = bytes([raw[0] ^ 0xFF]) + raw[1:]
        damaged.append(request.url)

    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    factory = _with_hooks(lambda c: c.meta.events.register("before-send.s3.UploadPart", damage_once))
    outcome = run_shard(run_dir, 0, client_factory=factory)
    assert len(damaged) == 1
    assert (outcome.status, outcome.failed) == ("done", 0)
    assert get_bytes(bucket, object_key(PREFIX, KeyClass.LARGE, os.fsencode(str(root / "big"))).key) == data


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def test_injected_503s_still_upload_everything(bucket, tmp_path):
    """20 % of requests answered 503 SlowDown before they reach the server: retries carry every file through."""
    root = tmp_path / "data"
    root.mkdir()
    files = {}
    for i in range(60):
        data = os.urandom(random.Random(i).randint(0, 4000))
        (root / f"f{i:03d}").write_bytes(data)
        files[root / f"f{i:03d}"] = data
    big = os.urandom(16 * MIB)
    (root / "big").write_bytes(big)
    rng = random.Random(42)
    lock = threading.Lock()
    injected = []

    def slow_down(request, **_):
        with lock:
            hit = rng.random() < 0.2
        if hit:
            injected.append(request.url)
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Raw(body))
        return None

    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    outcome = run_shard(run_dir, 0, client_factory=_with_hooks(
        lambda c: c.meta.events.register("before-send.s3", slow_down)))
    assert len(injected) > 10
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("done", 61, 0)
    for path, data in files.items():
        assert get_bytes(bucket, object_key(PREFIX, KeyClass.SMALL, os.fsencode(str(path))).key) == data
    assert get_bytes(bucket, object_key(PREFIX, KeyClass.LARGE, os.fsencode(str(root / "big"))).key) == big


def test_vanished_and_changed_files_are_reported_and_the_shard_goes_on(bucket, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(5):
        (root / f"keep{i}").write_bytes(b"k" * i)
    (root / "gone").write_bytes(b"soon gone")
    (root / "growing").write_bytes(b"g" * 1000)
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    (root / "gone").unlink()
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
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("failed", 5, 2)
    failures = [json.loads(line) for line in
                (run_dir / "results" / "shard-000000.failures.jsonl").read_text().splitlines()]
    assert sorted((Path(f["path"]).name, f["outcome"]) for f in failures) == [
        ("gone", "vanished"), ("growing", "changed while read")]
    done = result(run_dir)
    assert done["status"] == "failed" and done["failed"] == 2
    # Never recorded as backed up:
    journal = (run_dir / "results" / "shard-000000.journal").read_text()
    assert "growing" not in journal and "gone" not in journal


def test_cli_exit_codes_and_shard_from_slurm_env(bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "done: 1 uploaded" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir), "--shard", "7"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (f"fs3g: error: {run_dir / 'plan.json'}: shard 7 does not exist "
                                  "(the plan has 1 shards: 0-0)")
    (root / "a").unlink()
    (root / "b").write_bytes(b"b")
    run2 = plan(tmp_path, write_policy(tmp_path, root, bucket), "second")
    (root / "b").unlink()
    failed = subprocess.run([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run2), "--shard", "0"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "1 failed" in failed.stdout


def _parts_on_server(client, bucket: str, key: str, upload_id: str) -> int:
    return len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_mid_multipart_then_rerun_sends_no_part_twice(how, seaweed_bucket, tmp_path):
    """A real kill of the task while a multipart upload is half sent; the rerun continues the same upload."""
    bucket, client, name = seaweed_bucket, seaweed_bucket.client, seaweed_bucket.name
    root = tmp_path / "data"
    root.mkdir()
    data = os.urandom(5 * MIB) * 40  # 40 parts of 5 MiB (repeated content keeps the test fast to write)
    (root / "huge").write_bytes(data)
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket, uploader="buffer_size_bytes: 5MiB, large_buffers: 2"))
    key = object_key(PREFIX, KeyClass.LARGE, os.fsencode(str(root / "huge"))).key
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "run-shard", str(run_dir), "--shard", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = run_dir / "results" / "shard-000000.journal"
    upload_id = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if upload_id is None and journal.exists():
            for line in journal.read_text().splitlines():
                record = json.loads(line)
                if record["t"] == "mpu":
                    upload_id = record["u"]
        if upload_id is not None and _parts_on_server(client, name, key, upload_id) >= 4:
            break
        time.sleep(0.02)
    assert upload_id is not None, proc.communicate()
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    held = _parts_on_server(client, name, key, upload_id)
    assert 4 <= held < 40, f"killed too late to test a resume: {held} parts"
    if how == "SIGTERM":
        assert proc.returncode == 130 and "stopped by SIGTERM" in out
        assert result(run_dir)["status"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=name).get("Uploads", [])] == [upload_id]

    again = run_shard(run_dir, 0)
    assert (again.status, again.uploaded, again.failed) == ("done", 1, 0)
    summary = result(run_dir)
    # Every part the server held was kept (a part still arriving when the task died may have landed since)...
    assert summary["parts_reused"] >= held
    # ...and only the others were sent, once each: 40 parts in all.
    assert summary["parts_reused"] + summary["parts_sent"] == 40
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    assert hashlib.sha256(get_bytes(bucket, key)).digest() == hashlib.sha256(data).digest()
    tags = client.get_object_tagging(Bucket=name, Key=key)["TagSet"]
    assert tags == [{"Key": "sha256hashtree", "Value": tree_hash_reference(data)}]


# --- pure rules -------------------------------------------------------------------------------------------------------

def test_part_size_rule_up_to_the_largest_object():
    buffer = 40 * MIB
    assert part_size_for(0, buffer) == buffer
    assert part_size_for(390 * 1024 * MIB, buffer) == buffer  # 10,000 × 40 MiB = 390.6 GiB: the old cap
    assert part_size_for(400 * 1024 * MIB, buffer) == 41 * MIB  # past it, parts grow instead of failing
    assert part_size_for(10_000 * buffer, buffer) == buffer
    over = 10_000 * buffer + 1
    assert part_size_for(over, buffer) == 41 * MIB  # grown to whole MiB
    for size in (10**12, 5 * 2**40, 20 * 2**40, S3_MAX_OBJECT_BYTES - 1, S3_MAX_OBJECT_BYTES):
        part = part_size_for(size, buffer)
        assert part % MIB == 0 and 5 * MIB <= part <= S3_MAX_PART_BYTES
        assert -(-size // part) <= 10_000, size
    assert part_size_for(S3_MAX_OBJECT_BYTES, buffer) == S3_MAX_PART_BYTES
    with pytest.raises(ObjectTooLarge, match="largest object"):
        part_size_for(S3_MAX_OBJECT_BYTES + 1, buffer)


def test_composite_checksum_matches_s3s_rule():
    parts = [b"a" * 10, b"b" * 7]
    assert composite_crc32([crc32_b64(p) for p in parts]).endswith("-2")
    assert composite_crc32([crc32_b64(b"x")]) != crc32_b64(b"x")


def test_part_checksum_is_the_standard_crc32_whichever_implementation_computes_it():
    """ISA-L's CRC32 (the `fast` extra) and the standard library's give S3 the same checksum, for every buffer type
    the uploader hands over (a part's memoryview of a reused bytearray included), and so does a process forced to the
    standard library (FS3G_NO_ISAL=1)."""
    import base64
    import subprocess
    import sys
    import zlib

    data = os.urandom(3 * MIB + 17)
    want = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    buffer = bytearray(4 * MIB)
    buffer[:len(data)] = data
    assert crc32_b64(data) == crc32_b64(bytearray(data)) == crc32_b64(memoryview(buffer)[:len(data)]) == want
    code = ("import sys; from fs3g_hpc.model import zlibs; from fs3g_hpc.model.checksums import crc32_b64; "
            "assert not zlibs.ACCELERATED; print(crc32_b64(sys.stdin.buffer.read()))")
    forced = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                            env={**os.environ, "FS3G_NO_ISAL": "1"}, check=True)
    assert forced.stdout.decode().strip() == want


def test_file_whose_parts_exceed_the_memory_budget_is_reported_not_buffered(bucket, tmp_path):
    """A 60 GB sparse file needs 6 MiB parts; a 1 × 1 × 5 MiB buffer budget cannot hold one: reported, not read."""
    root = tmp_path / "data"
    root.mkdir()
    with open(root / "sparse-60g", "wb") as f:
        f.truncate(60 * 10**9)
    (root / "ok").write_bytes(b"fine")
    policy = write_policy(tmp_path, root, bucket,
                          uploader="buffer_size_bytes: 5MiB, large_buffers: 1, large_workers: 1")
    run_dir = plan(tmp_path, policy)
    outcome = run_shard(run_dir, 0)
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("failed", 1, 1)
    failure = json.loads((run_dir / "results" / "shard-000000.failures.jsonl").read_text())
    assert failure["outcome"] == "failed" and "needs 6291456-byte parts" in failure["detail"]
    assert "large_buffers" in failure["detail"]


def test_merge_verifies_against_the_bucket_and_writes_the_catalog(bucket, tmp_path):
    """Two shards, one never run: the merge fails its files by name; after the rerun all verify, exit 0, and the
    next plan finds nothing to do. A journaled object missing from the bucket is caught too."""
    from fs3g_hpc.runs.catalog import catalog_path
    from fs3g_hpc.backup.merge import merge_run

    root = tmp_path / "data"
    for d in range(4):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(10):
            (root / f"d{d}" / f"f{f}").write_bytes(os.urandom(f * 100))
    policy_file = write_policy(tmp_path, root, bucket)
    policy_file.write_text(policy_file.read_text() + "shards: {max_files: 20}\n")
    run_dir = plan(tmp_path, policy_file)
    assert json.loads((run_dir / "plan.json").read_text())["shard_count"] == 2
    assert run_shard(run_dir, 0).status == "done"

    first = merge_run(run_dir)
    assert not first.ok
    assert (first.data["verified"]["files"], first.data["failed"]["files"]) == (20, 20)
    assert first.data["shard_states"] == {"done": 1, "never reported": 1}
    reasons = {json.loads(l)["reason"] for l in (run_dir / "failures.jsonl").read_text().splitlines()}
    assert reasons == {"not backed up: shard 1 never reported"}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "merge", str(run_dir)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "failed    20 files" in proc.stdout and "to retry" in proc.stdout

    assert run_shard(run_dir, 1).status == "done"
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "merge", str(run_dir)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((run_dir / "report.json").read_text())
    directories = 1 + sum(p.is_dir() for p in root.rglob("*"))  # the catalog records them too (no object)
    assert (report["verified"]["files"], report["failed"]["files"], report["catalog"]["entries"]) == (
        40, 0, 40 + directories)
    policy = load_policy(policy_file, environ={})
    assert catalog_path(policy).is_file()
    again = make_plan(policy, tmp_path / "runs" / "again",
                      PlanOptions(catalog=catalog_path(policy), scan=ScanSettings(workers=0)))
    assert again.header["planned"]["files"] == 0

    (root / "d0" / "f3").write_bytes(b"changed!")
    third = make_plan(policy, tmp_path / "runs" / "third",
                      PlanOptions(catalog=catalog_path(policy), scan=ScanSettings(workers=0)))
    assert third.header["planned"]["files"] == 1
    assert run_shard(third.run_dir, 0).status == "done"
    key = object_key(PREFIX, KeyClass.SMALL, os.fsencode(str(root / "d0" / "f3"))).key
    bucket.client.delete_object(Bucket=bucket.name, Key=key)  # lost after the upload
    lost = merge_run(third.run_dir)
    assert lost.data["failed"]["files"] == 1
    reason = json.loads((third.run_dir / "failures.jsonl").read_text())["reason"]
    assert reason == f"journaled as backed up but {key} is not in the bucket"


def test_noop_incremental_backup_runs_in_one_process_without_the_bucket(bucket, tmp_path):
    """`fs3g backup --executor local` with nothing to upload: the merge runs in the same process and writes no data
    object (the catalog already says everything); a deletion on disk still reaches the catalog, and its bucket
    snapshot; a run where nothing changed at all writes no snapshot either (the plan only lists catalog/)."""
    root = tmp_path / "data"
    root.mkdir()
    for f in range(30):
        (root / f"f{f}").write_bytes(os.urandom(f * 10))
    policy_file = write_policy(tmp_path, root, bucket)
    first = subprocess.run([sys.executable, "-m", "fs3g_hpc", "backup", "--config", str(policy_file),
                            "--executor", "local", "--wait"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    (root / "f3").unlink()
    probe = textwrap.dedent(f"""\
        import subprocess, sys
        def no_child(*args, **kwargs):
            raise AssertionError(f"started a process: {{args}}")
        subprocess.Popen = subprocess.run = no_child
        from fs3g_hpc.cli import main
        code = main(["backup", "--config", {str(policy_file)!r}, "--executor", "local", "--wait"])
        print("exit", code)
        """)

    def objects() -> tuple[dict, list]:
        listed = bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", [])
        return ({o["Key"]: (o["ETag"], o["LastModified"]) for o in listed if "/catalog/" not in o["Key"]},
                sorted(o["Key"] for o in listed if "/catalog/" in o["Key"]))

    data_before, snapshots_before = objects()
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to upload" in again.stdout and again.stdout.rstrip().endswith("exit 0"), again.stdout
    data_after, snapshots_after = objects()
    assert data_after == data_before and len(snapshots_after) == len(snapshots_before) + 2  # chunk + manifest
    runs = sorted((tmp_path / "runs" / "uptest").glob("uptest-*"))
    report = json.loads((runs[-1] / "report.json").read_text())
    # 29 files and the root directory
    assert (report["planned"]["files"], report["deleted"]["files"], report["catalog"]["entries"]) == (0, 1, 30)
    assert not (runs[-1] / "logs" / "shard-local-0.out").exists()

    # Nothing changed at all now: the catalog is kept as it is (same inode), not rewritten, and still counted.
    catalog = tmp_path / "runs" / "uptest" / "catalog.rec"
    before = catalog.stat()
    third = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.rstrip().endswith("exit 0"), third.stdout + third.stderr
    assert objects() == (data_after, snapshots_after)
    report = json.loads((sorted((tmp_path / "runs" / "uptest").glob("uptest-*"))[-1] / "report.json").read_text())
    assert (report["planned"]["files"], report["deleted"]["files"], report["catalog"]["entries"]) == (0, 0, 30)
    assert (catalog.stat().st_ino, catalog.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [e.path for e in read_records(catalog)] == [os.fsencode(str(root))] + sorted(
        os.fsencode(str(p)) for p in root.iterdir())


def _backup_with_hook(tmp_path: Path, bucket, hook: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`fs3g backup --executor local --wait` of 12 files with `hook` (tests/upload_hooks.py) aimed at f07.dat."""
    root = tmp_path / "data"
    root.mkdir()
    for i in range(12):
        (root / f"f{i:02d}.dat").write_bytes(os.urandom(100 + i))
    policy_file = write_policy(tmp_path, root, bucket)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    tests_dir = Path(__file__).resolve().parent
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": f"upload_hooks:{hook}", "FS3G_TEST_HOOK_DIR": str(hooks),
           "FS3G_TEST_REFUSE_KEY": "f07.dat",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "backup", "--config", str(policy_file), "--executor",
                           "local", "--wait"], capture_output=True, text=True, timeout=300, env=env)
    return proc, root, hooks


def test_local_backup_retries_a_failed_file_in_a_new_run_and_exits_0(bucket, tmp_path):
    """A file damaged in flight on every send of the shard process (transient) fails the first run; the merge (in
    the calling process) plans a retry of exactly that file, runs it locally, and the backup ends with exit 0."""
    proc, root, hooks = _backup_with_hook(tmp_path, bucket, "damage_in_first_process")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "retry 1: 1 files in 1 shards" in proc.stdout, proc.stdout
    assert len((hooks / "damaged.txt").read_text().splitlines()) == 1
    runs = sorted((tmp_path / "runs" / "uptest").glob("uptest-*"))
    first = json.loads((runs[0] / "report.json").read_text())
    assert (first["verified"]["files"], first["failed"]["files"], first["retry"]["exit"]) == (11, 1, 0)
    assert first["failed_retryable"]["files"] == 1
    failure = json.loads((runs[0] / "failures.jsonl").read_text())
    assert failure["path"].endswith("f07.dat") and "BadDigest" in failure["reason"] and failure["retryable"]
    retry = json.loads((Path(first["retry"]["run_dir"]) / "report.json").read_text())
    assert (retry["verified"]["files"], retry["failed"]["files"], retry["catalog"]["entries"]) == (1, 0, 12 + 1)
    key = object_key(PREFIX, KeyClass.SMALL, os.fsencode(str(root / "f07.dat"))).key
    assert get_bytes(bucket, key) == (root / "f07.dat").read_bytes()


def test_permanent_failures_start_no_retry_round(bucket, tmp_path):
    """A file refused with 403 AccessDenied: a retry would get the same answer, so the merge starts no retry round
    (no retry-N directory, no second shard process) and says why; exit 1."""
    proc, _root, hooks = _backup_with_hook(tmp_path, bucket, "refuse_once")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "retry 1" not in proc.stdout and "none of these failures is one a retry can mend" in proc.stdout
    runs = sorted((tmp_path / "runs" / "uptest").glob("uptest-*"))
    assert len(runs) == 1 and not list(runs[0].glob("retry-*")), runs
    report = json.loads((runs[0] / "report.json").read_text())
    assert (report["failed"]["files"], report["failed_retryable"]["files"]) == (1, 0) and "retry" not in report
    failure = json.loads((runs[0] / "failures.jsonl").read_text())
    assert "AccessDenied" in failure["reason"] and failure["retryable"] is False
    shard_failure = json.loads((runs[0] / "results" / "shard-000000.failures.jsonl").read_text())
    assert shard_failure["retryable"] is False
