"""The parallel walk on real generated trees: exact names, special files, unreadable and vanishing entries."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import vanishing_scandir

from fs3g_hpc.errors import UsageError
from fs3g_hpc.model.records import (Entry, EntryKind, directory_partition, merge_runs, merge_sorted, read_records,
                                    sort_key, write_records)
from fs3g_hpc.scan import ExcludeMatcher, IssueKind, ScanSettings, scan

NOBODY = 65534


def make_tree(root: Path) -> set[bytes]:
    """A small tree with hostile names; returns the exact paths of every entry under root (root included)."""
    broot = os.fsencode(str(root))
    paths = {broot}

    def add(rel: bytes, data: bytes | None = b"x", link: bytes | None = None) -> None:
        full = broot + b"/" + rel
        parent = full.rpartition(b"/")[0]
        while parent not in paths and parent != broot:
            os.makedirs(parent, exist_ok=True)
            paths.add(parent)
            parent = parent.rpartition(b"/")[0]
        if link is not None:
            os.symlink(link, full)
        elif data is None:
            os.mkdir(full)
        else:
            with open(full, "wb") as f:
                f.write(data)
        paths.add(full)

    for d in range(6):
        for f in range(40):
            add(b"proj%d/data/f%03d.dat" % (d, f), b"y" * (f * 7))
    add(b"names/new\nline")
    add(b"names/bad-utf8-\xff\xfe")
    add(b"names/" + b"L" * 255)
    deep = b"/".join([b"d" * 200] * 19)  # 19 × 201 bytes: a path over 3,800 bytes
    add(b"deep/" + deep + b"/leaf")
    add(b"links/to-file", link=b"../proj0/data/f001.dat")
    add(b"links/dangling", link=b"/nonexistent/target")
    add(b"empty-dir", None)
    return paths


@pytest.mark.parametrize("workers,in_process_entries", [(0, 0), (2, 0), (2, 7), (2, 10**6)],
                         ids=["in-process", "all-in-workers", "handed-off-after-7", "small-tree-no-workers"])
def test_every_entry_once_exact_bytes_sorted(tmp_path, workers, in_process_entries):
    root = tmp_path / "tree"
    root.mkdir()
    expected = make_tree(root)
    assert max(len(p) for p in expected) > 3800
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    result = scan([str(root)], [], work, ScanSettings(workers=workers, run_records=50,
                                                      in_process_entries=in_process_entries))
    assert len(result.runs) > 2  # spilled in bounded runs
    entries = list(result.sorted_entries(work))
    paths = [e.path for e in entries]
    assert sorted(paths) == sorted(expected) and len(paths) == len(set(paths))
    assert [sort_key(p) for p in paths] == sorted(sort_key(p) for p in paths)
    by_path = {e.path: e for e in entries}
    broot = os.fsencode(str(root))
    assert by_path[broot + b"/names/new\nline"].kind is EntryKind.FILE
    assert by_path[broot + b"/links/dangling"].kind is EntryKind.SYMLINK  # never followed
    assert by_path[broot + b"/empty-dir"].kind is EntryKind.DIRECTORY
    assert by_path[broot + b"/proj2/data/f003.dat"].size_bytes == 21
    assert result.counts.files == sum(1 for e in entries if e.kind is EntryKind.FILE)
    assert result.counts.file_bytes == sum(e.size_bytes for e in entries if e.kind is EntryKind.FILE)
    assert list(result.issues()) == []
    for run in result.runs:
        assert stat.S_IMODE(run.stat().st_mode) == 0o600


@pytest.mark.parametrize("workers", [0, 2])
def test_partitioned_runs_hold_each_directory_in_its_partition(tmp_path, workers):
    """With partitions, every run holds only its partition's directories, sorted; together they are the walk."""
    root = tmp_path / "tree"
    root.mkdir()
    expected = make_tree(root)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    result = scan([str(root)], [], work, ScanSettings(workers=workers, run_records=50, in_process_entries=0,
                                                      partitions=3))
    assert len(result.partition_runs) == 3 and all(result.partition_runs)
    assert sorted(result.runs) == sorted(r for runs in result.partition_runs for r in runs)
    for p, runs in enumerate(result.partition_runs):
        for run in runs:
            entries = list(read_records(run))
            assert len(entries) <= 50
            assert [e.key for e in entries] == sorted(e.key for e in entries)
            assert all(directory_partition(e.directory, 3) == p for e in entries)
    paths = [e.path for e in result.sorted_entries(work)]
    assert sorted(paths) == sorted(expected) and [sort_key(x) for x in paths] == sorted(map(sort_key, paths))


