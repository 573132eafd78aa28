"""What a restore brings back beyond bytes: exact timestamps (0 and before 1970 included), hard links as hard links,
directories (empty ones, modes, mtimes) and sparse files; and the byte totals that count a hard-linked file once."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from fs3g_hpc.config import load_policy
from fs3g_hpc.runs.catalog import catalog_path
from fs3g_hpc.model.objectmeta import format_ns, parse_ns
from fs3g_hpc.model.records import EntryKind, read_records
from fs3g_hpc.restore.destination import SPARSE_BLOCK_BYTES, pwrite_sparse
from fs3g_hpc.status import shard_states

from helpers import fs3g, read_report
from test_restore import write_policy

MIB = 1024 * 1024
EPOCH_0 = 0  # `touch -d @0`
NS_1960 = -315_619_199_876_543_211  # `touch -d '1960-01-01 00:00:00.123456789'` (UTC)
T_DIR = 1_500_000_000_987_654_321


# -- the SECONDS.NANOSECONDS format ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ns", [0, 1, -1, 999_999_999, -999_999_999, 1_000_000_000, -1_000_000_000, -1_500_000_000,
                                NS_1960, 1_600_000_000_123_456_789, 2**63 - 1, -(2**63)])
def test_every_time_round_trips_exactly(ns):
    assert parse_ns(format_ns(ns)) == ns


def test_negative_times_are_written_and_read_as_decimal_numbers():
    assert format_ns(NS_1960) == "-315619199.876543211"
    assert format_ns(-1_500_000_000) == "-1.500000000"  # not the floor form "-2.500000000"
    assert format_ns(-1) == "-0.000000001"
    assert format_ns(0) == "0.000000000"
    assert parse_ns("-0.5") == -500_000_000  # the sign of "-0" is the whole number's
    assert parse_ns("-1.5") == -1_500_000_000
    assert parse_ns("1700000000") == 1_700_000_000_000_000_000
    assert parse_ns("1.5") == 1_500_000_000
    assert parse_ns("1.1234567899") == 1_123_456_789  # past nanoseconds: dropped
    assert parse_ns("+2.000000001") == 2_000_000_001


@pytest.mark.parametrize("text", ["", ".", "-", "-.", "1.2.3", "abc", "1e9", "nan", "١.٢"])
def test_unreadable_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_ns(text)


# -- sparse writes -----------------------------------------------------------------------------------------------------

def test_blocks_of_zeros_are_skipped_and_the_bytes_are_the_same(tmp_path):
    data = bytearray(8 * SPARSE_BLOCK_BYTES + 1000)
    data[SPARSE_BLOCK_BYTES + 5:SPARSE_BLOCK_BYTES + 9] = b"abcd"  # inside block 1
    data[-3:] = b"end"
    target = tmp_path / "f"
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, len(data))
        writes = []
        real = os.pwrite

        def counting(fd_: int, view, offset: int) -> int:
            writes.append((offset, len(view)))
            return real(fd_, view, offset)

        os.pwrite = counting
        try:  # written in two pieces, the second starting off a block boundary
            pwrite_sparse(fd, bytes(data[:3 * SPARSE_BLOCK_BYTES + 7]), 0, tmp_path)
            pwrite_sparse(fd, bytes(data[3 * SPARSE_BLOCK_BYTES + 7:]), 3 * SPARSE_BLOCK_BYTES + 7, tmp_path)
        finally:
            os.pwrite = real
    finally:
        os.close(fd)
    assert target.read_bytes() == bytes(data)
    assert sum(n for _, n in writes) <= 2 * SPARSE_BLOCK_BYTES  # block 1 and the last partial block only
    assert writes[0] == (SPARSE_BLOCK_BYTES, SPARSE_BLOCK_BYTES)


# -- end to end --------------------------------------------------------------------------------------------------------

def make_fidelity_tree(root: Path) -> dict[str, bytes]:
    """Files with extreme times, a hard-link group across directories, an empty directory, directories with their own
    modes and times, and a 64 MiB sparse file with 1 MiB of data."""
    (root / "times").mkdir(parents=True)
    (root / "links" / "a").mkdir(parents=True)
    (root / "links" / "b").mkdir()
    (root / "empty" / "nested-empty").mkdir(parents=True)
    (root / "readonly").mkdir()
    data = {"epoch": b"born at the epoch\n", "old": b"from 1960\n", "big": os.urandom(300 * 1024),
            "small": b"small linked\n", "inner": b"in a read-only directory\n"}
    (root / "times" / "epoch").write_bytes(data["epoch"])
    subprocess.run(["touch", "-d", "@0", str(root / "times" / "epoch")], check=True)
    (root / "times" / "old").write_bytes(data["old"])
    subprocess.run(["touch", "-d", "1960-01-01 00:00:00.123456789 UTC", str(root / "times" / "old")], check=True)
    assert os.stat(root / "times" / "epoch").st_mtime_ns == EPOCH_0
    assert os.stat(root / "times" / "old").st_mtime_ns == NS_1960
    big = root / "links" / "a" / "big.bin"  # a large file (over the 128 KiB threshold) with three links
    big.write_bytes(data["big"])
    os.link(big, root / "links" / "a" / "big-again.bin")
    os.link(big, root / "links" / "b" / "big.bin")
    os.utime(big, ns=(T_DIR, T_DIR + 1))
    small = root / "links" / "a" / "small"
    small.write_bytes(data["small"])
    os.link(small, root / "links" / "b" / "small")
    (root / "readonly" / "inner").write_bytes(data["inner"])
    sparse = root / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(64 * MIB)
        f.seek(32 * MIB)
        data["sparse"] = os.urandom(MIB)
        f.write(data["sparse"])
    modes = {"empty": 0o750, "empty/nested-empty": 0o701, "links/b": 0o711, "readonly": 0o555, "times": 0o775}
    for i, (rel, mode) in enumerate(sorted(modes.items(), key=lambda kv: -kv[0].count("/"))):
        os.chmod(root / rel, mode)
        os.utime(root / rel, ns=(T_DIR - i, T_DIR + i))
    os.utime(root / "links", ns=(0, 0))  # a directory at the epoch too
    return data


def assert_directories_match(src: Path, dst: Path) -> int:
    count = 0
    for directory, dirs, _ in os.walk(src):
        for name in dirs:
            a = Path(directory) / name
            b = dst / a.relative_to(src)
            sa, sb = a.lstat(), b.lstat()
            assert stat.S_ISDIR(sb.st_mode), b
            assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), (a, oct(sa.st_mode), oct(sb.st_mode))
            assert sa.st_mtime_ns == sb.st_mtime_ns, a
            count += 1
    return count


def check_restored(root: Path, dest: Path, data: dict[str, bytes], *, atimes: bool = True) -> None:
    for rel, key in (("times/epoch", "epoch"), ("times/old", "old")):
        st = os.stat(dest / rel)
        assert st.st_mtime_ns == os.stat(root / rel).st_mtime_ns, rel
        if atimes:  # before this test reads it (an atime of 0 is over a day old: relatime updates it)
            assert st.st_atime_ns == os.stat(root / rel).st_atime_ns, rel
        assert (dest / rel).read_bytes() == data[key]
    group = [dest / "links" / "a" / "big.bin", dest / "links" / "a" / "big-again.bin", dest / "links" / "b" / "big.bin"]
    assert {os.stat(p).st_ino for p in group} == {os.stat(group[0]).st_ino}
    assert os.stat(group[0]).st_nlink == 3
    assert all(p.read_bytes() == data["big"] for p in group)
    assert os.stat(group[0]).st_mtime_ns == T_DIR + 1
    pair = [dest / "links" / "a" / "small", dest / "links" / "b" / "small"]
    assert os.stat(pair[0]).st_ino == os.stat(pair[1]).st_ino and os.stat(pair[0]).st_nlink == 2
    sparse = dest / "sparse.bin"
    st = os.stat(sparse)
    assert st.st_size == 64 * MIB
    with open(sparse, "rb") as f:
        assert f.read(32 * MIB) == bytes(32 * MIB)
        assert f.read(MIB) == data["sparse"]
        assert f.read() == bytes(31 * MIB)
    assert st.st_blocks * 512 < 8 * MIB, f"{st.st_blocks * 512} bytes allocated for 1 MiB of data"
    assert (dest / "empty" / "nested-empty").is_dir()
    assert assert_directories_match(root, dest) == 7
    assert not list(dest.rglob(".fs3g-restore-*"))


def test_round_trip_keeps_times_hard_links_directories_and_holes(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    data = make_fidelity_tree(root)
    src_sparse = os.stat(root / "sparse.bin")
    assert src_sparse.st_blocks * 512 < 8 * MIB, "the test's filesystem keeps no holes"
    policy = write_policy(tmp_path, "fid", root, seaweed_bucket)
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = max(p for p in (tmp_path / "runs" / "fid").iterdir() if (p / "plan.json").is_file())

    # The object metadata carries the times as decimal SECONDS.NANOSECONDS.
    key = f"labs/fid/smallfile{root}/times/old"
    meta = seaweed_bucket.client.head_object(Bucket=seaweed_bucket.name, Key=key)["Metadata"]
    assert meta["mtime"] == "-315619199.876543211"
    key = f"labs/fid/smallfile{root}/times/epoch"
    assert seaweed_bucket.client.head_object(Bucket=seaweed_bucket.name, Key=key)["Metadata"]["mtime"] == \
        "0.000000000"

    # status and the merge count the 300 KiB file of three links once.
    plan = json.loads((run / "plan.json").read_text())
    lines = shard_states(run)
    assert sum(s.bytes_done for s in lines) == sum(s.bytes for s in lines) == plan["planned"]["bytes"]
    unique = 300 * 1024 + len(data["small"]) + 64 * MIB + sum(len(data[k]) for k in ("epoch", "old", "inner"))
    assert plan["planned"]["bytes"] == unique
    report = read_report(run)
    assert report["verified"]["bytes"] == report["planned"]["bytes"] == unique
    proc = fs3g("status", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done, total = re.search(r"files, ([^/]+)/([^,;\n]+)", proc.stdout).groups()
    assert done == total, proc.stdout

    # Directories are catalog records (no object), files keep their inode numbers there.
    records = {e.path: e for e in read_records(catalog_path(load_policy(policy)))}
    empty = records[os.fsencode(root / "empty" / "nested-empty")]
    assert empty.kind is EntryKind.DIRECTORY and stat.S_IMODE(empty.mode) == 0o701
    listed = seaweed_bucket.client.list_objects_v2(Bucket=seaweed_bucket.name, Prefix="labs/fid/")
    assert not [o["Key"] for o in listed["Contents"] if "empty" in o["Key"]]

    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_restored(root, dest, data)
    restore_run = max((tmp_path / "runs" / "fid").glob("restore-*"))
    rreport = read_report(restore_run)
    assert rreport["restored"]["linked"] == 3  # two more links of big.bin, one of small
    assert rreport["restored"]["bytes"] == unique
    assert rreport["directories"] == {"planned": 7, "restored": 7, "failed": 0}
    assert "hard links" in proc.stdout and "directories" in proc.stdout, proc.stdout

    # The same restore again: everything in place, the epoch file included (it used to be refused).
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = read_report(max((tmp_path / "runs" / "fid").glob("restore-*")))
    assert again["restored"]["files"] == 0 and again["already_present"] == rreport["planned"]["files"]
    check_restored(root, dest, data, atimes=False)

    # A selection that holds two of the three links makes those two links of one file.
    part = tmp_path / "only-a"
    proc = fs3g("restore", "--config", str(policy), str(root / "links" / "a"), "--dest", str(part),
                "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = part / "big.bin", part / "big-again.bin"
    assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2
    assert a.read_bytes() == data["big"]

    # A directory whose mtime changed uploads nothing: the next backup only updates its catalog record; compare
    # sees no directory as missing from the bucket.
    os.chmod(root / "readonly", 0o755)
    (root / "readonly" / "new-empty").mkdir()
    os.rmdir(root / "empty" / "nested-empty")
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run2 = max(p for p in (tmp_path / "runs" / "fid").iterdir() if (p / "plan.json").is_file())
    plan2 = json.loads((run2 / "plan.json").read_text())
    assert plan2["planned"]["files"] == 0 and plan2["shard_count"] == 0, plan2["planned"]
    assert plan2["directories"]["new"] == 1 and plan2["directories"]["deleted"] == 1
    records = {e.path: e for e in read_records(catalog_path(load_policy(policy)))}
    assert stat.S_IMODE(records[os.fsencode(root / "readonly")].mode) == 0o755
    assert os.fsencode(root / "readonly" / "new-empty") in records
    assert os.fsencode(root / "empty" / "nested-empty") not in records
    proc = fs3g("compare", "--config", str(policy))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_packed_round_trip_keeps_times_hard_links_directories_and_holes(seaweed_bucket, tmp_path):
    """The fidelity tree through packs: extreme times to the nanosecond, a hard-link group, directories, the sparse
    file (large: its own object) beside them."""
    root = tmp_path / "data"
    data = make_fidelity_tree(root)
    policy = write_policy(tmp_path, "fidp", root, seaweed_bucket, layout="packs")
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {e.path: e for e in read_records(catalog_path(load_policy(policy)))}
    assert records[os.fsencode(root / "times" / "old")].location  # packed
    assert not records[os.fsencode(root / "sparse.bin")].location  # its own object
    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_restored(root, dest, data)
    rreport = read_report(max((tmp_path / "runs" / "fidp").glob("restore-*")))
    assert rreport["restored"]["linked"] == 3
    assert rreport["directories"] == {"planned": 7, "restored": 7, "failed": 0}


def test_a_symlink_in_the_way_of_a_directory_is_not_followed(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"x")
    os.chmod(root / "d" / "sub", 0o700)
    policy = write_policy(tmp_path, "dsym", root, seaweed_bucket)
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    before = outside.stat()
    dest = tmp_path / "restored"
    (dest / "d").mkdir(parents=True)
    os.symlink(outside, dest / "d" / "sub")  # planted where the empty directory goes
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "sub" in proc.stdout and "symlink" in proc.stdout, proc.stdout
    after = outside.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert (dest / "d" / "f").read_bytes() == b"x"


@pytest.mark.parametrize("layout", ["objects", "packs"])
def test_restore_on_the_slurm_cluster_links_and_puts_directories_back(slurm_cluster, seaweed_bucket, shared_tmp,
                                                                      layout):
    root = shared_tmp / "data"
    (root / "x" / "empty").mkdir(parents=True)
    (root / "y").mkdir()
    (root / "x" / "f").write_bytes(b"linked data\n")
    os.link(root / "x" / "f", root / "y" / "f")
    os.chmod(root / "x" / "empty", 0o710)
    os.utime(root / "x" / "empty", ns=(T_DIR, T_DIR))
    os.utime(root / "x", ns=(0, 0))
    policy = write_policy(shared_tmp, "fslurm", root, seaweed_bucket, layout=layout)
    proc = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dest = shared_tmp / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "slurm", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = dest / "x" / "f", dest / "y" / "f"
    assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2
    assert a.read_bytes() == b"linked data\n"
    assert assert_directories_match(root, dest) == 3
    run = max((shared_tmp / "runs" / "fslurm").glob("restore-*"))
    assert (run / "jobs" / "chain.json").is_file()  # it did run as Slurm jobs


def test_a_link_the_destination_refuses_is_downloaded_as_a_copy(seaweed_bucket, tmp_path, monkeypatch):
    from fs3g_hpc.restore.merge import merge_restore
    from fs3g_hpc.restore.select import RestoreRequest, prepare_restore
    from fs3g_hpc.restore.task import restore_shard
    from fs3g_hpc.config import RestoreTier

    root = tmp_path / "data"
    root.mkdir()
    (root / "a").write_bytes(b"one file, two names\n")
    os.link(root / "a", root / "b")
    policy_file = write_policy(tmp_path, "nolink", root, seaweed_bucket)
    proc = fs3g("backup", "--config", str(policy_file), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    policy = load_policy(policy_file)
    dest = tmp_path / "restored"
    layout, header = prepare_restore(policy, RestoreRequest((), dest, RestoreTier.STANDARD, 1), tmp_path / "run")
    assert header["shard_count"] == 1 and header["planned"] == {"files": 2, "bytes": 20}

    def no_links(*args, **kwargs):  # a filesystem with no hard links, or a file at its link limit
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", no_links)
    result = restore_shard(layout.run_dir, 0, environ={})
    assert (result.restored, result.failed) == (2, 0)
    report = merge_restore(layout.run_dir)
    assert report.ok and report.data["restored"]["linked"] == 0
    assert (dest / "a").read_bytes() == (dest / "b").read_bytes() == b"one file, two names\n"
    assert os.stat(dest / "a").st_ino != os.stat(dest / "b").st_ino
