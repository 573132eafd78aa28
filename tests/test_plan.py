"""The planner end to end on generated trees: shards, bounds, incremental diff, manifest, bad input."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import stat
import tempfile
import textwrap
from pathlib import Path

import pytest
import helpers
from conftest import vanishing_scandir

from fs3g_hpc.config import load_policy
from fs3g_hpc.errors import UsageError
from fs3g_hpc.backup.catalog import update_catalog
from fs3g_hpc.runs.catalog import catalog_path
from fs3g_hpc.runs.layout import RunLayout
from fs3g_hpc.model.entries import EntryClass, classify
from fs3g_hpc.model.records import Entry, EntryKind, read_records, write_records
from fs3g_hpc.backup.plan import Change, PlanOptions, ShardAssigner, ShardSettings, diff, make_plan, unit_bytes
from fs3g_hpc.scan import ScanSettings

fs3g = functools.partial(helpers.fs3g, timeout=300)

NOBODY = 65534


def entry(path: bytes, size: int = 1, mtime: int = 1, kind: EntryKind = EntryKind.FILE, dev: int = 1,
          ino: int = 0, nlink: int = 1) -> Entry:
    return Entry.of(path, kind, size, mtime, mtime, mtime, 0o100644, 0, 0, dev, ino or hash(path) & 0xFFFFFFFF, nlink)


# --- pure parts ------------------------------------------------------------------------------------------------------

def test_diff_merge_join():
    old = sorted([entry(b"/r/a"), entry(b"/r/b", size=5), entry(b"/r/c"), entry(b"/r/z/gone")], key=lambda e: e.key)
    now = sorted([entry(b"/r/a"), entry(b"/r/b", size=6), entry(b"/r/c", kind=EntryKind.SYMLINK),
                  entry(b"/r/d"), entry(b"/r/a2", mtime=9)], key=lambda e: e.key)
    result = {e.path: change for change, e in diff(now, old)}
    assert result == {b"/r/a": Change.UNCHANGED, b"/r/b": Change.CHANGED, b"/r/c": Change.CHANGED,
                      b"/r/d": Change.NEW, b"/r/a2": Change.NEW, b"/r/z/gone": Change.DELETED}
    assert all(c is Change.NEW for c, _ in diff(now, None))


def test_directories_are_diffed_by_mtime_mode_and_owner():
    def directory(path: bytes, mtime: int = 1, mode: int = 0o40755, uid: int = 0) -> Entry:
        return Entry.of(path, EntryKind.DIRECTORY, 4096, mtime, mtime, mtime, mode, uid, 0, 1, 7, 2)

    old = sorted([directory(b"/r"), directory(b"/r/same"), directory(b"/r/touched"), directory(b"/r/chmod"),
                  directory(b"/r/chown"), directory(b"/r/gone")], key=lambda e: e.key)
    now = sorted([directory(b"/r"), directory(b"/r/same"), directory(b"/r/touched", mtime=2),
                  directory(b"/r/chmod", mode=0o40700), directory(b"/r/chown", uid=NOBODY), directory(b"/r/new"),
                  directory(b"/r/atime-only")._replace(atime_ns=99)], key=lambda e: e.key)
    old.append(directory(b"/r/atime-only"))
    old.sort(key=lambda e: e.key)
    result = {e.path: change for change, e in diff(now, old)}
    assert result == {b"/r": Change.UNCHANGED, b"/r/same": Change.UNCHANGED, b"/r/touched": Change.CHANGED,
                      b"/r/chmod": Change.CHANGED, b"/r/chown": Change.CHANGED, b"/r/new": Change.NEW,
                      b"/r/gone": Change.DELETED, b"/r/atime-only": Change.UNCHANGED}


def test_shard_assigner_bounds_balance_and_oversize():
    rng = random.Random(7)
    settings = ShardSettings(max_files=100, max_bytes=10_000_000)
    units = []
    for d in range(40):
        for f in range(rng.randint(1, 60)):
            size = rng.choice([10, 1000, 50_000, 2_000_000])
            units.append([entry(b"/r/d%02d/f%03d" % (d, f), size=size)])
    units.insert(50, [entry(b"/r/huge", size=25_000_000)])  # over max_bytes: a shard of its own
    total_files = sum(len(u) for u in units)
    total_bytes = sum(unit_bytes(u) for u in units)
    assigner = ShardAssigner(settings, total_files, total_bytes)
    shards: dict[int, list[list[Entry]]] = {}
    for unit in units:
        shards.setdefault(assigner.assign(unit), []).append(unit)
    assert sorted(shards) == list(range(len(shards)))
    for index, members in shards.items():
        files = sum(len(u) for u in members)
        size = sum(unit_bytes(u) for u in members)
        if any(e.path == b"/r/huge" for u in members for e in u):
            assert len(members) == 1
            continue
        assert files <= settings.max_files and size <= settings.max_bytes
    costs = [sum(unit_bytes(u) + len(u) * settings.per_file_cost_bytes for u in m) for i, m in shards.items()
             if not any(e.path == b"/r/huge" for u in m for e in u)]
    # Balanced: no ordinary shard carries more than twice the median's work (the last may be a remainder).
    median = sorted(costs)[len(costs) // 2]
    assert max(costs[:-1]) <= 2 * median


def test_classes_follow_the_original_tool():
    assert classify(entry(b"/r/a", size=131072), 131072) is EntryClass.SMALL
    assert classify(entry(b"/r/b", size=131073), 131072) is EntryClass.LARGE
    assert classify(entry(b"/r/c", kind=EntryKind.SYMLINK), 131072) is EntryClass.SYMLINK
    assert classify(entry(b"/r/d", kind=EntryKind.DIRECTORY), 131072) is None
    assert classify(entry(b"/r/e", kind=EntryKind.SPECIAL), 131072) is None


def test_hard_link_group_counts_its_inode_once():
    group = [entry(b"/r/a", size=1000, ino=5, nlink=3), entry(b"/r/b", size=1000, ino=5, nlink=3),
             entry(b"/r/c", size=1000, ino=5, nlink=3)]
    assert unit_bytes(group) == 1000


# --- end to end ------------------------------------------------------------------------------------------------------

def build_tree(root: Path) -> dict[bytes, EntryKind]:
    """~2,000 files in 30 directories, hostile names, symlinks, hard links, a large file and a FIFO."""
    broot = os.fsencode(str(root))
    rng = random.Random(3)
    expected: dict[bytes, EntryKind] = {}
    for d in range(30):
        directory = broot + b"/proj%02d" % d
        os.makedirs(directory)
        for f in range(rng.randint(20, 120)):
            path = directory + b"/file%04d.dat" % f
            with open(path, "wb") as fh:
                fh.write(b"z" * rng.choice([0, 100, 5000, 150_000]))
            expected[path] = EntryKind.FILE
    hostile = broot + b"/hostile"
    os.makedirs(hostile)
    for name in (b"new\nline", b"bad-\xff\xfe-utf8", b"L" * 255, b"tab\tand space ", b"back\\slash"):
        with open(hostile + b"/" + name, "wb") as fh:
            fh.write(name)
        expected[hostile + b"/" + name] = EntryKind.FILE
    deep = hostile + b"/" + b"/".join([b"d" * 200] * 19)
    os.makedirs(deep)
    with open(deep + b"/leaf", "wb") as fh:
        fh.write(b"deep")
    expected[deep + b"/leaf"] = EntryKind.FILE
    os.symlink(b"proj00/file0001.dat", broot + b"/link-to-file")
    os.symlink(b"/no/such/target", broot + b"/dangling")
    expected[broot + b"/link-to-file"] = expected[broot + b"/dangling"] = EntryKind.SYMLINK
    os.link(broot + b"/proj01/file0002.dat", broot + b"/proj05/hardlink-a")
    os.link(broot + b"/proj01/file0002.dat", broot + b"/proj20/hardlink-b")
    expected[broot + b"/proj05/hardlink-a"] = expected[broot + b"/proj20/hardlink-b"] = EntryKind.FILE
    with open(broot + b"/big.bin", "wb") as fh:
        fh.truncate(3 * 1024 * 1024)  # over the test's max_bytes: a shard of its own
    expected[broot + b"/big.bin"] = EntryKind.FILE
    os.mkfifo(broot + b"/pipe")
    return expected


def write_policy(tmp: Path, root: Path, **shards) -> Path:
    bounds = {"max_files": 300, "max_bytes": "2MiB", **shards}
    return helpers.write_policy(tmp, root, "fs3g-plan-test", name="plantest", file="lab.yaml", exclude=["*.tmp"],
                                shards=f"max_files: {bounds['max_files']}, max_bytes: {bounds['max_bytes']}")

def shard_entries(run_dir: Path) -> list[list[Entry]]:
    layout = RunLayout(run_dir)
    header = json.loads(layout.plan_file.read_text())
    return [list(read_records(layout.shards_dir / s["file"])) for s in header["shards"]]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[bytes, EntryKind], Path]:
    root = tmp_path / "data"
    root.mkdir()
    expected = build_tree(root)
    return root, expected, write_policy(tmp_path, root)


def test_plan_covers_every_file_once_within_bounds(tree, tmp_path):
    root, expected, policy_file = tree
    run_dir = tmp_path / "runs" / "first"
    proc = fs3g("plan", "--config", str(policy_file), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"plan: {run_dir}\n")
    assert "skipped 1" in proc.stdout and "arrays 1" in proc.stdout

    shards = shard_entries(run_dir)
    seen = [e.path for shard in shards for e in shard]
    assert sorted(seen) == sorted(expected)  # every file and symlink exactly once, names byte for byte
    assert len(seen) == len(set(seen))
    by_path = {e.path: e for shard in shards for e in shard}
    assert all(by_path[p].kind is k for p, k in expected.items())
    for shard in shards:
        files, size = len(shard), unit_bytes(shard)
        if any(e.path.endswith(b"/big.bin") for e in shard):
            assert len(shard) == 1  # over max_bytes: alone
        else:
            assert files <= 300 and size <= 2 * 1024 * 1024
    broot = os.fsencode(str(root))
    link_shards = {i for i, shard in enumerate(shards) for e in shard
                   if e.path in (broot + b"/proj05/hardlink-a", broot + b"/proj20/hardlink-b",
                                 broot + b"/proj01/file0002.dat")}
    assert len(link_shards) == 1  # the hard-link group stays together
    # Small files of one directory stay together: most directories land in one shard.
    dirs: dict[bytes, set[int]] = {}
    for i, shard in enumerate(shards):
        for e in shard:
            dirs.setdefault(e.path.rpartition(b"/")[0], set()).add(i)
    assert sum(len(s) > 1 for s in dirs.values()) <= len(shards)

    layout = RunLayout(run_dir)
    header = json.loads(layout.plan_file.read_text())
    assert header["shard_count"] == len(shards) and header["lab"] == "plantest"
    assert header["changes"]["new"]["files"] == len(expected)
    assert header["planned"]["files"] == len(expected)
    assert header["policy"]["shards"]["max_files"] == 300 and header["catalog"] is None
    assert sum(b["files"] for b in header["size_histogram"]) == sum(k is EntryKind.FILE for k in expected.values())
    assert header["arrays"]["count"] == 1
    skipped = [json.loads(line) for line in layout.skipped_file.read_text().splitlines()]
    assert [(s["path"], s["kind"]) for s in skipped] == [(str(root / "pipe"), "special file skipped")]
    for path in [run_dir, *run_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert not (run_dir / ".work").exists()


def test_replan_plans_exactly_what_changed(tree, tmp_path):
    root, expected, policy_file = tree
    policy = load_policy(policy_file, environ={})
    first = tmp_path / "runs" / "first"
    options = PlanOptions(catalog=catalog_path(policy), scan=ScanSettings(workers=2))
    make_plan(policy, first, options)
    work = tmp_path / "catwork"
    work.mkdir()
    assert update_catalog(None, RunLayout(first), catalog_path(policy), work) == len(expected)

    nothing = make_plan(policy, tmp_path / "runs" / "nothing", options)
    assert nothing.header["planned"]["files"] == 0 and nothing.header["shard_count"] == 0
    assert nothing.header["changes"]["unchanged"]["files"] == len(expected)
    assert nothing.header["catalog"]["path"] == str(catalog_path(policy))

    touched = [root / "proj03" / "file0001.dat", root / "hostile" / "new\nline"]
    for path in touched:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    added = [root / "proj07" / "added-1", root / "proj29" / "added-2"]
    for path in added:
        path.write_bytes(b"new")
    (root / "proj08" / "ignored.tmp").write_bytes(b"excluded")
    removed = [root / "proj09" / "file0000.dat", root / "proj10" / "file0001.dat"]
    for path in removed:
        path.unlink()

    second = tmp_path / "runs" / "second"
    summary = make_plan(policy, second, options)
    planned = {e.path for shard in shard_entries(second) for e in shard}
    assert planned == {os.fsencode(str(p)) for p in touched + added}
    changes = summary.header["changes"]
    assert (changes["new"]["files"], changes["changed"]["files"], changes["deleted"]["files"]) == (2, 2, 2)
    assert changes["unchanged"]["files"] == len(expected) - 4
    deleted = {e.path for e in read_records(RunLayout(second).deleted_file)}
    assert deleted == {os.fsencode(str(p)) for p in removed}

    update_catalog(catalog_path(policy), RunLayout(second), catalog_path(policy), work)
    third = make_plan(policy, tmp_path / "runs" / "third", options)
    assert third.header["planned"]["files"] == 0
    assert third.header["changes"]["unchanged"]["files"] == len(expected)  # -2 removed, +2 added

    full = make_plan(policy, tmp_path / "runs" / "full", PlanOptions(full=True, catalog=catalog_path(policy)))
    assert full.header["planned"]["files"] == len(expected) and full.header["catalog"] is None


def test_catalog_keeps_old_record_of_a_file_that_failed(tree, tmp_path):
    root, expected, policy_file = tree
    policy = load_policy(policy_file, environ={})
    options = PlanOptions(catalog=catalog_path(policy), scan=ScanSettings(workers=0))
    first = tmp_path / "runs" / "first"
    make_plan(policy, first, options)
    work = tmp_path / "catwork"
    work.mkdir()
    failed = os.fsencode(str(root / "proj02" / "file0003.dat"))
    update_catalog(None, RunLayout(first), catalog_path(policy), work, backed_up=lambda e: e.path != failed)
    again = make_plan(policy, tmp_path / "runs" / "again", options)
    assert {e.path for shard in shard_entries(again.run_dir) for e in shard} == {failed}


def test_plan_survives_a_vanishing_file(tree, tmp_path, monkeypatch):
    root, expected, policy_file = tree
    policy = load_policy(policy_file, environ={})
    vanishing = vanishing_scandir(lambda e: e.name == b"file0005.dat" and b"/proj04/" in e.path)

    monkeypatch.setattr(os, "scandir", vanishing)
    summary = make_plan(policy, tmp_path / "runs" / "v", PlanOptions(scan=ScanSettings(workers=0)))
    monkeypatch.undo()
    skipped = [json.loads(l) for l in RunLayout(summary.run_dir).skipped_file.read_text().splitlines()]
    assert sorted(s["kind"] for s in skipped) == ["special file skipped", "vanished"]
    assert summary.header["planned"]["files"] == len(expected) - 1


def test_plan_reports_unreadable_directory_as_nobody(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="fs3g-plan-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "data"
        (root / "open").mkdir(parents=True)
        (root / "open" / "f").write_bytes(b"1")
        (root / "locked").mkdir()
        (root / "locked" / "secret").write_bytes(b"2")
        for p in (root, root / "open"):
            p.chmod(0o755)
        (root / "locked").chmod(0o000)
        runs = base / "runs"
        runs.mkdir()
        os.chown(runs, NOBODY, NOBODY)
        policy = load_policy(write_policy(base, root), environ={})
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                summary = make_plan(policy, runs / "p", PlanOptions(scan=ScanSettings(workers=0)))
                os.write(w, json.dumps({"planned": summary.header["planned"]["files"],
                                        "skipped": RunLayout(summary.run_dir).skipped_file.read_text()}).encode())
                code = 0
            except BaseException as e:  # noqa: BLE001
                os.write(w, json.dumps({"error": repr(e)}).encode())
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = json.loads(f.read())
        os.waitpid(pid, 0)
        assert "error" not in report, report
        assert report["planned"] == 1
        skipped = json.loads(report["skipped"])
        assert (skipped["path"], skipped["kind"]) == (str(root / "locked"), "unreadable")
    finally:
        (base / "data" / "locked").chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("case", ["missing-root", "root-is-file", "run-dir-not-empty", "run-dir-is-file",
                                  "bad-config"])
def test_bad_input_exit_2_one_line(case, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    run_dir = tmp_path / "run"
    if case == "missing-root":
        policy = write_policy(tmp_path, tmp_path / "nowhere")
        expect = f"fs3g: error: {tmp_path / 'nowhere'}: roots: root does not exist (fix roots in the lab policy)"
    elif case == "root-is-file":
        (tmp_path / "file").write_bytes(b"")
        policy = write_policy(tmp_path, tmp_path / "file")
        expect = f"fs3g: error: {tmp_path / 'file'}: roots: root is not a directory"
    elif case == "run-dir-not-empty":
        policy = write_policy(tmp_path, root)
        run_dir.mkdir()
        (run_dir / "something").write_bytes(b"")
        expect = (f"fs3g: error: {run_dir}: run directory exists and is not empty "
                  "(give a new or empty directory with --run-dir)")
    elif case == "run-dir-is-file":
        policy = write_policy(tmp_path, root)
        run_dir.write_bytes(b"")
        expect = f"fs3g: error: {run_dir}: run directory exists and is not a directory (give a new path with --run-dir)"
    else:
        policy = tmp_path / "lab.yaml"
        policy.write_text("lab: {name: x}\nroots: [/data]\ns3: {bucket: B}\nrun_root: /r\n")
        expect = f"{policy}: s3.bucket: bucket name 'B' must be 3 to 63 characters long (line 3)"
    proc = fs3g("plan", "--config", str(policy), "--run-dir", str(run_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [expect]
    if case == "run-dir-not-empty":
        assert sorted(p.name for p in run_dir.iterdir()) == ["something"]  # nothing written into it


def test_arrays_needed_follow_the_clusters_max_array_size(slurm_cluster, tmp_path):
    """The real test cluster's MaxArraySize (40): 50 shards need 2 arrays."""
    root = tmp_path / "data"
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(50):
            (root / f"d{d}" / f"f{f}").write_bytes(b"x")
    policy = write_policy(tmp_path, root, max_files=10)
    proc = fs3g("plan", "--config", str(policy), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    header = json.loads((tmp_path / "run" / "plan.json").read_text())
    max_array = int(slurm_cluster["max_array_size"])
    assert header["shard_count"] == 50
    assert header["arrays"] == {"count": -(-50 // max_array), "max_array_size": max_array, "source": "from scontrol"}
    assert f"arrays {-(-50 // max_array)} (MaxArraySize {max_array}, from scontrol)" in proc.stdout


def test_entries_under_an_unreadable_directory_are_not_reported_deleted(tree, tmp_path, monkeypatch):
    root, expected, policy_file = tree
    policy = load_policy(policy_file, environ={})
    options = PlanOptions(catalog=catalog_path(policy), scan=ScanSettings(workers=0))
    first = make_plan(policy, tmp_path / "runs" / "first", options)
    work = tmp_path / "catwork"
    work.mkdir()
    update_catalog(None, RunLayout(first.run_dir), catalog_path(policy), work)
    locked = os.fsencode(str(root / "proj03"))
    in_locked = sum(1 for p in expected if p.startswith(locked + b"/"))
    assert in_locked > 0
    real_scandir = os.scandir

    def scandir(path):
        if path == locked:  # what EACCES looks like to the walker (the real one is tested as nobody)
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    second = make_plan(policy, tmp_path / "runs" / "second", options)
    monkeypatch.undo()
    assert second.header["kept_unreadable"] == in_locked
    assert list(read_records(RunLayout(second.run_dir).deleted_file)) == []
    assert second.header["planned"]["files"] == 0
    update_catalog(catalog_path(policy), RunLayout(second.run_dir), catalog_path(policy), work)
    third = make_plan(policy, tmp_path / "runs" / "third", options)  # readable again: all still known
    assert third.header["planned"]["files"] == 0
    assert third.header["changes"]["unchanged"]["files"] == len(expected)


def test_plan_applies_shell_glob_classes(tmp_path):
    """`fs3g plan` with `*.[ch]`, `[!a]*.log` and `**/tmp/**` on a real tree, names that are not UTF-8 included."""
    from test_scan import GLOB_EXCLUDES, make_glob_tree

    root = tmp_path / "tree"
    keep, drop = make_glob_tree(root)
    lab = tmp_path / "lab.yaml"
    lab.write_text(textwrap.dedent(f"""\
        lab: {{name: globs}}
        roots: [{root}]
        exclude: {json.dumps(GLOB_EXCLUDES)}
        s3: {{bucket: fs3g-plan-test}}
        run_root: {tmp_path / 'runs'}
        """))
    proc = fs3g("plan", "--config", str(lab), "--run-dir", str(tmp_path / "run"), "--scan-workers", "2")
    assert proc.returncode == 0, proc.stderr
    broot = os.fsencode(str(root))
    planned = {e.path[len(broot) + 1:] for shard in shard_entries(tmp_path / "run") for e in shard}
    assert planned == {p for p in keep if os.path.isfile(broot + b"/" + p)}
    assert not planned & drop


@pytest.mark.parametrize("pattern,message", [
    ("[z-a]*", "range z-a is empty"), ("[[:letter:]]", "unknown class [:letter:]"),
    ("[é-ü]", "ranges must be between ASCII characters"),
])
def test_bad_exclude_pattern_fails_at_load(tmp_path, pattern, message):
    lab = tmp_path / "lab.yaml"
    lab.write_text(f"lab: {{name: g}}\nroots: [/data]\nexclude: [ok.tmp, {json.dumps(pattern)}]\n"
                   "s3: {bucket: fs3g-plan-test}\nrun_root: /scratch/runs\n")
    proc = fs3g("validate", str(lab))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{lab}: exclude: item 1: {pattern!r}: ") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


# --- the partitioned diff --------------------------------------------------------------------------------------------

def plan_outputs(run_dir: Path) -> dict:
    """Everything a plan says, minus what differs between any two plans (when, where): records as tuples."""
    layout = RunLayout(run_dir)
    header = json.loads(layout.plan_file.read_text())
    for key in ("created", "catalog", "run_id"):
        header.pop(key, None)
    # A directory's atime moves each time a walk lists it (the plans walk one after the other): never compared.
    def records(entries) -> list[Entry]:
        return [e._replace(atime_ns=0) if e.kind is EntryKind.DIRECTORY else e for e in entries]

    return {"header": header, "shards": [records(shard) for shard in shard_entries(run_dir)],
            "deleted": records(read_records(layout.deleted_file)),
            "directories": records(read_records(layout.directories_file))}


@pytest.mark.parametrize("max_files", [300, 7])  # 7: cuts inside directories, every shard boundary a slow path
def test_partitioned_diff_plans_exactly_what_one_process_plans(tmp_path, max_files):
    """Hostile names, symlinks, hard links (two groups, one new), a file over max_bytes, then changes, additions,
    deletions (a whole directory too) and a re-plan with nothing changed: the plan with 3 diff processes is the
    single-process plan, shard by shard and record by record."""
    root = tmp_path / "data"
    root.mkdir()
    build_tree(root)
    policy = load_policy(write_policy(tmp_path, root, max_files=max_files), environ={})
    # Tiny runs: the walk spills many runs per partition even on this small tree.
    one = ScanSettings(workers=2, run_records=97, in_process_entries=0)
    three = ScanSettings(workers=2, run_records=97, in_process_entries=0, partitions=3)
    runs = tmp_path / "runs"

    def both(name: str, **kw) -> dict:
        a = make_plan(policy, runs / f"{name}-1", PlanOptions(scan=one, **kw))
        b = make_plan(policy, runs / f"{name}-3", PlanOptions(scan=three, **kw))
        outputs = plan_outputs(a.run_dir)
        assert plan_outputs(b.run_dir) == outputs
        return outputs

    first = both("first")
    assert sum(len(s) for s in first["shards"]) == first["header"]["planned"]["files"] > 1000
    work = tmp_path / "catwork"
    work.mkdir()
    update_catalog(None, RunLayout(runs / "first-1"), catalog_path(policy), work)

    nothing = both("nothing", catalog=catalog_path(policy))
    assert nothing["shards"] == [] and nothing["deleted"] == []

    os.utime(root / "proj03" / "file0001.dat", ns=(1_000_000_000, 1_000_000_000))
    (root / "hostile" / "new\nline").write_bytes(b"changed size")
    (root / "proj07" / "added \xe9").write_bytes(b"new")
    os.link(root / "proj02" / "file0003.dat", root / "proj11" / "new-hardlink")
    (root / "proj09" / "file0000.dat").unlink()
    shutil.rmtree(root / "proj12")
    (root / "proj13" / "sub").mkdir()
    changed = both("changed", catalog=catalog_path(policy))
    planned = {e.path for shard in changed["shards"] for e in shard}
    broot = os.fsencode(str(root))
    assert {broot + b"/proj03/file0001.dat", broot + b"/hostile/new\nline", broot + b"/proj07/added \xc3\xa9",
            broot + b"/proj11/new-hardlink"} <= planned
    assert broot + b"/proj09/file0000.dat" in {e.path for e in changed["deleted"]}
    assert sum(e.path.startswith(broot + b"/proj12/") for e in changed["deleted"]) > 10
    assert broot + b"/proj13/sub" in {e.path for e in changed["directories"]}

    full = both("full", full=True, catalog=catalog_path(policy))
    assert full["header"]["changes"]["new"]["files"] == full["header"]["planned"]["files"]


def test_a_damaged_catalog_fails_the_partitioned_plan_by_name(tree, tmp_path):
    root, expected, policy_file = tree
    policy = load_policy(policy_file, environ={})
    catalog = catalog_path(policy)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted((entry(os.fsencode(str(root / "proj01" / f"x{i}"))) for i in range(50)), key=lambda e: e.key)
    write_records(catalog, entries[::-1])  # out of order
    options = PlanOptions(catalog=catalog, scan=ScanSettings(workers=2, run_records=97, in_process_entries=0,
                                                              partitions=2))
    with pytest.raises(UsageError) as raised:
        make_plan(policy, tmp_path / "runs" / "bad", options)
    assert str(catalog) in str(raised.value) and "out of order" in str(raised.value)
    assert not (tmp_path / "runs" / "bad").exists()


def test_partitioned_diff_against_a_snapshot_of_packed_files_plans_what_one_process_plans(moto_bucket, tmp_path):
    """A real backup into packs (catalog format 3: every file's record holds its pack location) and its snapshot;
    the run root lost, the tree changed: the plan with 3 diff processes, diffing against the catalog downloaded from
    the bucket's snapshot, is the single-process plan's, and a deleted file's record keeps its pack location."""
    from fs3g_hpc.model.packs import PackRef
    from fs3g_hpc.model.records import packed
    from fs3g_hpc.snapshots.baseline import prepare_baseline

    root = tmp_path / "data"
    root.mkdir()
    helpers.make_tree(root, 40, 30)
    os.link(root / "proj01" / "f0001.dat", root / "proj02" / "link-of-f0001")
    os.symlink("proj00/f0000.dat", root / "link-to-file")
    policy_file = helpers.write_policy(tmp_path, root, moto_bucket, name="partpacks", prefix="labs/partpacks",
                                       shards="max_files: 400", storage="small_files: packs")
    proc = fs3g("backup", "--config", str(policy_file), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    policy = load_policy(policy_file, environ={})
    locations = {e.path: e.location for e in read_records(catalog_path(policy)) if e.kind is not EntryKind.DIRECTORY}
    assert len(locations) == 1202 and all(locations.values())

    shutil.rmtree(tmp_path / "runs")  # the scratch purge: the local catalog is gone
    (root / "proj03" / "f0004.dat").unlink()
    shutil.rmtree(root / "proj05")
    (root / "proj07" / "f0002.dat").write_bytes(b"changed")
    (root / "proj08" / "added").write_bytes(b"new")
    os.link(root / "proj09" / "f0003.dat", root / "proj10" / "new-link")
    said: list[str] = []
    plans = tmp_path / "plans"

    def plan(name: str, partitions: int) -> dict:
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)  # each plan starts from the snapshot
        settings = ScanSettings(workers=2, run_records=97, in_process_entries=0, partitions=partitions)
        summary = make_plan(policy, plans / name, PlanOptions(
            catalog=catalog_path(policy), scan=settings,
            prepare_catalog=lambda: prepare_baseline(policy, full=False, say=said.append)))
        assert summary.header["catalog"]["path"] == str(catalog_path(policy))
        return plan_outputs(summary.run_dir)

    one = plan("one", 1)
    assert plan("three", 3) == one
    assert len(said) == 2 and all("using the bucket's newest snapshot" in line for line in said), said

    broot = os.fsencode(str(root))
    deleted = {e.path: e for e in one["deleted"]}
    assert broot + b"/proj03/f0004.dat" in deleted and broot + b"/proj05" in deleted
    assert sum(p.startswith(broot + b"/proj05/") for p in deleted) == 30
    for path, record in deleted.items():
        if record.kind is not EntryKind.DIRECTORY:
            assert packed(record) and record.location == locations[path]
            PackRef.decode(record.location, path.decode())
    planned = {e.path for shard in one["shards"] for e in shard}
    assert planned == {broot + b"/proj07/f0002.dat", broot + b"/proj08/added", broot + b"/proj10/new-link"}


@pytest.mark.parametrize("max_files", [300, 7])
def test_plan_made_in_the_walk_is_the_diffs_plan(tmp_path, max_files):
    """Without a catalog the walkers plan each directory as they list it (NewTreeSink): on the hostile tree (names
    with newlines and invalid UTF-8, a 19-level deep path, symlinks, a hard-link group, a file over max_bytes, a FIFO,
    an excluded name) the outputs are the diff's, record by record, walked in this process or by 2 workers, with
    tiny runs (many block files, more than the merge's fan-in) and with the default ones; then with --full beside a
    catalog."""
    root = tmp_path / "data"
    root.mkdir()
    build_tree(root)
    (root / "proj04" / "skip.tmp").write_bytes(b"excluded")
    policy = load_policy(write_policy(tmp_path, root, max_files=max_files), environ={})
    runs = tmp_path / "runs"
    reference = make_plan(policy, runs / "diff", PlanOptions(scan=ScanSettings(workers=0), plan_in_walk=False))
    expected = plan_outputs(reference.run_dir)
    assert expected["header"]["planned"]["files"] > 1000 and expected["directories"]
    assert expected["header"]["skipped"] == 1  # the FIFO
    settings = {"in-process": ScanSettings(workers=0), "in-process-tiny": ScanSettings(workers=0, run_records=7),
                "workers": ScanSettings(workers=2, in_process_entries=0),
                "workers-tiny": ScanSettings(workers=2, run_records=3, in_process_entries=50, partitions=2)}
    for name, scan_settings in settings.items():
        summary = make_plan(policy, runs / name, PlanOptions(scan=scan_settings))
        assert plan_outputs(summary.run_dir) == expected, name
    assert len(list((runs / "diff").iterdir())) == len(list((runs / "workers").iterdir()))

    work = tmp_path / "catwork"
    work.mkdir()
    update_catalog(None, RunLayout(reference.run_dir), catalog_path(policy), work)
    full = make_plan(policy, runs / "full", PlanOptions(full=True, catalog=catalog_path(policy),
                                                         scan=ScanSettings(workers=2, in_process_entries=0)))
    full_outputs = plan_outputs(full.run_dir)
    assert full_outputs["header"].pop("full") is True
    assert {**expected, "header": {k: v for k, v in expected["header"].items() if k != "full"}} == full_outputs


def test_directory_run_files_merge_in_path_order_beyond_the_fan_in(tmp_path):
    """merge_directory_run_files: 9 files of interleaved directories, merged 2 at a time (4 levels): one stream in key
    prefix order holding every run once, its records intact; the merged-away files are removed."""
    from fs3g_hpc.backup.plan import encode_directory_run, merge_directory_run_files
    from fs3g_hpc.model import zlibs
    from fs3g_hpc.model.records import decode_records

    paths, expected = [], {}
    for f in range(9):
        path = tmp_path / f"blocks-{f}.runs"
        with open(path, "wb") as out:
            for d in range(f, 60, 9):
                directory = b"/data/d%03d" % d
                entries = [entry(directory + b"/f%d" % i, size=i) for i in range(d % 4 + 1)]
                out.write(encode_directory_run(directory + b"\0", entries, 2))
                expected[directory + b"\0"] = entries
        paths.append(path)
    merged = list(merge_directory_run_files(paths, tmp_path, fan_in=2))
    assert [run.key_prefix for run in merged] == sorted(expected)
    for run in merged:
        entries = expected[run.key_prefix]
        assert decode_records(zlibs.decompress(run.blob), "t") == entries
        assert (run.files, run.bytes, run.small, run.large) == (len(entries), sum(e.size_bytes for e in entries),
                                                                min(len(entries), 3), max(0, len(entries) - 3))
    assert not any(p.exists() for p in paths)