def test_small_tree_starts_no_worker_process(tmp_path, monkeypatch):
    """Below in_process_entries the walk never forks (what a no-op incremental of a project directory costs)."""
    root = tmp_path / "tree"
    root.mkdir()
    expected = make_tree(root)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)

    def no_fork(method):
        raise AssertionError(f"a worker process was started ({method})")

    monkeypatch.setattr(multiprocessing, "get_context", no_fork)
    result = scan([str(root)], [], work, ScanSettings(workers=2, in_process_entries=len(expected) + 1))
    assert sorted(e.path for e in result.sorted_entries(work)) == sorted(expected)
    # It fit in one run: kept in memory, sorted, no run file written and read back.
    assert result.runs == [] and not list(work.glob("run-*"))
    assert [sort_key(e.path) for e in result.held] == sorted(sort_key(p) for p in expected)
    with pytest.raises(AssertionError, match="worker process"):  # the root alone reaches the bound
        scan([str(root)], [], tmp_path, ScanSettings(workers=2, in_process_entries=1))


def test_children_of_a_directory_are_contiguous():
    names = [b"/r/a/x", b"/r/a.d/y", b"/r/a/b/z", b"/r/a/c", b"/r/a0"]
    ordered = sorted(names, key=sort_key)
    a_children = [i for i, p in enumerate(ordered) if p.rpartition(b"/")[0] == b"/r/a"]
    assert a_children == list(range(a_children[0], a_children[0] + len(a_children)))


def test_fifo_is_reported_and_never_opened(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "ok").write_bytes(b"1")
    os.mkfifo(root / "pipe")  # opening it for reading would block forever
    work = tmp_path / "work"
    work.mkdir()
    result = scan([str(root)], [], work, ScanSettings(workers=2, in_process_entries=0))
    issues = list(result.issues())
    assert [(i.path, i.kind) for i in issues] == [(os.fsencode(str(root / "pipe")), IssueKind.SPECIAL)]
    assert "FIFO" in issues[0].detail
    kinds = {e.path.rsplit(b"/", 1)[1]: e.kind for e in result.sorted_entries(work)}
    assert kinds[b"pipe"] is EntryKind.SPECIAL and kinds[b"ok"] is EntryKind.FILE


