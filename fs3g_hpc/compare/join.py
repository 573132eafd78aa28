"""The join of `fs3g compare`: the filesystem against its backup, pair by pair, in one streamed pass.

Both sides are streams sorted by `records.sort_key`, merge-joined one entry at a time:

- the filesystem: the parallel scan's sorted runs (`scan.scan` + `records.sorted_stream`) in a private work directory
  that is removed afterwards;
- the backup: the lab's catalog (already sorted; packed and per-object files alike), or, with `against_bucket`, a
  recursive listing of the lab's key prefixes and the members of every pack index under `packs/` (`pack_members`),
  spilled together into sorted runs (S3 lists keys in UTF-8 byte order of the *encoded* key, which is not our order,
  and an index lists its members in pack order). A path held several times (in several packs, or in a pack and as
  its own object) is decided by `newest_copy`: the latest pack key (run_id order), and the later LastModified
  between that pack and the path's object.

Pairs whose size and kind agree may need a check that costs I/O (a HEAD for the mtime in bucket mode, reading the file
for its SHA-256 tree hash with `check_sha256`): those run in a pool of `workers` threads, at most a bounded window of
them in flight, and their results are emitted in join order, so the output is deterministic and memory stays bounded
by the scan's `workers × run_records` records plus the window, whatever the size of the tree or the bucket.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ..config import Policy
from ..errors import UsageError
from ..runs.catalog import catalog_path, catalog_target_mismatch
from ..runs.layout import lab_dir
from ..model.catalog import UnreadablePaths, checked_order
from ..model.entries import ENTRY_CLASS, EntryClass, classify
from ..model.keys import LONG_DIR, PATHMAP_MAX_BYTES, encode_path, object_key, parse_key, pathmap_key
from ..model.objectmeta import parse_ns
from ..model.packs import (INDEX_SUFFIX, PACKS_DIR, MemberType, PackFormatError, is_index_key, is_pack_key, read_index,
                           relative_to_prefix, run_id_of, run_time_ns)
from ..model.records import Entry, EntryKind, RecordFormatError, RunSpiller, by_key, display_path, packed, \
    read_records, sorted_stream
from ..scan import ExcludeMatcher, IssueKind, ScanSettings, check_roots, scan
from .checks import (KEY_CLASSES, Against, Category, Checker, CompareSummary, Discrepancy, HashSink, listed_class,
                     listed_entry, packed_entry, quick_verdict)

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
PENDING_CHECKS_PER_WORKER = 8  # checks queued beyond those running: keeps the pool busy, memory bounded
_ISSUES_LOGGED = 20

# --- the subtrees compared -------------------------------------------------------------------------------------------

def is_under(path: bytes, top: bytes) -> bool:
    """`path` is `top` or inside it, at a component boundary (/data/ab is not under /data/a)."""
    if top == b"/":
        return path.startswith(b"/")
    return path == top or (path.startswith(top) and path[len(top):len(top) + 1] == b"/")


@dataclass(frozen=True)
class Scope:
    """The compared subtrees: absolute, normalised, none inside another, each with the policy root that holds it."""

    paths: tuple[bytes, ...]
    roots: tuple[bytes, ...]  # roots[i] holds paths[i]
    is_dir: tuple[bool, ...]

    def covers(self, path: bytes) -> bool:
        return any(is_under(path, p) for p in self.paths)


def resolve_scope(policy: Policy, paths: Sequence[str | bytes]) -> Scope:
    """PATHs (default: the policy's roots) checked before any work: each must exist and lie under a root (exit 2)."""
    roots = [os.fsencode(os.path.normpath(r)) for r in policy.roots]
    if not paths:
        check_roots(policy.roots)  # a missing root is bad input, named
        chosen = list(roots)
    else:
        chosen = []
        for raw in paths:
            path = os.path.abspath(os.fsencode(raw))
            if not any(is_under(path, r) for r in roots):
                raise UsageError(f"not under any root of the policy ({', '.join(display_path(r) for r in roots)})",
                                 path=display_path(path), hint="give a path inside one of the policy's roots")
            chosen.append(path)
    kept: list[bytes] = []
    for path in sorted(set(chosen)):  # a parent sorts before its children: drop what an earlier PATH covers
        if not any(is_under(path, k) for k in kept):
            kept.append(path)
    dirs = []
    for path in kept:
        try:
            dirs.append(stat.S_ISDIR(os.lstat(path).st_mode))
        except FileNotFoundError as e:
            raise UsageError("no such file or directory", path=display_path(path),
                             hint="give an existing path (what is gone from disk shows up as only-in-s3 when you "
                                  "compare its parent directory)") from e
        except OSError as e:
            raise UsageError(f"cannot read: {e.strerror}", path=display_path(path)) from e
    holders = tuple(next(r for r in roots if is_under(p, r)) for p in kept)
    return Scope(tuple(kept), holders, tuple(dirs))


class SubtreeExcluder:
    """The policy's excludes, applied as a backup from the policy's roots would, when the walk starts lower down.

    `scan.scan` matches excludes against the path relative to the directory it walks, so for a PATH inside a root the
    walk gets only the name patterns (which do not depend on where the walk starts); path patterns are applied here
    against the path relative to the true root, with every ancestor checked (an excluded directory hides its whole
    subtree). Entries of one directory are contiguous in sort order, so its verdict is computed once.
    """

    def __init__(self, patterns: Sequence[str], roots: Sequence[bytes]):
        self.name_patterns = tuple(p for p in patterns if "/" not in p.strip("/"))
        path_patterns = [p for p in patterns if "/" in p.strip("/")]
        self._full = ExcludeMatcher(patterns)
        self._paths = ExcludeMatcher(path_patterns) if path_patterns else None
        self._roots = tuple(roots)
        self._last_dir: bytes | None = None
        self._last_dir_excluded = False

    def _relative(self, path: bytes) -> bytes | None:
        for root in self._roots:
            if is_under(path, root):
                return path[len(root):].lstrip(b"/")
        return None

    def path_excluded(self, path: bytes) -> bool:
        """Whether a PATH (or a directory between its root and it) is excluded by any pattern."""
        rel = self._relative(path)
        if not rel:
            return False
        parts = rel.split(b"/")
        return any(self._full.excluded(b"/".join(parts[:i + 1]), parts[i]) for i in range(len(parts)))

    def keep(self, entry: Entry) -> bool:
        if self._paths is None:
            return True
        directory = entry.directory
        if directory != self._last_dir:
            self._last_dir = directory
            rel = self._relative(directory) or b""
            parts = rel.split(b"/") if rel else []
            self._last_dir_excluded = any(self._paths.excluded(b"/".join(parts[:i + 1]), parts[i])
                                          for i in range(len(parts)))
        if self._last_dir_excluded:
            return False
        rel = self._relative(entry.path) or b""
        return not self._paths.excluded(rel, rel.rpartition(b"/")[2])


# --- the pure part: the join ------------------------------------------------------------------------------------------

Pair = tuple[Entry | None, Entry | None]


def join(local: Iterable[Entry], remote: Iterable[Entry]) -> Iterator[Pair]:
    """Merge-join two streams sorted by key (`records.sort_key`): (local, remote) with None on the side that lacks it.
    The same logic as `plan.diff`, keeping both records of a pair (the catalog's holds the tree hash)."""
    remote_iter = iter(remote)
    other = next(remote_iter, None)
    for entry in local:
        key = entry[0]
        while other is not None and other[0] < key:
            yield None, other
            other = next(remote_iter, None)
        if other is not None and other[0] == key:
            yield entry, other
            other = next(remote_iter, None)
        else:
            yield entry, None
    while other is not None:
        yield None, other
        other = next(remote_iter, None)

def newest_per_path(entries: Iterable[Entry], pick: Callable[[list[Entry]], Entry]) -> Iterator[Entry]:
    """One entry per path from a sorted stream; a path under several key classes (the size crossed the threshold
    between backups) is decided by `pick`."""
    group: list[Entry] = []
    for entry in entries:
        if group and entry[0] != group[0][0]:
            yield group[0] if len(group) == 1 else pick(group)
            group = []
        group.append(entry)
    if group:
        yield group[0] if len(group) == 1 else pick(group)


# --- ordered output from parallel checks -----------------------------------------------------------------------------

T = TypeVar("T")
U = TypeVar("U")


class InOrder:
    """Emits discrepancies in join order although checks finish in any order. At most `window` items wait (a
    check blocks the join once the window is full), so memory is bounded whatever the tree."""

    def __init__(self, emit: Callable[[Discrepancy], None], window: int):
        self._emit = emit
        self._window = window
        self._pending: deque[Discrepancy | Future] = deque()

    def ready(self, item: Discrepancy | None) -> None:
        if item is None:
            return
        if self._pending:
            self._pending.append(item)
        else:
            self._emit(item)

    def later(self, future: Future) -> None:
        self._pending.append(future)
        self._drain(wait=False)

    def _drain(self, wait: bool) -> None:
        pending = self._pending
        while pending:
            head = pending[0]
            if isinstance(head, Future):
                if not head.done() and not wait and len(pending) <= self._window:
                    return
                result = head.result()  # a bug in a check surfaces here, in the caller's thread
                pending.popleft()
                if result is not None:
                    self._emit(result)
            else:
                pending.popleft()
                self._emit(head)

    def finish(self) -> None:
        self._drain(wait=True)


def bounded_map(pool: ThreadPoolExecutor, fn: Callable[[T], U], items: Iterable[T], window: int
                ) -> Iterator[tuple[T, U]]:
    """(item, fn(item)) in input order, at most `window` calls in flight."""
    pending: deque[tuple[T, Future]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            first, future = pending.popleft()
            yield first, future.result()
    while pending:
        first, future = pending.popleft()
        yield first, future.result()


# --- the two sides as sorted streams ---------------------------------------------------------------------------------

def _local_stream(policy: Policy, scope: Scope, work: Path, settings: ScanSettings,
                  summary: CompareSummary) -> tuple[Iterator[Entry], UnreadablePaths]:
    excluder = SubtreeExcluder(policy.exclude, scope.roots)
    directories: list[str] = []
    singles: list[Entry] = []  # PATHs that are files or symlinks: a handful, given on the command line
    for path, is_dir in zip(scope.paths, scope.is_dir):
        if excluder.path_excluded(path):
            log.info("%s is excluded by the policy: nothing on disk to compare", display_path(path))
            continue
        if is_dir:
            directories.append(os.fsdecode(path))
            continue
        st = os.lstat(path)
        kind = EntryKind.SYMLINK if stat.S_ISLNK(st.st_mode) else EntryKind.FILE if stat.S_ISREG(st.st_mode) else None
        if kind is not None:
            singles.append(Entry.from_stat(path, kind, st))
    unreadable = UnreadablePaths(())
    streams: list[Iterable[Entry]] = [sorted(singles, key=by_key)]
    if directories:
        result = scan(directories, excluder.name_patterns, work, settings)
        issues = [i for i in result.issues() if i.kind is IssueKind.UNREADABLE]
        for issue in issues[:_ISSUES_LOGGED]:
            log.warning("%s: %s", display_path(issue.path), issue.detail)
        if len(issues) > _ISSUES_LOGGED:
            log.warning("... and %d more unreadable entries", len(issues) - _ISSUES_LOGGED)
        summary.unreadable = len(issues)
        unreadable = UnreadablePaths(i.path for i in issues)
        streams.append(result.sorted_entries(work))
    file_kind, symlink_kind = EntryKind.FILE, EntryKind.SYMLINK
    merged = heapq.merge(*streams, key=by_key)
    return (e for e in merged if (e[1] is file_kind or e[1] is symlink_kind) and excluder.keep(e)), unreadable


def _catalog_stream(catalog: Path, scope: Scope) -> Iterator[Entry]:
    file_kind, symlink_kind = EntryKind.FILE, EntryKind.SYMLINK
    for entry in checked_order(read_records(catalog), str(catalog)):
        if (entry[1] is file_kind or entry[1] is symlink_kind) and scope.covers(entry.path):
            yield entry


def _join_key(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _bucket_stream(client: Any, policy: Policy, scope: Scope, work: Path, run_records: int,
                   pool: ThreadPoolExecutor, window: int, checker: Checker,
                   emit: Callable[[Discrepancy], None]) -> Iterator[Entry]:
    """Every object of the lab under the compared subtrees, as records in sort-key order, one per path."""
    from ..transfer.objects import head_listed, list_tree, read_small_object

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    spiller = RunSpiller(work, "bucket", run_records)
    for key_class in KEY_CLASSES:
        for path, is_dir in zip(scope.paths, scope.is_dir):
            encoded = encode_path(path)
            base = _join_key(prefix, key_class.value, encoded)
            if not is_dir:
                listed = head_listed(client, bucket, object_key(prefix, key_class, path).key)
                checker.count(requests=1)
                if listed is not None:
                    spiller.add(listed_entry(path, key_class, listed.size_bytes))
            for key, listed in list_tree(client, bucket, base + "/"):
                _, key_path, _ = parse_key(prefix, key)
                if key_path is not None:  # hashed long keys come from their own listing below
                    spiller.add(listed_entry(key_path, key_class, listed.size_bytes, int(listed.modified_s * 1e9)))

        def path_of_long_key(item: tuple[str, Any]) -> bytes | None:
            digest = parse_key(prefix, item[0])[2] or ""
            checker.count(requests=1)
            return read_small_object(client, bucket, pathmap_key(prefix, digest), PATHMAP_MAX_BYTES)

        long_dir = _join_key(prefix, key_class.value, LONG_DIR) + "/"
        for (key, listed), path in bounded_map(pool, path_of_long_key, list_tree(client, bucket, long_dir), window):
            digest = parse_key(prefix, key)[2] or ""
            if path is None or hashlib.sha256(path).hexdigest() != digest:
                why = "has no pathmap object" if path is None else "has a pathmap object for another path"
                emit(Discrepancy(Category.CANNOT_CHECK, ENTRY_CLASS[key_class], key.encode(),
                                 f"hashed long-path key {why}: cannot tell which file it holds"))
            elif scope.covers(path):
                spiller.add(listed_entry(path, key_class, listed.size_bytes, int(listed.modified_s * 1e9)))
    for entry in pack_members(client, policy, scope, checker, emit):
        spiller.add(entry)

    def newest_object(group: list[Entry]) -> Entry:
        from ..transfer.objects import head_object

        def age(entry: Entry) -> tuple[int, int]:
            checker.count(requests=1)
            info = head_object(client, bucket, object_key(prefix, listed_class(entry), entry.path).key)
            if info is None:
                return (-1, -1)
            try:
                mtime_ns = parse_ns(info.metadata.get("mtime", "0"))
            except ValueError:
                mtime_ns = 0
            return (info.last_modified_ns, mtime_ns)

        return max(group, key=age)

    def newest(group: list[Entry]) -> Entry:
        packs = [e for e in group if packed(e)]
        objects = [e for e in group if not packed(e)]
        if not packs:
            return newest_object(objects)
        return newest_copy(newest_object(objects) if objects else None, packs)

    return newest_per_path(sorted_stream(spiller.finish(), work), newest)


def newest_copy(newest_object: Entry | None, packs: list[Entry]) -> Entry:
    """Which copy of one path counts, by the rule a restore from the bucket follows (restore/select.py): the newest,
    a packed copy dated by its run's plan time (`packs.run_time_ns` of the run_id), the path's own object by its
    LastModified (both in `ctime_ns`); on equal dates a packed copy wins, and among packed copies of one date the
    smallest location (pack, then offset)."""
    best = min(packs, key=lambda e: (-e.ctime_ns, e.location))
    if newest_object is not None and newest_object.ctime_ns > best.ctime_ns:
        return newest_object
    return best


def _safe_member_path(path: bytes) -> bool:
    """An index's name usable as a record's path: absolute, normalised, no NUL (the sort key's separator). Whether
    it may be written anywhere is restore's question (restore/paths.py); compare only reads."""
    return path.startswith(b"/") and b"\0" not in path and os.path.normpath(path) == path and path != b"/"


def pack_members(client: Any, policy: Policy, scope: Scope, checker: Checker,
                 emit: Callable[[Discrepancy], None]) -> Iterator[Entry]:
    """Every member of the lab's packs under the compared subtrees, as records (`packed_entry`), in index order.

    One listing of `packs/`, then each index (`.tar.idx`) read streamed (`packs.read_index`: untrusted, every field
    checked) with its pack's listed size and LastModified: an index whose pack is missing or of another size, or
    that is malformed, is a cannot-check line naming the index (its members are not counted as backed up; what a
    malformed index gave before the bad line is kept). Memory: one listing page, the pack sizes of one run
    directory, and the file members of the pack being read (only for its hard-link members, which take the size,
    mtime and SHA-256 of the member they link to)."""
    from ..transfer.objects import ObjectAccessError, list_tree, object_stream

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    packs_dir = _join_key(prefix, PACKS_DIR) + "/"
    run_dir, sizes = "", {}  # pack key -> listed object, for the run directory being listed
    for key, listed in list_tree(client, bucket, packs_dir):
        run = key[:key.rfind("/") + 1]
        if run != run_dir:
            run_dir, sizes = run, {}
        if is_pack_key(key):
            sizes[key] = listed
            continue
        if not is_index_key(key):
            continue
        pack_key = key[:-len(INDEX_SUFFIX)]
        pack = sizes.get(pack_key)
        relative = relative_to_prefix(prefix, pack_key)

        def cannot(why: str) -> None:
            emit(Discrepancy(Category.CANNOT_CHECK, EntryClass.SMALL, key.encode(), why))

        if pack is None:
            cannot("pack index without its pack: its members are not counted as backed up")
            continue
        planned = run_time_ns(run_id_of(relative))
        if planned is None:  # is_index_key checked the layout; a run_id whose date does not parse
            cannot("pack index of a run whose id holds no date: not read")
            continue
        checker.count(requests=1)
        try:
            with object_stream(client, bucket, key) as stream:
                header, members = read_index(stream, key)
                if header.pack != relative:
                    cannot(f"index names another pack ({header.pack!r})")
                    continue
                if header.pack_bytes != pack.size_bytes:
                    cannot(f"pack {pack_key} is {pack.size_bytes} bytes, its index says {header.pack_bytes}: "
                           "its members are not counted as backed up")
                    continue
                files: dict[bytes, Entry] = {}
                for member in members:
                    path = member.path
                    if not _safe_member_path(path):
                        cannot(f"index holds an unusable name {display_path(path)!r}; skipped")
                        continue
                    ref = member.ref(relative)
                    if member.type is MemberType.SYMLINK:
                        entry = packed_entry(path, EntryKind.SYMLINK, len(member.link), member.mtime_ns,
                                             hashlib.sha256(member.link).digest(), ref, planned)
                    elif member.type is MemberType.HARDLINK:
                        first = files.get(member.link)
                        if first is None:
                            cannot(f"hard link {display_path(path)!r} to a path not earlier in the pack; skipped")
                            continue
                        entry = packed_entry(path, EntryKind.FILE, first.size_bytes, first.mtime_ns,
                                             first.tree_hash, ref, planned)
                    else:
                        entry = packed_entry(path, EntryKind.FILE, member.size_bytes, member.mtime_ns,
                                             bytes.fromhex(member.sha256), ref, planned)
                        files[path] = entry
                    if scope.covers(path):
                        yield entry
        except PackFormatError as e:
            cannot(f"malformed pack index: {e}")
        except ObjectAccessError as e:
            cannot(f"pack index unreadable: {e.message}")


# --- the library entry point -----------------------------------------------------------------------------------------

def _private_work_dir(base: Path) -> Path:
    """A fresh owner-only directory under `base` (created owner-only when missing) for the sorted runs."""
    try:
        missing = [p for p in (base, *base.parents) if not p.exists()]
        for p in reversed(missing):
            p.mkdir(mode=0o700)
        return Path(tempfile.mkdtemp(prefix=".compare-", dir=base))
    except OSError as e:
        raise UsageError(f"cannot create a work directory: {e.strerror or e}", path=str(base),
                         hint="check run_root in the policy (compare keeps its sorted runs there)") from e


def _entry_class(entry: Entry, threshold_bytes: int) -> EntryClass:
    klass = classify(entry, threshold_bytes)
    assert klass is not None, "both streams hold files and symlinks only"
    return klass


def _default_client(policy: Policy, workers: int) -> Any:
    from ..transfer.client import ClientSettings, make_s3_client

    return make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=max(10, workers)))


def compare_tree(policy: Policy, paths: Sequence[str | bytes] = (), *, check_sha256: bool = False,
                 against_bucket: bool = False, workers: int = DEFAULT_WORKERS,
                 out: Callable[[Discrepancy], None], client_factory: Callable[[Policy], Any] | None = None,
                 scan_settings: ScanSettings | None = None, work_root: Path | None = None,
                 hash_sink: HashSink | None = None, as_of: str | None = None) -> CompareSummary:
    """Compare the policy's roots (or `paths` inside them) with the backup; `out` gets every discrepancy, in
    sort-key order (hashed long keys without a pathmap first), from this thread. Raises UsageError for bad input
    (a PATH outside the roots or missing, no catalog in catalog mode) before any work.

    With `hash_sink` (and check_sha256), files that need their tree hash read are handed to it, with the stored
    hash, instead of being read here (from pool threads: it must be thread-safe): a job array reads them.

    With `as_of` (a time or snapshot id), the catalog is that snapshot of the bucket's (snapshots/store.py), copied
    into the work directory a chunk at a time, each chunk checked; the lab's catalog is not read."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    scope = resolve_scope(policy, paths)
    against = Against.BUCKET if against_bucket else Against.CATALOG
    catalog = catalog_path(policy)
    if against is Against.CATALOG and not catalog.is_file() and as_of is None:
        raise UsageError("no catalog: this lab has no completed backup yet", path=str(catalog),
                         hint="run `fs3g backup --config LAB.yaml` first, or compare with --against-bucket")
    moved = catalog_target_mismatch(policy) if against is Against.CATALOG and as_of is None else None
    if moved:
        raise UsageError(moved, path=str(catalog), hint="compare with --against-bucket, or back up with --full first")
    prefix = policy.s3.prefix
    source = (str(catalog) if against is Against.CATALOG
              else f"s3://{policy.s3.bucket}/{prefix + '/' if prefix else ''}")
    summary = CompareSummary(against, source, check_sha256, scope.paths)
    settings = scan_settings or ScanSettings(workers=len(os.sched_getaffinity(0)))
    factory = client_factory or (lambda p: _default_client(p, workers))
    client_lock = threading.Lock()
    client_box: list[Any] = []

    def client() -> Any:  # made once, on first use: a catalog with every hash never talks to S3
        with client_lock:
            if not client_box:
                client_box.append(factory(policy))
            return client_box[0]

    def emit(d: Discrepancy) -> None:
        summary.add(d)
        out(d)

    window = workers * PENDING_CHECKS_PER_WORKER
    work = _private_work_dir(work_root or lab_dir(policy))
    try:
        if as_of is not None:
            from ..snapshots.store import chosen_snapshot, snapshot_to_file

            manifest = chosen_snapshot(policy, client(), work, as_of)
            if manifest is None:
                raise UsageError(f"no snapshot of this lab's roots at or before {as_of!r} in s3://{policy.s3.bucket}",
                                 hint="list them with `fs3g snapshots --config LAB.yaml`")
            catalog = work / "as-of.rec"
            snapshot_to_file(policy, client(), manifest, catalog, work)
            summary.source = f"snapshot {manifest.snapshot_id} ({manifest.created})"
        # The scan forks its walkers: it runs before any thread of ours exists.
        local, unreadable = _local_stream(policy, scope, work, settings, summary)
        with ThreadPoolExecutor(workers, thread_name_prefix="fs3g-compare") as pool:
            checker = Checker(against=against, check_sha256=check_sha256, policy=policy, client=client,
                               summary=summary, hash_sink=hash_sink)
            if against is Against.BUCKET:
                remote = _bucket_stream(client(), policy, scope, work, settings.run_records, pool, window, checker,
                                        emit)
            else:
                remote = _catalog_stream(catalog, scope)
            threshold = policy.storage.small_file_threshold_bytes
            in_order = InOrder(emit, window)
            deferred = against is Against.BUCKET or check_sha256
            try:
                for here, there in join(local, remote):
                    if there is not None:
                        summary.backed_up_entries += 1
                    if here is None:
                        assert there is not None
                        klass = (ENTRY_CLASS[listed_class(there)] if against is Against.BUCKET
                                 else _entry_class(there, threshold))
                        if unreadable.covers(there.path):
                            in_order.ready(Discrepancy(Category.CANNOT_CHECK, klass, there.path,
                                                       "not readable on disk (see the warnings)"))
                        else:
                            in_order.ready(Discrepancy(Category.ONLY_IN_S3, klass, there.path))
                        continue
                    summary.local_entries += 1
                    klass = _entry_class(here, threshold)
                    if there is None:
                        in_order.ready(Discrepancy(Category.MISSING_IN_S3, klass, here.path))
                        continue
                    from_index = against is Against.BUCKET and packed(there)  # the index gave the mtime
                    verdict = quick_verdict(here, there, klass, mtime_known=against is Against.CATALOG or from_index)
                    if verdict is not None:
                        in_order.ready(verdict)
                    elif check_sha256 or (deferred and not from_index):
                        in_order.later(pool.submit(checker, here, there, klass))
                in_order.finish()
            except RecordFormatError as e:
                if against is not Against.CATALOG:
                    raise
                raise UsageError(str(e), path=str(catalog),
                                 hint="the catalog is damaged: run `fs3g backup --full`, or use --against-bucket") \
                    from e
            except BaseException:
                checker.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary
