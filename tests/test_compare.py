"""`fs3g compare`: the pure merge-join and verdicts, then whole backups compared against the real endpoints."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import helpers
import pytest

from fs3g_hpc.compare import (Against, Category, CompareSummary, Discrepancy, InOrder, JsonReport, NotComparable,
                              SubtreeExcluder, TextReport, bounded_map, compare_tree, is_under, listed_entry,
                              local_tree_hash, newest_per_path, quick_verdict, resolve_scope)
from fs3g_hpc.compare.checks import packed_entry
from fs3g_hpc.compare.join import join, newest_copy
from fs3g_hpc.config import load_policy
from fs3g_hpc.errors import UsageError
from fs3g_hpc.runs.catalog import catalog_path
from fs3g_hpc.model.entries import EntryClass
from fs3g_hpc.model.keys import KeyClass
from fs3g_hpc.model.packs import (END_OF_ARCHIVE, IndexEntry, IndexWriter, MemberInfo, MemberType, PackRef, member_header,
                                  padding, run_time_ns)
from fs3g_hpc.model.records import Entry, EntryKind, by_key, read_records, write_records
from fs3g_hpc.model.records import packed as packed_record
from fs3g_hpc.model.treehash import tree_hash
from fs3g_hpc.scan import ScanSettings, scan

KIB = 1024
MIB = 1024 * KIB


def entry(path: bytes, size: int = 1, mtime: int = 1, kind: EntryKind = EntryKind.FILE,
          tree: bytes = b"") -> Entry:
    return Entry.of(path, kind, size, mtime, mtime, mtime, 0o100644, 0, 0, 1, 1, 1)._replace(tree_hash=tree)


def write_policy(tmp: Path, root: Path, *, bucket_name: str = "unused-bucket", endpoint: str = "http://127.0.0.1:9",
                 exclude: tuple[str, ...] = (), storage: str = "small_file_threshold_bytes: 128KiB") -> Path:
    """The per-object layout (`small_files: objects`) unless `storage` names the layout."""
    layout = "" if "small_files" in storage else "small_files: objects, "
    return helpers.write_policy(tmp, root, bucket_name, name="cmp", file="lab.yaml", endpoint_url=endpoint,
                                prefix="labs/cmp", exclude=exclude, storage=layout + storage,
                                uploader="buffer_size_bytes: 5MiB, large_buffers: 2")

def fs3g(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return helpers.fs3g(*args, timeout=timeout, text=False)  # bytes: the reports hold raw path bytes

# --- pure parts ------------------------------------------------------------------------------------------------------

def test_join_pairs_both_sides_in_sort_key_order():
    local = sorted([entry(b"/r/a"), entry(b"/r/b"), entry(b"/r/d/x"), entry(b"/r/e")], key=by_key)
    remote = sorted([entry(b"/r/b"), entry(b"/r/c"), entry(b"/r/d/x"), entry(b"/r/z/y")], key=by_key)
    pairs = [(l.path if l else None, r.path if r else None) for l, r in join(local, remote)]
    assert pairs == [(b"/r/a", None), (b"/r/b", b"/r/b"), (None, b"/r/c"), (b"/r/e", None),
                     (b"/r/d/x", b"/r/d/x"), (None, b"/r/z/y")]  # a directory's own entries first: /r\0e < /r/d\0x
    assert list(join([], remote)) == [(None, r) for r in remote]
    assert list(join(local, [])) == [(l, None) for l in local]


def test_quick_verdict_kind_size_mtime():
    small = EntryClass.SMALL
    same = quick_verdict(entry(b"/r/a", 5, 7), entry(b"/r/a", 5, 7), small, mtime_known=True)
    assert same is None
    size = quick_verdict(entry(b"/r/a", 6, 7), entry(b"/r/a", 5, 7), small, mtime_known=True)
    assert size == Discrepancy(Category.CHANGED, small, b"/r/a", "size 5 -> 6")
    mtime = quick_verdict(entry(b"/r/a", 5, 8), entry(b"/r/a", 5, 7), small, mtime_known=True)
    assert mtime is not None and mtime.category is Category.CHANGED and mtime.detail.startswith("mtime")
    # Bucket listings carry no mtime: an equal size needs a HEAD, decided later.
    assert quick_verdict(entry(b"/r/a", 5, 8), entry(b"/r/a", 5, 0), small, mtime_known=False) is None
    kind = quick_verdict(entry(b"/r/a", 5, 7, EntryKind.SYMLINK), entry(b"/r/a", 5, 7), EntryClass.SYMLINK,
                         mtime_known=True)
    assert kind is not None and kind.detail == "was a file, now a symlink"


def test_is_under_matches_at_component_boundaries():
    assert is_under(b"/data/ab", b"/data/ab") and is_under(b"/data/ab/x", b"/data/ab")
    assert not is_under(b"/data/abc", b"/data/ab") and not is_under(b"/data/abc/x", b"/data/ab")
    assert is_under(b"/anything", b"/")


def test_resolve_scope_validates_and_dedupes(tmp_path):
    root = tmp_path / "data"
    (root / "ab" / "deep").mkdir(parents=True)
    (root / "abc").mkdir()
    (root / "ab" / "f").write_bytes(b"x")
    policy = load_policy(write_policy(tmp_path, root), environ={})
    broot = os.fsencode(root)
    scope = resolve_scope(policy, [str(root / "ab" / "deep"), str(root / "ab"), str(root / "abc"),
                                   str(root / "ab" / "f")])
    assert scope.paths == (broot + b"/ab", broot + b"/abc") and scope.roots == (broot, broot)
    assert scope.covers(broot + b"/ab/x") and scope.covers(broot + b"/abc") and not scope.covers(broot + b"/abd")
    assert resolve_scope(policy, []).paths == (broot,)
    with pytest.raises(UsageError, match="not under any root"):
        resolve_scope(policy, [str(root) + "x"])  # a sibling whose name starts with the root's
    with pytest.raises(UsageError, match="no such file"):
        resolve_scope(policy, [str(root / "gone")])


def test_subtree_excluder_matches_a_walk_from_the_root(tmp_path):
    root = tmp_path / "data"
    for rel in ["projects/a/scratch/x", "projects/a/keep/y.tmp", "projects/a/keep/z", "projects/b/scratch/w",
                "other/scratch/v", "cache/deep/u", "projects/a/keep/.snapshot/s"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"1")
    patterns = ("projects/*/scratch", "*.tmp", "**/.snapshot", "cache")
    work = tmp_path / "work"
    work.mkdir()
    full = scan([str(root)], patterns, work, ScanSettings(workers=0))
    expected = {e.path for e in full.sorted_entries(work) if is_under(e.path, os.fsencode(root / "projects"))}
    excluder = SubtreeExcluder(patterns, [os.fsencode(root)])
    work2 = tmp_path / "work2"
    work2.mkdir()
    sub = scan([str(root / "projects")], excluder.name_patterns, work2, ScanSettings(workers=0))
    got = {e.path for e in sub.sorted_entries(work2) if excluder.keep(e)}
    assert got == expected and os.fsencode(root / "projects/a/keep/z") in got
    assert excluder.path_excluded(os.fsencode(root / "projects/a/scratch/x"))
    assert excluder.path_excluded(os.fsencode(root / "cache/deep"))
    assert not excluder.path_excluded(os.fsencode(root / "projects/a/keep"))


def test_newest_per_path_counts_a_path_once():
    a_small = listed_entry(b"/r/a", KeyClass.SMALL, 10)
    a_large = listed_entry(b"/r/a", KeyClass.LARGE, 200_000)
    b = listed_entry(b"/r/b", KeyClass.SYMLINK, 3)
    stream = sorted([a_small, a_large, b], key=by_key)
    picked = list(newest_per_path(stream, lambda group: max(group, key=lambda e: e.size_bytes)))
    assert [(e.path, e.size_bytes) for e in picked] == [(b"/r/a", 200_000), (b"/r/b", 3)]


def test_in_order_emits_in_join_order_with_a_bounded_window():
    out: list[str] = []
    in_order = InOrder(lambda d: out.append(d.path.decode()), window=3)
    futures = [Future() for _ in range(3)]
    in_order.ready(Discrepancy(Category.MISSING_IN_S3, EntryClass.SMALL, b"a"))  # nothing pending: out at once
    assert out == ["a"]
    in_order.later(futures[0])
    in_order.ready(Discrepancy(Category.ONLY_IN_S3, EntryClass.SMALL, b"b"))
    futures[1].set_result(Discrepancy(Category.CHANGED, EntryClass.SMALL, b"c"))
    in_order.later(futures[1])
    assert out == ["a"]  # "b" and "c" wait for the first check
    futures[0].set_result(None)
    futures[2].set_result(Discrepancy(Category.CHANGED, EntryClass.LARGE, b"d"))
    in_order.later(futures[2])
    assert out == ["a", "b", "c", "d"]
    in_order.finish()

    out.clear()  # a full window blocks the join until the oldest check is done
    bounded = InOrder(lambda d: out.append(d.path.decode()), window=1)
    slow, fast = Future(), Future()
    fast.set_result(Discrepancy(Category.CHANGED, EntryClass.SMALL, b"f"))
    threading.Timer(0.1, slow.set_result, [Discrepancy(Category.CHANGED, EntryClass.SMALL, b"s")]).start()
    bounded.later(slow)
    bounded.later(fast)
    assert out == ["s", "f"]

    with ThreadPoolExecutor(4) as pool:  # in order whatever the completion order
        assert [r for _, r in bounded_map(pool, lambda n: (time.sleep(0.01 * (5 - n)), n)[1], range(6), 3)] == \
            list(range(6))


def test_local_tree_hash_of_files_and_symlinks(tmp_path):
    data = os.urandom(3 * MIB + 5)
    f = tmp_path / "f"
    f.write_bytes(data)
    st = os.lstat(f)
    assert local_tree_hash(Entry.from_stat(os.fsencode(f), EntryKind.FILE, st), piece_bytes=MIB // 3) == \
        (tree_hash(data), len(data))
    # What a pack's index holds: the plain SHA-256 (the same as the tree hash only up to one 1 MiB leaf).
    whole = local_tree_hash(Entry.from_stat(os.fsencode(f), EntryKind.FILE, st), whole_sha256=True)
    assert whole == (hashlib.sha256(data).hexdigest(), len(data)) and whole[0] != tree_hash(data)
    link = tmp_path / "l"
    os.symlink(b"target\xff", link)
    assert local_tree_hash(Entry.from_stat(os.fsencode(link), EntryKind.SYMLINK, os.lstat(link)))[0] == \
        tree_hash(b"target\xff")
    stale = Entry.from_stat(os.fsencode(f), EntryKind.FILE, st)._replace(mtime_ns=st.st_mtime_ns - 1)
    with pytest.raises(NotComparable, match="changed"):
        local_tree_hash(stale)


def test_reports_text_json_and_limit():
    import io

    items = [Discrepancy(Category.MISSING_IN_S3, EntryClass.SMALL, b"/r/new\nline \xff"),
             Discrepancy(Category.CANNOT_CHECK, EntryClass.LARGE, b"/r/big", "tree hash tag unreadable")]
    summary = CompareSummary(Against.CATALOG, "/c.rec", False, (b"/r",))
    text = io.StringIO()
    report = TextReport(text, limit=1)
    for d in items:
        summary.add(d)
        report(d)
    report.finish(summary)
    lines = text.getvalue().splitlines()
    assert lines[0] == "missing-in-s3 small /r/new\\x0aline \\xff"
    assert lines[1] == "... 1 more not shown (--limit 1)"
    assert any(line.split()[:2] == ["total", "1"] for line in lines) and lines[-1] == "  result: 2 discrepancies"
    assert items[1].line() == "cannot-check large /r/big\ttree hash tag unreadable"
    js = io.StringIO()
    report_json = JsonReport(js)
    for d in items:
        report_json(d)
    report_json.finish(summary)
    data = json.loads(js.getvalue())
    assert [os.fsencode(d["path"]) for d in data["discrepancies"]] == [d.path for d in items]
    assert data["summary"]["counts"]["large"]["cannot-check"] == 1 and data["summary"]["ok"] is False
    empty = io.StringIO()
    JsonReport(empty).finish(CompareSummary(Against.BUCKET, "s3://b/", True, (b"/r",)))
    assert json.loads(empty.getvalue())["discrepancies"] == []


def _catalog_of(root: Path, work: Path, hashes: bool) -> list[Entry]:
    result = scan([str(root)], (), work, ScanSettings(workers=0))
    out = []
    for e in result.sorted_entries(work):
        if e.kind in (EntryKind.FILE, EntryKind.SYMLINK):
            out.append(e._replace(tree_hash=bytes.fromhex(local_tree_hash(e)[0]) if hashes else b""))
    return out


def test_compare_tree_against_a_catalog_without_services(tmp_path, monkeypatch):
    """The library entry point on a catalog made here: categories, classes, an unreadable directory, PATHs."""
    root = tmp_path / "data"
    for rel, size in [("a/one", 10), ("a/two", 10), ("a/big", 200 * KIB), ("locked/x", 5), ("gone", 3)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(size))
    os.symlink("a/one", root / "link")
    policy_file = write_policy(tmp_path, root)
    policy = load_policy(policy_file, environ={})
    work = tmp_path / "w"
    work.mkdir()
    catalog_path(policy).parent.mkdir(parents=True)
    write_records(catalog_path(policy), _catalog_of(root, work, hashes=True))

    two = root / "a" / "two"
    st = os.stat(two)
    two.write_bytes(os.urandom(10))
    os.utime(two, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the hash sees it
    (root / "gone").unlink()
    (root / "a" / "new").write_bytes(b"n")
    real_scandir = os.scandir

    def scandir(path):  # root cannot make a directory unreadable with chmod: refuse it here
        if not isinstance(path, int) and os.fsencode(path).endswith(b"/locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found: list[Discrepancy] = []
    summary = compare_tree(policy, check_sha256=True, out=found.append, scan_settings=ScanSettings(workers=0),
                           workers=3)
    got = {(d.category, d.klass, d.path) for d in found}
    b = os.fsencode(root)
    assert got == {(Category.ONLY_IN_S3, EntryClass.SMALL, b + b"/gone"),
                   (Category.MISSING_IN_S3, EntryClass.SMALL, b + b"/a/new"),
                   (Category.CHANGED, EntryClass.SMALL, b + b"/a/two"),
                   (Category.CANNOT_CHECK, EntryClass.SMALL, b + b"/locked/x")}
    assert [d.path for d in found] == sorted((d.path for d in found), key=lambda p: by_key(entry(p)))
    assert summary.hashed_files == 4 and summary.object_requests == 0 and summary.unreadable == 1
    assert not summary.ok and summary.counts[EntryClass.SMALL][Category.CHANGED] == 1
    assert not any((tmp_path / "runs" / "cmp").glob(".compare-*"))  # the work directory is gone

    found.clear()
    summary = compare_tree(policy, [str(root / "a" / "one"), str(root / "link")], check_sha256=True,
                           out=found.append, scan_settings=ScanSettings(workers=0))
    assert found == [] and summary.ok and summary.local_entries == 2 and summary.backed_up_entries == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    policy = write_policy(tmp_path, root)
    for args, expected in [([str(tmp_path / "elsewhere")], "not under any root"),
                           ([str(root) + "x"], "not under any root"),
                           ([str(root / "missing")], "no such file or directory"),
                           ([], "run `fs3g backup --config LAB.yaml` first, or compare with --against-bucket")]:
        proc = fs3g("compare", "--config", str(policy), *args)
        stderr = proc.stderr.decode()
        assert proc.returncode == 2, stderr
        assert len(stderr.strip().splitlines()) == 1 and expected in stderr and "Traceback" not in stderr
        assert proc.stdout == b""


# --- against the real endpoints --------------------------------------------------------------------------------------

LONG_NAME = b"\xfe" * 90  # 270 bytes once escaped: over a key segment's 255, so stored under .fs3g-long/


def make_tree(root: Path, newline: bool) -> None:
    files = {b"proj/a.txt": 100, b"proj/b.txt": 2 * KIB, b"proj/d.txt": 50, b"proj/grow.txt": 100 * KIB,
             b"proj/with space.txt": 7, b"proj/bad\xffname": 9, b"proj/" + LONG_NAME: 11,
             b"ab/x.txt": 10, b"abc/y.txt": 12, b"large/big1.bin": 300 * KIB, b"large/big2.bin": 6 * MIB,
             b"large/old.bin": 400 * KIB}
    if newline:
        files[b"proj/new\nline.txt"] = 13
    base = os.fsencode(root)
    for rel, size in files.items():
        path = base + b"/" + rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    os.makedirs(base + b"/links")
    os.symlink(b"../proj/a.txt", base + b"/links/l1")
    os.symlink(b"nowhere", base + b"/links/l2")


def modify(root: Path) -> set[tuple[str, str, str]]:
    """The changes the brief names; returns what every mode must report (without the content-only change)."""
    b = root / "proj" / "b.txt"  # new content, same size and mtime: only a hash sees it
    st = os.stat(b)
    data = bytearray(b.read_bytes())
    data[100] ^= 0xFF
    b.write_bytes(data)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    y = root / "abc" / "y.txt"
    os.utime(y, ns=(os.stat(y).st_atime_ns, os.stat(y).st_mtime_ns + 1_000_000_000))
    with open(root / "large" / "big1.bin", "ab") as f:
        f.write(b"appended")
    with open(root / "proj" / "grow.txt", "ab") as f:  # crosses the threshold: large now
        f.write(os.urandom(100 * KIB))
    (root / "proj" / "new1.txt").write_bytes(b"new")
    (root / "large" / "new2.bin").write_bytes(os.urandom(200 * KIB))
    (root / "proj" / "d.txt").unlink()
    (root / "large" / "old.bin").unlink()
    link = root / "links" / "l1"
    link.unlink()
    os.symlink(b"../proj/d.txt", link)  # another target of the same length: its mtime tells
    os.utime(link, ns=(1_000_000_000, 1_000_000_000), follow_symlinks=False)
    r = str(root)
    return {("changed", "small", f"{r}/abc/y.txt"), ("changed", "large", f"{r}/large/big1.bin"),
            ("changed", "large", f"{r}/proj/grow.txt"), ("missing-in-s3", "small", f"{r}/proj/new1.txt"),
            ("missing-in-s3", "large", f"{r}/large/new2.bin"), ("only-in-s3", "small", f"{r}/proj/d.txt"),
            ("only-in-s3", "large", f"{r}/large/old.bin"), ("changed", "symlink", f"{r}/links/l1")}


def compare(policy: Path, *args: str) -> tuple[int, set[tuple[str, str, str]], dict]:
    proc = fs3g("compare", "--config", str(policy), "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    data = json.loads(proc.stdout)
    found = {(d["category"], d["class"], d["path"]) for d in data["discrepancies"]}
    assert len(found) == len(data["discrepancies"]) == data["summary"]["discrepancies"]
    return proc.returncode, found, data["summary"]


MODES = [(), ("--check-sha256",), ("--against-bucket",), ("--against-bucket", "--check-sha256")]


def test_compare_a_backed_up_tree_in_every_mode(bucket, shared_tmp):
    tmp = shared_tmp
    root = tmp / "data"
    make_tree(root, newline=bucket.endpoint_name != "moto")  # moto cannot store keys holding `\n`
    policy = write_policy(tmp, root, bucket_name=bucket.name, endpoint=bucket.endpoint_url)
    backup = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert backup.returncode == 0, backup.stdout.decode() + backup.stderr.decode()

    for mode in MODES:
        code, found, summary = compare(policy, *mode)
        assert (code, found) == (0, set()), mode
        assert summary["local_entries"] == summary["backed_up_entries"] > 10
    text = fs3g("compare", "--config", str(policy), "--against-bucket", "--check-sha256")
    assert text.returncode == 0 and b"result: no discrepancy" in text.stdout
    assert b"hashed " in text.stdout

    expected = modify(root)
    content = ("changed", "small", f"{root}/proj/b.txt")
    for mode in MODES:
        code, found, _ = compare(policy, *mode)
        assert code == 1, mode
        assert found == (expected | {content} if "--check-sha256" in mode else expected), mode
    # Details say why; the line format is `<category> <class> <path>` then a tab and the detail.
    text = fs3g("compare", "--config", str(policy), "--check-sha256")
    lines = text.stdout.decode().splitlines()
    assert text.returncode == 1
    assert f"changed small {root}/proj/b.txt\tSHA-256 tree hash differs" in lines
    assert f"changed large {root}/large/big1.bin\tsize {300 * KIB} -> {300 * KIB + 8}" in lines
    assert any(line.split()[:2] == ["total", "2"] for line in lines)  # missing-in-s3 total

    # An older catalog without tree hashes: the hash comes from the bucket (metadata, or the tag of multipart).
    catalog = catalog_path(load_policy(policy, environ={}))
    stripped = [e._replace(tree_hash=b"") for e in read_records(catalog)]
    write_records(catalog, stripped)
    code, found, summary = compare(policy, "--check-sha256")
    assert (code, found) == (1, expected | {content}) and summary["object_requests"] > 0

    # PATHs restrict both sides, at component boundaries: ab is clean although abc (beside it) is not.
    for mode in [(), ("--against-bucket",)]:
        assert compare(policy, *mode, str(root / "ab"))[:2] == (0, set())
        assert compare(policy, *mode, str(root / "abc"))[1] == {("changed", "small", f"{root}/abc/y.txt")}
        code, found, _ = compare(policy, *mode, str(root / "large" / "big1.bin"), str(root / "links"))
        assert found == {("changed", "large", f"{root}/large/big1.bin"), ("changed", "symlink", f"{root}/links/l1")}
    outside = fs3g("compare", "--config", str(policy), str(tmp))
    assert outside.returncode == 2 and len(outside.stderr.splitlines()) == 1

    # Back up again: the catalog agrees with the disk; the bucket still holds what was deleted from disk, and
    # grow.txt, now under largefile/ beside its old smallfile/ object, counts once (the newest).
    again = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
    # b.txt kept its size and mtime, so the backup (like the original tool's) did not send it again: only a
    # hash compare still sees it.
    assert compare(policy)[:2] == (0, set())
    assert compare(policy, "--check-sha256")[:2] == (1, {content})
    deleted = {("only-in-s3", "small", f"{root}/proj/d.txt"), ("only-in-s3", "large", f"{root}/large/old.bin")}
    assert compare(policy, "--against-bucket")[:2] == (1, deleted)
    assert compare(policy, "--against-bucket", "--check-sha256")[:2] == (1, deleted | {content})
    assert bucket.client.head_object(Bucket=bucket.name, Key=f"labs/cmp/smallfile{root}/proj/grow.txt")


def test_archived_multipart_hash_is_cannot_check_never_a_pass(moto_bucket, shared_tmp):
    """moto refuses GetObjectTagging on GLACIER objects: the bucket mode says it could not check, by name."""
    tmp = shared_tmp
    root = tmp / "data"
    (root / "d").mkdir(parents=True)
    (root / "d" / "multi.bin").write_bytes(os.urandom(6 * MIB))  # multipart: its hash is a tag
    (root / "d" / "single.bin").write_bytes(os.urandom(300 * KIB))  # one PUT: its hash is in the metadata
    (root / "d" / "small.txt").write_bytes(b"s")
    policy = write_policy(tmp, root, bucket_name=moto_bucket.name, endpoint=moto_bucket.endpoint_url,
                          storage="small_file_threshold_bytes: 128KiB, upload_large_to_archive: true")
    backup = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert backup.returncode == 0, backup.stdout.decode() + backup.stderr.decode()
    assert compare(policy, "--against-bucket")[:2] == (0, set())  # HEAD works on archived objects
    assert compare(policy, "--check-sha256")[:2] == (0, set())  # the catalog holds the hash
    proc = fs3g("compare", "--config", str(policy), "--against-bucket", "--check-sha256")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 1
    problem = [line for line in lines if line.startswith("cannot-check")]
    assert len(problem) == 1 and problem[0].startswith(f"cannot-check large {root}/d/multi.bin\t")
    assert "InvalidObjectState" in problem[0] and "GLACIER" in problem[0]


# --- packs -----------------------------------------------------------------------------------------------------------

def packed(path: bytes, pack: str, size: int = 1, offset: int = 0) -> Entry:
    planned = run_time_ns(pack.split("/")[1])
    assert planned is not None
    return packed_entry(path, EntryKind.FILE, size, 1, b"\0" * 32, PackRef(pack, offset, offset + 1024, size),
                        planned)


def test_newest_copy_follows_the_restore_rule_run_time_then_last_modified():
    """The rule of a restore from the bucket: the newest copy, a pack's dated by its run's plan time, an object's by
    its LastModified; a tie goes to the pack, and between packs of one date to the smallest location."""
    old = packed(b"/r/a", "packs/20261201T100000Z-ffffffff/000000-00000.tar")
    new = packed(b"/r/a", "packs/20261202T100000Z-00000000/000000-00000.tar")
    again = packed(b"/r/a", "packs/20261202T100000Z-00000000/000000-00001.tar")
    assert newest_copy(None, [old, new]) is new and newest_copy(None, [again, new, old]) is new
    planned = new.ctime_ns
    assert planned == run_time_ns("20261202T100000Z-00000000") == 1_796_205_600 * 10**9
    before = listed_entry(b"/r/a", KeyClass.SMALL, 1, planned - 1)
    after = listed_entry(b"/r/a", KeyClass.SMALL, 1, planned + 1)
    assert newest_copy(before, [new, old]) is new
    assert newest_copy(after, [new, old]) is after  # an object written after the run was planned
    assert newest_copy(listed_entry(b"/r/a", KeyClass.SMALL, 1, planned), [new]) is new  # a tie: the pack
    assert run_time_ns("not-a-run") is None


def pack_keys(bucket, prefix: str) -> list[str]:
    listing = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{prefix}/packs/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_compare_a_packed_backup_from_the_catalog_and_from_the_indexes(seaweed_bucket, shared_tmp):
    """A lab backed up per object, then switched to packs: both layouts in one bucket and one catalog. Every mode
    compares clean; a change is found from the catalog and from the packs' indexes; a content change with the same
    size and mtime only by --check-sha256; the newest copy of a path (a later pack, or a pack after an object) wins;
    a damaged index is a cannot-check line by name, never a pass."""
    bucket, tmp = seaweed_bucket, shared_tmp
    root = tmp / "data"
    make_tree(root, newline=True)
    objects = write_policy(tmp, root, bucket_name=bucket.name, endpoint=bucket.endpoint_url)
    first = fs3g("backup", "--config", str(objects), "--executor", "local", "--wait")
    assert first.returncode == 0, first.stdout.decode() + first.stderr.decode()
    grown = root / "proj" / "a.txt"
    grown.write_bytes(os.urandom(150))  # changed before the switch: its per-object copy is the older one
    time.sleep(1.1)  # the packs run's id dates it to the second: a second after the objects' LastModified
    (root / "fresh").mkdir()
    (root / "fresh" / "p1.txt").write_bytes(b"p" * 33)
    (root / "fresh" / "p2.txt").write_bytes(b"q" * 2000)
    policy = write_policy(tmp, root, bucket_name=bucket.name, endpoint=bucket.endpoint_url,
                          storage="small_file_threshold_bytes: 128KiB, small_files: packs")
    second = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert second.returncode == 0, second.stdout.decode() + second.stderr.decode()
    keys = pack_keys(bucket, "labs/cmp")
    assert len(keys) == 2 and keys[1] == keys[0] + ".idx"  # the changed files in one pack, and its index
    records = {e.path: e for e in read_records(catalog_path(load_policy(policy, environ={})))}
    assert packed_record(records[os.fsencode(grown)]) and not packed_record(records[os.fsencode(root / "ab/x.txt")])

    for mode in MODES:
        code, found, summary = compare(policy, *mode)
        assert (code, found) == (0, set()), mode
        assert summary["local_entries"] == summary["backed_up_entries"] > 10
    # From the bucket, a packed file needs no HEAD: the index gave its mtime. Requests: one GET of the index and
    # one of the pathmap of the lab's hashed long key (read whatever the PATH).
    _, _, summary = compare(policy, "--against-bucket", str(root / "fresh"))
    assert summary["object_requests"] == 2 and summary["backed_up_entries"] == 2

    # A packed file: content changed, same size and mtime; another packed file: mtime changed; one packed file gone.
    st = os.stat(grown)
    data = bytearray(grown.read_bytes())
    data[7] ^= 0xFF
    grown.write_bytes(data)
    os.utime(grown, ns=(st.st_atime_ns, st.st_mtime_ns))
    only = root / "fresh" / "p1.txt"
    os.utime(only, ns=(st.st_atime_ns, os.stat(only).st_mtime_ns + 2_000_000_000))
    (root / "fresh" / "p2.txt").unlink()
    r = str(root)
    expected = {("changed", "small", f"{r}/fresh/p1.txt"), ("only-in-s3", "small", f"{r}/fresh/p2.txt")}
    content = ("changed", "small", f"{r}/proj/a.txt")
    for mode in MODES:
        code, found, _ = compare(policy, *mode)
        assert code == 1, mode
        assert found == (expected | {content} if "--check-sha256" in mode else expected), mode
    lines = fs3g("compare", "--config", str(policy), "--against-bucket", "--check-sha256").stdout.decode()
    assert f"changed small {r}/proj/a.txt\tSHA-256 differs" in lines.splitlines() or \
        f"changed small {r}/proj/a.txt\tSHA-256 tree hash differs" in lines.splitlines()

    # The next backup packs the mtime change again into a new pack; the bucket keeps the old copy in the first
    # pack: the newest (the later run's pack) is the one compared, so only the content-only change remains (and,
    # in the bucket, the deleted file).
    third = fs3g("backup", "--config", str(policy), "--executor", "local", "--wait")
    assert third.returncode == 0, third.stdout.decode() + third.stderr.decode()
    assert len(pack_keys(bucket, "labs/cmp")) == 4
    deleted = {("only-in-s3", "small", f"{r}/fresh/p2.txt")}
    for mode in MODES:
        code, found, _ = compare(policy, *mode)
        want = ({content} if "--check-sha256" in mode else set()) | (deleted if "--against-bucket" in mode else set())
        assert found == want, mode

    # A damaged index beside a pack: a cannot-check line naming the index; a stray index without its pack too.
    run = "packs/20300101T000000Z-0badc0de"
    bucket.client.put_object(Bucket=bucket.name, Key=f"labs/cmp/{run}/000000-00000.tar", Body=b"\0" * 1024)
    bucket.client.put_object(Bucket=bucket.name, Key=f"labs/cmp/{run}/000000-00000.tar.idx", Body=b"not gzip")
    bucket.client.put_object(Bucket=bucket.name, Key=f"labs/cmp/{run}/000000-00001.tar.idx", Body=b"x")
    proc = fs3g("compare", "--config", str(policy), "--against-bucket")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 1
    bad = [line for line in lines if line.startswith("cannot-check")]
    assert len(bad) == 2, lines
    assert bad[0].startswith(f"cannot-check small labs/cmp/{run}/000000-00000.tar.idx\tmalformed pack index")
    assert bad[1].startswith(f"cannot-check small labs/cmp/{run}/000000-00001.tar.idx\tpack index without its pack")
    assert [line for line in lines if line.startswith(("changed", "missing", "only"))] == \
        [f"only-in-s3 small {r}/fresh/p2.txt"]


def put_pack(bucket, prefix: str, run_id: str, members: list[tuple[MemberInfo, bytes]]) -> str:
    """A pack and its index written the way the format says (model/packs), straight into the bucket."""
    relative = f"packs/{run_id}/000000-00000.tar"
    writer = IndexWriter(relative, run_id)
    body = bytearray()
    for info, data in members:
        header = member_header(info)
        writer.add(IndexEntry.of(info, len(body), len(body) + len(header)))
        body += header + data + padding(len(data))
    body += END_OF_ARCHIVE
    bucket.client.put_object(Bucket=bucket.name, Key=f"{prefix}/{relative}", Body=bytes(body))
    bucket.client.put_object(Bucket=bucket.name, Key=f"{prefix}/{relative}.idx", Body=writer.finish(len(body)))
    return relative


def member(path: Path, kind: MemberType = MemberType.FILE, link: bytes = b"",
           mtime_ns: int | None = None) -> tuple[MemberInfo, bytes]:
    st = os.lstat(path)
    data = b"" if kind is not MemberType.FILE else path.read_bytes()
    info = MemberInfo(os.fsencode(path), kind, len(data), st.st_mtime_ns if mtime_ns is None else mtime_ns,
                      st.st_atime_ns, st.st_mode, st.st_uid, st.st_gid, "u", "g", link,
                      hashlib.sha256(data).hexdigest() if kind is MemberType.FILE else "")
    return info, data


def test_against_bucket_reads_pack_indexes_with_links_and_judges_their_names(seaweed_bucket, shared_tmp):
    """Packs written by the format alone (no catalog): files, a symlink and a hard link compare clean from the
    indexes, with no HEAD; a later pack's copy wins over an earlier one; a content change of the same size and mtime
    is found by --check-sha256 only; an index name that is not an absolute normalised path is named, not used."""
    bucket, tmp = seaweed_bucket, shared_tmp
    root = tmp / "data"
    (root / "d").mkdir(parents=True)
    a, b, link, hard = root / "d" / "a.txt", root / "d" / "b.bin", root / "d" / "l", root / "d" / "h"
    a.write_bytes(b"a" * 10)
    b.write_bytes(os.urandom(3000))
    os.symlink(b"a.txt", link)
    os.link(a, hard)
    policy = write_policy(tmp, root, bucket_name=bucket.name, endpoint=bucket.endpoint_url,
                          storage="small_file_threshold_bytes: 128KiB")
    old = member(b, mtime_ns=1_000_000_000)  # an older copy of b, in an earlier run
    put_pack(bucket, "labs/cmp", "20261201T100000Z-00000001", [old])
    put_pack(bucket, "labs/cmp", "20261201T110000Z-00000002",
             [member(a), member(b), member(link, MemberType.SYMLINK, b"a.txt"),
              member(hard, MemberType.HARDLINK, os.fsencode(a))])
    for mode in [("--against-bucket",), ("--against-bucket", "--check-sha256")]:
        code, found, summary = compare(policy, *mode)
        assert (code, found) == (0, set()), mode
        assert summary["backed_up_entries"] == summary["local_entries"] == 4
        assert summary["object_requests"] == 2  # the two indexes; no HEAD for a packed file

    st = os.stat(b)
    data = bytearray(b.read_bytes())
    data[0] ^= 1
    b.write_bytes(data)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert compare(policy, "--against-bucket")[:2] == (0, set())
    assert compare(policy, "--against-bucket", "--check-sha256")[:2] == (1, {("changed", "small", str(b))})

    weird = MemberInfo(b"/" + os.fsencode(root).lstrip(b"/") + b"/d/../d/a.txt", MemberType.FILE, 1, 1, 1,
                       0o100644, 0, 0, "u", "g", b"", hashlib.sha256(b"x").hexdigest())
    put_pack(bucket, "labs/cmp", "20261201T120000Z-00000003", [(weird, b"x")])
    proc = fs3g("compare", "--config", str(policy), "--against-bucket")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 1
    assert [line for line in lines if line.split(" ", 1)[0] in ("changed", "missing-in-s3", "only-in-s3")] == []
    (bad,) = [line for line in lines if line.startswith("cannot-check")]
    assert bad.startswith("cannot-check small labs/cmp/packs/20261201T120000Z-00000003/000000-00000.tar.idx\t"
                          "index holds an unusable name")