def test_vanishing_file_is_reported_and_the_walk_goes_on(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    for name in ("a", "vanish", "z"):
        (root / "sub" / name).write_bytes(b"data")
    monkeypatch.setattr(os, "scandir", vanishing_scandir(lambda e: e.name == b"vanish"))
    work = tmp_path / "work"
    work.mkdir()
    result = scan([str(root)], [], work, ScanSettings(workers=0))
    monkeypatch.undo()
    issues = list(result.issues())
    assert [(i.path.rsplit(b"/", 1)[1], i.kind) for i in issues] == [(b"vanish", IssueKind.VANISHED)]
    names = {e.path.rsplit(b"/", 1)[1] for e in result.sorted_entries(work)}
    assert {b"a", b"z"} <= names and b"vanish" not in names


@pytest.fixture
def world_tmp() -> Path:
    """A directory an unprivileged user can reach (pytest's own tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="fs3g-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path)


def test_unreadable_directory_as_unprivileged_user(world_tmp):
    """CI runs as root, which reads everything: drop to nobody in a forked child to see a real EACCES."""
    tmp_path = world_tmp
    root = tmp_path / "tree"
    (root / "open").mkdir(parents=True)
    (root / "open" / "f").write_bytes(b"1")
    (root / "locked").mkdir()
    (root / "locked" / "secret").write_bytes(b"2")
    (root / "locked").chmod(0o000)
    (root / "after").mkdir()
    (root / "after" / "g").write_bytes(b"3")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    for p in (tmp_path, root, root / "open", root / "after"):
        p.chmod(0o755)
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: unprivileged scan, report through the pipe
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = scan([str(root)], [], work, ScanSettings(workers=0))
            report = {
                "issues": [[os.fsdecode(i.path), i.kind.value, i.detail] for i in result.issues()],
                "paths": sorted(os.fsdecode(e.path) for e in result.sorted_entries(work)),
            }
            os.write(out_w, json.dumps(report).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - tell the parent why
            os.write(out_w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    (root / "locked").chmod(0o755)
    report = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report["issues"] == [[str(root / "locked"), "unreadable", "cannot list directory: Permission denied"]]
    assert str(root / "after" / "g") in report["paths"] and str(root / "open" / "f") in report["paths"]
    assert str(root / "locked") in report["paths"]  # the directory itself is listed; only its contents are not


def test_excludes(tmp_path):
    m = ExcludeMatcher(["*.tmp", "**/.snapshot", "proj*/scratch", "exact/path/file"])
    assert m.excluded(b"a/b/c.tmp", b"c.tmp")
    assert m.excluded(b"x/y/.snapshot", b".snapshot") and m.excluded(b".snapshot", b".snapshot")
    assert m.excluded(b"proj1/scratch", b"scratch") and not m.excluded(b"proj1/sub/scratch", b"scratch")
    assert m.excluded(b"exact/path/file", b"file") and not m.excluded(b"other/exact/path/file", b"file")
    assert not m.excluded(b"a/b/c.tmpx", b"c.tmpx")
    root = tmp_path / "tree"
    (root / "p/.snapshot/old").mkdir(parents=True)
    (root / "p/.snapshot/old/f").write_bytes(b"1")
    (root / "p/keep.dat").write_bytes(b"1")
    (root / "p/drop.tmp").write_bytes(b"1")
    work = tmp_path / "work"
    work.mkdir()
    result = scan([str(root)], ["*.tmp", "**/.snapshot"], work, ScanSettings(workers=2, in_process_entries=0))
    names = sorted(e.path[len(os.fsencode(str(root))):] for e in result.sorted_entries(work))
    assert names == [b"", b"/p", b"/p/keep.dat"]


def test_bad_roots(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match="root does not exist"):
        scan([str(tmp_path / "missing")], [], tmp_path, ScanSettings(workers=0))
    with pytest.raises(UsageError, match="root is not a directory"):
        scan([str(tmp_path / "file")], [], tmp_path, ScanSettings(workers=0))


def test_record_files_round_trip_and_merge_in_levels(tmp_path):
    entries = [Entry.of(b"/r/%d/\n\xff" % i, EntryKind.FILE, i, i, i, i, 0o100644, 1, 2, 3, i, 1) for i in range(300)]
    runs = []
    for k in range(10):
        chunk = sorted(entries[k::10], key=lambda e: e.key)
        path = tmp_path / f"run{k}.rec"
        assert write_records(path, chunk) == 30
        runs.append(path)
    assert list(read_records(runs[0])) == sorted(entries[0::10], key=lambda e: e.key)
    remaining = merge_runs(runs, tmp_path, fan_in=3)
    assert len(remaining) <= 3
    assert list(merge_sorted(remaining)) == sorted(entries, key=lambda e: e.key)


# --- shell glob classes in excludes ----------------------------------------------------------------------------------

GLOB_EXCLUDES = ["*.[ch]", "[!a]*.log", "**/tmp/**"]


def make_glob_tree(root: Path) -> tuple[set[bytes], set[bytes]]:
    """Relative paths the GLOB_EXCLUDES keep, and those they drop (names not UTF-8 included)."""
    keep = [b"main.o", b"a.log", b"src/a.cc", b"src/x.[ch]", b"src/atmp/f", b"docs/tmpfile", b"abc.log.gz",
            b"\xff\xfe.txt", b"n\xe9/a-\xff.log"]
    drop = [b"main.c", b"src/lib.h", b"b.log", b"src/\xff.log", b"\xe9t\xe9.c", b"tmp/x", b"src/tmp/deep/y",
            b"src/tmp/z.dat", b"tmp"]
    broot = os.fsencode(str(root))
    for rel in keep + drop:
        path = broot + b"/" + rel
        if rel == b"tmp":
            continue  # the directory itself, made by tmp/x
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")
    dirs = {b"src", b"docs", b"src/atmp", b"n\xe9"}
    return set(keep) | dirs, set(drop) | {b"src/tmp", b"src/tmp/deep"}


def test_glob_classes_match_as_in_the_shell():
    """`[...]` was taken literally: `*.[ch]` matched only a file named `x.[ch]`."""
    m = ExcludeMatcher(GLOB_EXCLUDES + ["data[0-9][[:digit:]]", "[^.]*.bak", "run-?.out", "lit\\*"])
    assert m.excluded(b"d/x.c", b"x.c") and m.excluded(b"x.h", b"x.h")
    assert not m.excluded(b"d/x.[ch]", b"x.[ch]") and not m.excluded(b"x.o", b"x.o")
    assert m.excluded(b"b.log", b"b.log") and not m.excluded(b"a.log", b"a.log") and not m.excluded(b"x/a.l", b"a.l")
    assert m.excluded(b"data42", b"data42") and not m.excluded(b"data4x", b"data4x")
    assert m.excluded(b"x.bak", b"x.bak") and not m.excluded(b".x.bak", b".x.bak")
    assert m.excluded("run-é.out".encode(), "run-é.out".encode()) and m.excluded(b"run-\xff.out", b"run-\xff.out")
    assert not m.excluded(b"run-ab.out", b"run-ab.out")
    assert m.excluded(b"lit*", b"lit*") and not m.excluded(b"litx", b"litx")
    assert m.excluded(b"tmp", b"tmp") and m.excluded(b"a/b/tmp", b"tmp") and m.excluded(b"a/tmp/b/c", b"c")
    assert not m.excluded(b"a/tmpx/c", b"c") and not m.excluded(b"a/xtmp", b"xtmp")
    unclosed = ExcludeMatcher(["a[b"])  # as the shell: an unclosed `[` is literal
    assert unclosed.excluded(b"a[b", b"a[b") and not unclosed.excluded(b"ab", b"ab")


@pytest.mark.parametrize("workers", [0, 2])
def test_glob_classes_exclude_from_a_real_tree(tmp_path, workers):
    root = tmp_path / "tree"
    keep, drop = make_glob_tree(root)
    work = tmp_path / "work"
    work.mkdir()
    result = scan([str(root)], GLOB_EXCLUDES, work, ScanSettings(workers=workers, in_process_entries=0))
    broot = os.fsencode(str(root))
    walked = {e.path[len(broot) + 1:] for e in result.sorted_entries(work)} - {b""}
    assert walked == keep and not walked & drop
