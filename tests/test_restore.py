"""Restores: path safety, the local executor on both endpoints, crafted keys, a full disk, and a Glacier restore on
the Slurm cluster whose poll job re-schedules itself with --begin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import botocore.exceptions
import pytest

from fs3g_hpc.config import load_policy
from fs3g_hpc.runs.catalog import catalog_path
from fs3g_hpc.model.records import EntryKind, read_records
from fs3g_hpc.model.treehash import tree_hash
from fs3g_hpc.restore.destination import Destination
from fs3g_hpc.restore.paths import Refused, Selection, unsafe_reason

import helpers
from conftest import REPO
from helpers import SMALL_SLURM, fs3g, read_report

MIB = 1024 * 1024
T0 = 1_600_000_000_123_456_789  # mtimes with nanoseconds, to see them come back exactly


def make_tree(root: Path, *, newline_names: bool) -> None:
    """Small files, large ones (single PUT and multipart), symlinks, odd modes and hostile names."""
    r = os.fsencode(root)
    os.makedirs(r + b"/proj/deep/er", exist_ok=True)
    os.makedirs(r + b"/weird", exist_ok=True)
    files = {
        b"/proj/a.txt": b"alpha\n",
        b"/proj/empty": b"",
        b"/proj/deep/er/b.bin": os.urandom(70_000),
        b"/proj/large-single.bin": os.urandom(300 * 1024),  # over the 128 KiB threshold, one PUT
        b"/proj/large-multi.bin": os.urandom(11 * MIB + 12345),  # three 5 MiB parts
        b"/weird/with space": b"space",
        b"/weird/tab\there": b"tab",
        b"/weird/back\\slash%41": b"percent and backslash",
        b"/weird/\xff\xfeinvalid-utf8": b"latin",
        b"/weird/" + b"n" * 250: b"long name",
    }
    if newline_names:
        files[b"/weird/new\nline"] = b"newline"
    for i, (rel, data) in enumerate(sorted(files.items())):
        path = r + rel
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, (0o640, 0o755, 0o600, 0o444)[i % 4])
        os.utime(path, ns=(T0 + i, T0 + 1000 * i))
    if os.geteuid() == 0:  # as root the restore puts owners back: give one file to someone else
        os.chown(r + b"/proj/a.txt", 65534, 65534)
    os.symlink(b"../a.txt", r + b"/proj/deep/rel-link")
    os.symlink(b"/etc/passwd", r + b"/weird/abs-link")
    os.symlink(b"does/not/exist", r + b"/weird/dangling")
    os.utime(r + b"/proj/deep/rel-link", ns=(T0, T0 + 77), follow_symlinks=False)


def assert_same_tree(src: Path, dst: Path) -> int:
    """Every file and symlink of src is in dst with the same bytes, mtime (ns) and mode; returns the count."""
    count = 0
    s = os.fsencode(src)
    for directory, dirs, names in os.walk(s):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            a = os.path.join(directory, name)
            b = os.fsencode(dst) + a[len(s):]
            sa, sb = os.lstat(a), os.lstat(b)
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), a
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b), a
            else:
                assert open(a, "rb").read() == open(b, "rb").read(), a
                assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), a
            assert sa.st_mtime_ns == sb.st_mtime_ns, a
            if os.geteuid() == 0:
                assert (sa.st_uid, sa.st_gid) == (sb.st_uid, sb.st_gid), a
            count += 1
    return count


def write_policy(tmp: Path, name: str, root: Path, bucket, extra: str = "", layout: str = "objects") -> Path:
    """A lab in the per-object layout (`small_files: objects`) unless `layout` says packs; an `extra` storage section
    gets the setting too."""
    extra = textwrap.dedent(extra)
    storage = {} if "storage: {" in extra else {"storage": f"small_files: {layout}"}
    return helpers.write_policy(tmp, root, bucket, name=name, prefix=f"labs/{name}", shards="max_files: 6",
                                uploader="buffer_size_bytes: 5MiB, large_buffers: 4", slurm=SMALL_SLURM,
                                memory_budget_bytes="2GiB", extra=extra.replace("storage: {",
                                                                                f"storage: {{small_files: {layout}, "),
                                **storage)

def backup(policy: Path) -> None:
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- pure parts ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relative", [b"../x", b"a/../../x", b"/abs", b"a//b", b".", b"a/./b", b"a\0b", b"", b"a/"])
def test_unsafe_relative_paths_are_named(relative):
    assert unsafe_reason(relative)


def test_selection_maps_below_the_requested_directory_and_refuses_escapes():
    one = Selection(["/data/lab/proj"])
    assert one.relative(b"/data/lab/proj/a/b") == b"a/b"
    assert one.covers(b"/data/lab/proj/x") and not one.covers(b"/data/lab/project/x")
    with pytest.raises(Refused):
        one.relative(b"/data/lab/proj/../../../etc/passwd")
    with pytest.raises(Refused):
        one.relative(b"/data/lab/proj/a//b")
    single_file = Selection(["/data/lab/proj/file.txt"])
    assert single_file.relative(b"/data/lab/proj/file.txt") == b"file.txt"
    several = Selection(["/data/lab/a", "/data/lab/b/c"])
    assert several.relative(b"/data/lab/b/c/x") == b"b/c/x"
    assert Selection(["/"]).relative(b"/etc/x") == b"etc/x"


def test_destination_never_follows_a_symlink_it_finds(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    d = Destination(dest)
    try:
        with pytest.raises(Refused):
            d.parent(b"sub/file")
        fd, name = d.parent(b"new/dir/file")
        os.close(fd)
        assert name == b"file" and (dest / "new" / "dir").is_dir()
    finally:
        d.close()
    assert list(outside.iterdir()) == []


# -- local executor, both endpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["objects", "packs"])
def test_local_restore_round_trip_then_skip_then_overwrite(bucket, tmp_path, layout):
    """The hostile-name tree, byte for byte, through per-object keys and through packs."""
    root = tmp_path / "data"
    make_tree(root, newline_names=bucket.endpoint_name != "moto")  # moto cannot store keys with a newline
    policy = write_policy(tmp_path, "rst", root, bucket, layout=layout)
    backup(policy)
    # The catalog carries each file's tree hash: what restore and compare --check-sha256 verify against.
    records = {e.path: e for e in read_records(catalog_path(load_policy(policy)))}
    big = os.fsencode(root) + b"/proj/large-multi.bin"
    assert records[big].tree_hash.hex() == tree_hash(open(big, "rb").read())
    # Packs hold every small file and symlink (the large file keeps its object); objects hold none.
    small = [e for e in records.values() if e.kind is EntryKind.SYMLINK or (
        e.kind is EntryKind.FILE and e.size_bytes <= 128 * 1024)]
    assert small and all(bool(e.location) is (layout == "packs") for e in small)
    assert not records[big].location

    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = assert_same_tree(root, dest)
    run = max((tmp_path / "runs" / "rst").glob("restore-*"))
    report = read_report(run)
    assert report["restored"]["files"] == count == report["planned"]["files"]
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    # A task run again (a requeue) skips what its journal recorded.
    proc = fs3g("restore-shard", str(run), "--shard", "0")
    assert proc.returncode == 0 and " 0 restored" in proc.stdout, proc.stdout + proc.stderr

    # The same restore again: nothing downloaded, everything found in place.
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = read_report(max((tmp_path / "runs" / "rst").glob("restore-*")))
    assert again["restored"]["files"] == 0 and again["already_present"] == count

    # A changed file is not overwritten without --overwrite; it is named; the others stay restored.
    changed = dest / "proj" / "a.txt"
    changed.write_bytes(b"local edit\n")
    proc = fs3g("restore", "--config", str(policy), str(root / "proj"), "--dest", str(dest / "proj"),
                "--executor", "local")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "a.txt" in proc.stdout and "--overwrite" in proc.stdout
    assert changed.read_bytes() == b"local edit\n"
    proc = fs3g("restore", "--config", str(policy), str(root / "proj"), "--dest", str(dest / "proj"),
                "--executor", "local", "--overwrite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, dest)
    assert not list(dest.rglob(".fs3g-restore-*"))


@pytest.mark.parametrize("layout", ["objects", "packs"])
def test_restore_of_a_subdirectory_goes_below_the_destination(seaweed_bucket, tmp_path, layout):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "sub", root, seaweed_bucket, layout=layout)
    backup(policy)
    dest = tmp_path / "only-deep"
    proc = fs3g("restore", "--config", str(policy), str(root / "proj" / "deep"), "--dest", str(dest),
                "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in dest.rglob("*")) == ["b.bin", "er", "rel-link"]
    assert_same_tree(root / "proj" / "deep", dest)


# -- crafted keys --------------------------------------------------------------------------------------------------------

def test_crafted_keys_from_the_bucket_are_refused_and_nothing_is_written_outside(moto_bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    policy = write_policy(tmp_path, "craft", root, moto_bucket)
    prefix = f"labs/craft/smallfile{root}"
    data = b"payload"
    meta = {"mtime": "1600000000.000000000", "mode": "100644", "sha256hashtree": tree_hash(data)}
    keys = {
        f"{prefix}/ok/fine.txt": True,
        f"{prefix}/%2E%2E/%2E%2E/escaped-encoded": False,  # %2E%2E decodes to ..
        f"{prefix}/a/../../../escaped-raw": False,
        f"{prefix}//etc/empty-segment": False,
        f"{prefix}/ok/./dot": False,
    }
    for key in keys:
        moto_bucket.client.put_object(Bucket=moto_bucket.name, Key=key, Body=data, Metadata=meta)
    arena = tmp_path / "arena"
    dest = arena / "dest"
    arena.mkdir()
    # No catalog for this lab: the restore selects from the bucket listing.
    assert not catalog_path(load_policy(policy)).exists()
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = max((tmp_path / "runs" / "craft").glob("restore-*"))
    refused = [json.loads(line) for line in (run / "refused.jsonl").read_text().splitlines()]
    assert len(refused) == 4, refused
    assert read_report(run)["refused"] == 4
    assert (dest / "ok" / "fine.txt").read_bytes() == data
    written = sorted(str(p.relative_to(arena)) for p in arena.rglob("*"))
    assert written == ["dest", "dest/ok", "dest/ok/fine.txt"]
    assert not (tmp_path / "escaped-raw").exists() and not (tmp_path / "escaped-encoded").exists()


# -- a full disk -------------------------------------------------------------------------------------------------------

def test_full_disk_gives_a_clear_error_and_leaves_no_partial_file(seaweed_bucket, tmp_path):
    assert os.geteuid() == 0, "this test mounts a small tmpfs: run it as root (CI does)"
    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    (root / "d" / "big.bin").write_bytes(os.urandom(3 * MIB))
    for i in range(5):
        (root / "d" / f"s{i}").write_bytes(os.urandom(1000))
    policy = write_policy(tmp_path, "full", root, seaweed_bucket)
    backup(policy)
    dest = tmp_path / "tiny"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(dest)], check=True)
    try:
        proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        run = max((tmp_path / "runs" / "full").glob("restore-*"))
        failures = [json.loads(line) for line in (run / "failures.jsonl").read_text().splitlines()]
        big = [f for f in failures if f["path"].endswith("big.bin")]
        assert big and "no space left" in big[0]["reason"], failures
        assert not (dest / "d" / "big.bin").exists()
        assert not list(dest.rglob(".fs3g-restore-*"))
    finally:
        subprocess.run(["umount", str(dest)], check=True)


# -- Glacier on the cluster -----------------------------------------------------------------------------------------------

def test_deep_archive_restore_through_slurm_polls_with_begin_until_ready(slurm_cluster, moto_bucket, shared_tmp):
    root = shared_tmp / "data"
    make_tree(root, newline_names=False)
    policy = write_policy(shared_tmp, "glac", root, moto_bucket, """\
        storage: {archive_storage_class: DEEP_ARCHIVE, upload_large_to_archive: true}
        restore: {tier: Standard, days: 2, poll_interval_s: 5}
        """)
    backup(policy)
    large = [o for o in moto_bucket.client.list_objects_v2(Bucket=moto_bucket.name, Prefix="labs/glac/largefile/")
             ["Contents"]]
    assert len(large) == 2 and {o["StorageClass"] for o in large} == {"DEEP_ARCHIVE"}
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        moto_bucket.client.get_object(Bucket=moto_bucket.name, Key=large[0]["Key"])
    assert refused.value.response["Error"]["Code"] == "InvalidObjectState"

    proc = fs3g("restore", "--config", str(policy), "--tier", "Expedited", "--executor", "slurm")
    assert proc.returncode == 2 and "Expedited" in proc.stderr and "\n" not in proc.stderr.strip()

    hooks = shared_tmp / "hooks"
    hooks.mkdir()
    env = {**os.environ, "FS3G_BOTOCORE_HOOK": "restore_hooks:install", "FS3G_TEST_HOOK_DIR": str(hooks),
           "FS3G_TEST_IN_PROGRESS_POLLS": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    dest = shared_tmp / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "slurm", "--wait", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, dest)

    requested = [json.loads(line)["key"] for line in (hooks / "restore-keys.jsonl").read_text().splitlines()]
    assert sorted(requested) == sorted(o["Key"] for o in large)  # once per archived object, never again
    run = max((shared_tmp / "runs" / "glac").glob("restore-*"))
    chain = json.loads((run / "jobs" / "chain.json").read_text())
    assert len(chain["stages"]) == 3, chain  # two polls saw "in progress", the third found them ready
    # Every poll after the first was deferred with --begin: eligible later than submitted, holding no node meanwhile.
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(chain["stages"]),
                          "--format=JobID,JobName,Submit,Eligible,State"], capture_output=True, text=True,
                         check=True).stdout
    rows = {line.split("|")[0]: line.split("|") for line in out.splitlines()}
    for job in chain["stages"][1:]:
        _, name, submitted, eligible, state = rows[job]
        assert name == "fs3g-glac-restore-poll" and state == "COMPLETED"
        assert eligible > submitted, rows[job]
    report = read_report(run)
    assert report["stage"]["requested"] == 2 and report["stage"]["polls"] == 3
    # Served after the restore.
    assert moto_bucket.client.get_object(Bucket=moto_bucket.name, Key=large[0]["Key"])["ContentLength"] > 0


def test_direct_get_maps_archive_missing_and_changed_objects(moto_bucket):
    from fs3g_hpc.transfer.downloader import DirectGetter, DownloadError, NotRestored, ObjectMissing

    c, name = moto_bucket.client, moto_bucket.name
    c.put_object(Bucket=name, Key="cold", Body=b"x" * 10, StorageClass="DEEP_ARCHIVE")
    c.put_object(Bucket=name, Key="warm", Body=b"0123456789", Metadata={"mtime": "1.000000002"})
    getter = DirectGetter(c, max_attempts=2)
    assert getter.available
    # SigV4 even in us-east-1, where botocore would presign with SigV2 (refused for buckets made since 2020).
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in c.generate_presigned_url("get_object", Params={"Bucket": name,
                                                                                                 "Key": "warm"})
    whole = getter.get_whole(name, "warm")
    assert (whole.data, whole.metadata["mtime"]) == (b"0123456789", "1.000000002")
    etag = c.head_object(Bucket=name, Key="warm")["ETag"].strip('"')
    buffer = bytearray(3)  # pieces fill the buffer whole, the last one excepted; each a view of it
    assert [bytes(v) for v in getter.get_range_into(name, "warm", 2, 5, etag, buffer)] == [b"234", b"56"]
    assert [bytes(v) for v in getter.get_range_into(name, "warm", 0, 10, etag, bytearray(5))] == [b"01234", b"56789"]
    for _ in range(3):  # a range left mid-body (a failed write) leaves no half-read connection to the next request
        pieces = getter.get_range_into(name, "warm", 0, 10, etag, bytearray(2))
        assert bytes(next(pieces)) == b"01"
        pieces.close()
        assert [bytes(v) for v in getter.get_range_into(name, "warm", 4, 3, etag, buffer)] == [b"456"]
    with pytest.raises(NotRestored):
        getter.get_whole(name, "cold")
    with pytest.raises(ObjectMissing):
        getter.get_whole(name, "nothing-here")
    with pytest.raises(DownloadError, match="412"):  # another version than the one the ranges started on
        list(getter.get_range_into(name, "warm", 0, 5, "0" * 32, buffer))


def test_part_writeback_starts_through_libc(tmp_path):
    """sync_file_range is found on Linux (the os module lacks it) and accepts a written range; the data is intact."""
    from fs3g_hpc.restore.destination import start_writeback, sync_file_range

    assert sync_file_range() is not None
    path = tmp_path / "part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"x" * 65536, 0)
        start_writeback(fd, 0, 65536)
        assert sync_file_range()(fd, 0, 65536, 2) == 0
        assert sync_file_range()(-1, 0, 1, 2) == -1  # a real call: a bad descriptor is refused
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 65536


class DamagingProxy:
    """A TCP proxy to an endpoint that flips one byte of every server-to-client stream that reaches `at` bytes: a
    ranged GET's body damaged in flight (headers and small answers pass untouched). `at=-1` damages nothing; while
    `delay_s` is set, each piece sent to the client waits that long first (a slow link)."""

    def __init__(self, upstream: str, at: int, delay_s: float = 0.0):
        import socket
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.at = at
        self.delay_s = delay_s
        self.damaged = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, damage: bool) -> None:
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if damage and self.delay_s:
                    time.sleep(self.delay_s)
                if damage and seen <= self.at < seen + len(data):
                    data = bytearray(data)
                    data[self.at - seen] ^= 0xFF
                    with self.lock:
                        self.damaged += 1
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def test_a_range_damaged_in_flight_is_refused_and_never_renamed_into_place(seaweed_bucket, tmp_path):
    """A multipart large file whose ranged GETs come back with a flipped byte (a proxy between the restore and the
    endpoint): the tree hash check refuses it, the file is named as failed, no temporary file is left and nothing is
    at the target; the same restore straight from the endpoint then restores it byte for byte."""
    root = tmp_path / "data"
    root.mkdir()
    big = root / "big.bin"
    big.write_bytes(os.urandom(11 * MIB + 12345))  # three 5 MiB parts
    policy = write_policy(tmp_path, "dmg", root, seaweed_bucket)
    backup(policy)
    proxy = DamagingProxy(seaweed_bucket.endpoint_url, at=3 * MIB)
    try:
        via_proxy = tmp_path / "via-proxy.yaml"
        via_proxy.write_text(policy.read_text().replace(seaweed_bucket.endpoint_url, proxy.url))
        dest = tmp_path / "restored"
        proc = fs3g("restore", "--config", str(via_proxy), "--dest", str(dest), "--executor", "local")
    finally:
        proxy.close()
    assert proxy.damaged >= 1
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = max((tmp_path / "runs" / "dmg").glob("restore-*"))
    report = read_report(run)
    assert report["failed"]["files"] == 1 and report["restored"]["files"] == 0
    failures = (run / report["failures_file"]).read_text() if report.get("failures_file") else proc.stdout
    assert "does not match the recorded" in failures + proc.stdout
    assert not (dest / "big.bin").exists()
    assert not list(dest.rglob(".fs3g-restore-*"))

    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dest / "big.bin").read_bytes() == big.read_bytes()


def test_a_restore_killed_mid_file_redoes_that_file_on_the_rerun(seaweed_bucket, tmp_path):
    """`restore-shard` killed (SIGKILL) while a multipart large file is half downloaded: nothing is at the target (the
    data went to a temporary name), the journal does not list it, and the task run again downloads it whole, checks
    its tree hash and renames it into place byte for byte."""
    import signal

    from fs3g_hpc.config import RestoreTier
    from fs3g_hpc.restore.select import RestoreRequest, prepare_restore
    from fs3g_hpc.restore.stage import StageVerdict, stage

    root = tmp_path / "data"
    root.mkdir()
    big = root / "big.bin"
    big.write_bytes(os.urandom(11 * MIB + 12345))
    policy = write_policy(tmp_path, "kil", root, seaweed_bucket)
    backup(policy)
    proxy = DamagingProxy(seaweed_bucket.endpoint_url, at=-1)
    try:
        via_proxy = tmp_path / "via-proxy.yaml"
        via_proxy.write_text(policy.read_text().replace(seaweed_bucket.endpoint_url, proxy.url))
        dest, run = tmp_path / "restored", tmp_path / "run"
        prepare_restore(load_policy(via_proxy), RestoreRequest((), dest, RestoreTier.STANDARD, 1), run)
        assert stage(run).verdict is StageVerdict.READY
        proxy.delay_s = 0.05  # ~1.3 MB/s: the file takes ~9 s
        task = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "restore-shard", str(run), "--shard", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not list(dest.rglob(".fs3g-restore-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert task.poll() is None, task.communicate()[0]
        task.send_signal(signal.SIGKILL)
        task.wait()
        assert not (dest / "big.bin").exists()
        assert b"big.bin" not in b"".join(p.read_bytes() for p in run.rglob("*journal*") if p.is_file())
        proxy.delay_s = 0.0
        proc = fs3g("restore-shard", str(run), "--shard", "0")
    finally:
        proxy.close()
    assert proc.returncode == 0 and " 1 restored" in proc.stdout, proc.stdout + proc.stderr
    assert (dest / "big.bin").read_bytes() == big.read_bytes()
