"""Parallel tree walk: roots -> sorted runs of entry records on disk, plus the entries it could not take.

Worker processes share one queue of directories (`os.scandir`, one `lstat` per entry, symlinks never followed);
each keeps at most `run_records` entries in memory, then sorts them and writes a run file, so memory is bounded by

    workers × run_records × ~300 bytes   (+ one queue entry per directory not yet walked)

whatever the size of the tree. `records.merge_sorted` turns the runs into one sorted stream. No S3, no Slurm here.

With `partitions` > 1 each walker keeps one buffer per partition (`records.directory_partition` of the directory
being listed, so the choice costs one hash per directory, none per entry); a spill writes one sorted run per
partition, and `ScanResult.partition_runs` lists them, for a diff that runs one process per partition. The
buffers together still hold at most `run_records` entries.

With a `directory_sink` (`scan(..., directory_sink=factory)`) the walkers keep no runs: each makes its own sink
(`factory(tag)`, in its own process) and hands it every listing whole, as the list of that directory's entries, in
the order read (the root entries one by one); the sink's `finish()` result comes back in `ScanResult.sink_results`.
The planner plans a tree without a catalog this way, in the walkers (backup/plan.py NewTreeSink). Memory is then the
sink's (its own bound) plus one directory's entries.

FIFOs, sockets and devices are only `lstat`-ed (never opened, so nothing hangs) and reported as skipped; an
unreadable directory or an entry that vanishes mid-walk is reported by name and the walk goes on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import re
import stat
import sys
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from .errors import Fs3gError, UsageError
from .model import globs
from .model.records import Entry, EntryKind, RunSpiller, by_key, directory_partition, sorted_stream

_POLL_S = 0.2


class IssueKind(Enum):
    UNREADABLE = "unreadable"
    VANISHED = "vanished"
    SPECIAL = "special file skipped"


@dataclass(frozen=True)
class ScanIssue:
    path: bytes
    kind: IssueKind
    detail: str

    def to_json(self) -> str:
        # surrogateescape + ensure_ascii keeps any byte sequence exact through JSON.
        return json.dumps({"path": os.fsdecode(self.path), "kind": self.kind.value, "detail": self.detail})

    @classmethod
    def from_json(cls, line: str) -> "ScanIssue":
        data = json.loads(line)
        return cls(os.fsencode(data["path"]), IssueKind(data["kind"]), data["detail"])


@dataclass(frozen=True)
class ScanSettings:
    """Bounds of a scan. Memory ceiling ≈ (workers + 1) × run_records × 300 bytes (+ the directories queued).

    The walk starts in this process and hands the directories not yet walked to `workers` processes once it has
    seen `in_process_entries` entries: a small tree (a cron'd incremental of a project directory) never pays for
    starting processes, a large one loses a few milliseconds."""

    workers: int = 2  # processes; 0 walks everything in this process (tests, tiny trees)
    run_records: int = 100_000
    in_process_entries: int = 20_000
    partitions: int = 1  # runs split by directory hash, one diff process each (backup/plan.py PartitionedDiff)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        if self.run_records < 1:
            raise ValueError("run_records must be >= 1")
        if self.in_process_entries < 0:
            raise ValueError("in_process_entries must be >= 0")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")


@dataclass
class ScanCounts:
    entries: int = 0
    files: int = 0
    symlinks: int = 0
    directories: int = 0
    special: int = 0
    file_bytes: int = 0
    issues: int = 0

    def add(self, other: "ScanCounts") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class DirectorySink(Protocol):
    """What a walker hands each listing to, instead of its runs (see the module docstring)."""

    def directory(self, entries: list[Entry]) -> None:
        """One directory's entries (all children of one directory, unsorted), or one root's own entry. An OSError
        raised here is fatal (wrap it in SpillError), never taken for a listing error."""

    def finish(self) -> object:
        """Called once, after the last listing; the result (picklable) goes to ScanResult.sink_results."""


@dataclass
class ScanResult:
    runs: list[Path]  # sorted record files; records.sorted_stream merges them
    issues_files: list[Path]
    counts: ScanCounts = field(default_factory=ScanCounts)
    # A walk that fit in one run (at most run_records entries) and never left this process keeps it here, sorted,
    # instead of writing and reading back a file (a small tree's incremental plan).
    held: list[Entry] = field(default_factory=list)
    # The same runs by partition (partition_runs[p]: the runs holding the directories of partition p).
    partition_runs: list[list[Path]] = field(default_factory=lambda: [[]])
    # With a directory_sink: each walker's sink.finish() (the walk of this process first); no runs, nothing held.
    sink_results: list = field(default_factory=list)

    def sorted_entries(self, work_dir: Path) -> Iterator[Entry]:
        """Every entry walked, in path order."""
        if not self.runs:
            return iter(self.held)
        return sorted_stream(self.runs, work_dir)

    def issues(self) -> Iterator[ScanIssue]:
        for path in self.issues_files:
            with open(path, encoding="ascii") as f:
                for line in f:
                    yield ScanIssue.from_json(line)


class ExcludeMatcher:
    """Exclude globs, matched against the path relative to its root.

    A pattern without `/` matches a name at any depth (`*.tmp`, `*.[ch]`); one with `/` matches the relative path
    from the root (`projects/*/scratch`), where `**` spans any number of directories (`**/.snapshot`, `**/tmp/**`).
    `*`, `?` and `[...]` never match `/`; the syntax is globs.translate's. An excluded directory is not descended into.
    Every pattern is translated once, into one alternation per kind, so a name costs one regex match.
    """

    def __init__(self, patterns: Sequence[str]):
        self.patterns = tuple(patterns)
        name_res, path_res = [], []
        for pattern in self.patterns:
            if "/" in pattern.strip("/"):
                path_res.append(globs.translate(pattern.strip("/")))
            else:
                name_res.append(globs.translate(pattern.strip("/")))
        self._name = re.compile(b"|".join(name_res)) if name_res else None
        self._path = re.compile(b"|".join(path_res)) if path_res else None

    def excluded(self, rel_path: bytes, name: bytes) -> bool:
        if self._name is not None and self._name.match(name):
            return True
        return self._path is not None and self._path.match(rel_path) is not None


_KIND_BY_FORMAT = {stat.S_IFREG: EntryKind.FILE, stat.S_IFLNK: EntryKind.SYMLINK, stat.S_IFDIR: EntryKind.DIRECTORY}


def _kind_of(mode: int) -> EntryKind:
    return _KIND_BY_FORMAT.get(stat.S_IFMT(mode), EntryKind.SPECIAL)


class SpillError(Fs3gError):
    """Writing a sorted run failed (e.g. a full disk): fatal, unlike an unreadable directory."""


class _Walker:
    """Walks directories one at a time, buffering entries and spilling sorted runs; used by every worker.

    `walk_dir` is the hot loop of a 200-million-entry plan: it builds entry tuples directly and keeps counters in
    locals, because every Python-level call per entry costs seconds at that scale.
    """

    def __init__(self, roots: Sequence[bytes], excludes: Sequence[str], work_dir: Path, tag: str, run_records: int,
                 partitions: int = 1, sink: DirectorySink | None = None):
        self.roots = roots
        self.sink = sink
        self.sink_result: object = None
        self.matcher = ExcludeMatcher(excludes)
        self.partitions = partitions
        self.spillers = [RunSpiller(work_dir, tag if partitions == 1 else f"{tag}p{p}", run_records)
                         for p in range(partitions)]
        self.spiller = self.spillers[0]
        self.run_records = run_records
        self.counts = ScanCounts()
        self.issues_path = work_dir / f"issues-{tag}.jsonl"
        fd = os.open(self.issues_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._issues = os.fdopen(fd, "w", encoding="ascii")

    def issue(self, path: bytes, kind: IssueKind, detail: str) -> None:
        self._issues.write(ScanIssue(path, kind, detail).to_json() + "\n")
        self.counts.issues += 1

    @property
    def runs(self) -> list[Path]:
        return [run for spiller in self.spillers for run in spiller.runs]

    @property
    def partition_runs(self) -> list[list[Path]]:
        return [list(spiller.runs) for spiller in self.spillers]

    def _buffered(self) -> int:
        return sum(len(spiller.buffer) for spiller in self.spillers)

    def _spill(self) -> None:
        try:
            for spiller in self.spillers:
                spiller.flush()
        except OSError as e:
            raise SpillError(f"cannot write scan run: {e.strerror or e}", path=str(self.spiller.work_dir)) from e

    def finish(self, hold: bool = False) -> list[Entry]:
        """Close the walk. With `hold`, a walk that never spilled keeps its entries (returned, sorted) instead of
        writing them as a run."""
        self._issues.close()
        if self.sink is not None:
            self.sink_result = self.sink.finish()
            return []
        if hold and not self.runs:
            held = [entry for spiller in self.spillers for entry in spiller.take_sorted()]
            if self.partitions > 1:
                held.sort(key=by_key)
            return held
        self._spill()
        return []

    def walk_root(self, root_index: int) -> bytes | None:
        """Record the root itself; return it when it is a directory to descend into."""
        root = self.roots[root_index]
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            self.issue(root, IssueKind.VANISHED, "root no longer exists")
            return None
        except OSError as e:
            self.issue(root, IssueKind.UNREADABLE, e.strerror or str(e))
            return None
        kind = _kind_of(st.st_mode)
        c = self.counts
        c.entries += 1
        c.directories += kind is EntryKind.DIRECTORY
        c.files += kind is EntryKind.FILE
        c.file_bytes += st.st_size if kind is EntryKind.FILE else 0
        c.symlinks += kind is EntryKind.SYMLINK
        entry = Entry.from_stat(root, kind, st)
        if self.sink is not None:
            self.sink.directory([entry])
            return root if kind is EntryKind.DIRECTORY else None
        self.spillers[directory_partition(entry.directory, self.partitions)].buffer.append(entry)
        if self._buffered() >= self.run_records:
            self._spill()
        return root if kind is EntryKind.DIRECTORY else None

    def walk_dir(self, root_index: int, directory: bytes, push: Callable[[int, bytes], None]) -> None:
        root = self.roots[root_index]
        rel_start = len(root) + (0 if root == b"/" else 1)
        rel_dir = directory[rel_start:] + b"/" if len(directory) > len(root) else b""
        prefix = directory + b"\0"  # every child's sort key starts with it
        matcher = self.matcher if self.matcher.patterns else None
        sink = self.sink
        if sink is None:
            spiller = self.spillers[directory_partition(directory, self.partitions)]
            buffer = spiller.buffer
            limit = self.run_records - (self._buffered() - len(buffer) if self.partitions > 1 else 0)
        else:  # the whole listing goes to the sink at the end
            buffer, limit = [], sys.maxsize
        kinds, special, file_kind, dir_kind = _KIND_BY_FORMAT, EntryKind.SPECIAL, EntryKind.FILE, EntryKind.DIRECTORY
        new, entry_type, ifmt = tuple.__new__, Entry, stat.S_IFMT
        entries = files = file_bytes = directories = symlinks = specials = 0
        try:
            iterator = os.scandir(directory)
        except FileNotFoundError:
            self.issue(directory, IssueKind.VANISHED, "directory vanished before it was read")
            return
        except OSError as e:
            self.issue(directory, IssueKind.UNREADABLE, f"cannot list directory: {e.strerror or e}")
            return
        try:
            with iterator:
                for de in iterator:
                    name = de.name
                    if matcher is not None and matcher.excluded(rel_dir + name, name):
                        continue
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        self.issue(de.path, IssueKind.VANISHED, "vanished during the walk")
                        continue
                    except OSError as e:
                        self.issue(de.path, IssueKind.UNREADABLE, f"cannot stat: {e.strerror or e}")
                        continue
                    mode = st.st_mode
                    kind = kinds.get(ifmt(mode), special)
                    entries += 1
                    if kind is file_kind:
                        files += 1
                        file_bytes += st.st_size
                    elif kind is dir_kind:
                        directories += 1
                        push(root_index, de.path)
                    elif kind is special:
                        specials += 1
                        self.issue(de.path, IssueKind.SPECIAL, _special_name(mode))
                    else:
                        symlinks += 1
                    buffer.append(new(entry_type, (prefix + name, kind, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                   st.st_atime_ns, mode, st.st_uid, st.st_gid, st.st_dev, st.st_ino,
                                                   st.st_nlink, b"", b"")))
                    if len(buffer) >= limit:
                        self._spill()  # SpillError is not an OSError: it is never mistaken for a listing error
                        buffer, limit = spiller.buffer, self.run_records
        except OSError as e:  # e.g. EIO mid-listing: report it, keep what was read
            self.issue(directory, IssueKind.UNREADABLE, f"listing stopped: {e.strerror or e}")
        finally:
            c = self.counts
            c.entries += entries
            c.files += files
            c.file_bytes += file_bytes
            c.directories += directories
            c.symlinks += symlinks
            c.special += specials
        if sink is not None and buffer:
            sink.directory(buffer)


def _special_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return f"{name}: never opened, not backed up"
    return "unknown file type: not backed up"


def check_roots(roots: Sequence[str]) -> list[bytes]:
    """Bad input before any work: each root must exist and be a directory."""
    out = []
    for root in roots:
        try:
            st = os.stat(root)
        except FileNotFoundError as e:
            raise UsageError("root does not exist", path=root, key="roots",
                             hint="fix roots in the lab policy") from e
        except OSError as e:
            raise UsageError(f"cannot reach root: {e.strerror}", path=root, key="roots") from e
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError("root is not a directory", path=root, key="roots")
        out.append(os.fsencode(os.path.normpath(root)))
    return out


def _walk_in_process(walker: _Walker) -> None:
    pending: deque[tuple[int, bytes]] = deque()
    for i in range(len(walker.roots)):
        top = walker.walk_root(i)
        if top is not None:
            pending.append((i, top))
    while pending:
        root_index, directory = pending.pop()
        walker.walk_dir(root_index, directory, lambda r, d: pending.append((r, d)))


def _worker_main(tag: str, roots: Sequence[bytes], excludes: Sequence[str], work_dir: Path, run_records: int,
                 work: multiprocessing.Queue, outstanding, workers: int, abort, results: multiprocessing.Queue,
                 partitions: int = 1, sink_factory: Callable[[str], DirectorySink] | None = None) -> None:
    walker = _Walker(roots, excludes, work_dir, tag, run_records, partitions,
                     None if sink_factory is None else sink_factory(tag))

    def push(root_index: int, directory: bytes) -> None:
        with outstanding.get_lock():
            outstanding.value += 1
        work.put((root_index, directory))

    try:
        while not abort.is_set():
            try:
                item = work.get(timeout=_POLL_S)
            except queue_module.Empty:
                continue
            if item is None:
                break
            walker.walk_dir(item[0], item[1], push)
            with outstanding.get_lock():
                outstanding.value -= 1
                last = outstanding.value == 0
            if last:  # every directory walked: release all workers
                for _ in range(workers):
                    work.put(None)
        walker.finish()
        results.put((tag, [[str(p) for p in runs] for runs in walker.partition_runs], str(walker.issues_path),
                     vars(walker.counts), walker.sink_result, None))
    except BaseException as e:  # report, never hang the parent
        abort.set()
        results.put((tag, [], str(walker.issues_path), {}, None, f"{type(e).__name__}: {e}"))


def scan(roots: Sequence[str], excludes: Sequence[str], work_dir: Path,
         settings: ScanSettings = ScanSettings(), *,
         directory_sink: Callable[[str], DirectorySink] | None = None) -> ScanResult:
    """Walk `roots` into sorted runs under `work_dir` (which must exist, owner-only), or, with `directory_sink`,
    into one sink per walker (see the module docstring)."""
    root_bytes = check_roots(roots)
    partitions = settings.partitions

    def sink(tag: str) -> DirectorySink | None:
        return None if directory_sink is None else directory_sink(tag)

    if settings.workers == 0:
        walker = _Walker(root_bytes, excludes, work_dir, "w0", settings.run_records, partitions, sink("w0"))
        _walk_in_process(walker)
        held = walker.finish(hold=True)
        return ScanResult(walker.runs, [walker.issues_path], walker.counts, held, walker.partition_runs,
                          [walker.sink_result] if directory_sink is not None else [])

    # The top of the tree is walked here, breadth first, so that the workers start with many directories; a
    # small tree is done before any worker is needed.
    top = _Walker(root_bytes, excludes, work_dir, "roots", settings.run_records, partitions, sink("roots"))
    pending: deque[tuple[int, bytes]] = deque((i, d) for i in range(len(root_bytes))
                                              if (d := top.walk_root(i)) is not None)
    while pending and top.counts.entries < settings.in_process_entries:
        root_index, directory = pending.popleft()
        top.walk_dir(root_index, directory, lambda r, d: pending.append((r, d)))
    starts = list(pending)
    held = top.finish(hold=not starts)
    result = ScanResult(list(top.runs), [top.issues_path], top.counts, held, top.partition_runs,
                        [top.sink_result] if directory_sink is not None else [])
    if not starts:
        return result

    ctx = multiprocessing.get_context("fork")
    work: multiprocessing.Queue = ctx.Queue()
    results: multiprocessing.Queue = ctx.Queue()
    outstanding = ctx.Value("q", len(starts))
    abort = ctx.Event()
    for item in starts:
        work.put(item)
    procs = [ctx.Process(target=_worker_main, name=f"fs3g-scan-{i}",
                         args=(f"w{i}", root_bytes, tuple(excludes), work_dir, settings.run_records, work,
                               outstanding, settings.workers, abort, results, partitions, directory_sink))
             for i in range(settings.workers)]
    for p in procs:
        p.start()
    errors = []
    try:
        for _ in procs:
            while True:
                try:
                    tag, runs, issues_path, counts, sink_result, error = results.get(timeout=_POLL_S)
                    break
                except queue_module.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        abort.set()
                        raise Fs3gError(f"scan worker {dead[0].name} died with exit code {dead[0].exitcode}",
                                        hint="rerun; if it persists, run with -vv and report it")
            if error:
                errors.append(f"{tag}: {error}")
                continue
            for p, part in enumerate(runs):
                result.runs.extend(Path(r) for r in part)
                result.partition_runs[p].extend(Path(r) for r in part)
            result.issues_files.append(Path(issues_path))
            result.counts.add(ScanCounts(**counts))
            if directory_sink is not None:
                result.sink_results.append(sink_result)
    finally:
        if errors:
            abort.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    if errors:
        raise Fs3gError(f"scan failed: {'; '.join(errors)}")
    return result
