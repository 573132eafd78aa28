"""Run-directory layout and its files: the plan header, shard record files, the catalog. Owner-only, atomic.

    <run_root>/<lab>/catalog.rec                  the catalog the last successful merge wrote (records, sorted by path):
                                                  files, symlinks and directories
    <run_root>/<lab>/<lab>-<UTC time>/            one run directory (0700)
        plan.json                                 plan header; written last, so its presence means the plan is whole
        shards/shard-000000.rec ...               one record file per array task
        deleted.rec                               catalog entries no longer on disk (reported, never deleted from S3)
        directories.rec                           directories new or changed since the catalog: the merge records them
                                                  in the catalog (mode, times, owner); a directory has no object
        skipped.jsonl                             entries the scan could not take, with the reason

Run directories hold a lab's file names: directories are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import heapq
import json
import os
from time import monotonic as time_monotonic
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from itertools import groupby
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator

from .config import Policy
from .errors import UsageError
from .model.records import Entry, RecordWriter, RunSpiller, read_records, sorted_stream, write_records

PLAN_FORMAT_VERSION = 1
DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) owner-only; an existing one must be an empty directory."""
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_dir():
            raise UsageError("run directory exists and is not a directory", path=str(path),
                             hint="give a new path with --run-dir")
        if any(path.iterdir()):
            raise UsageError("run directory exists and is not empty", path=str(path),
                             hint="give a new or empty directory with --run-dir")
    else:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            for p in reversed(missing):  # parents we create are owner-only too: they name labs and runs
                p.mkdir(mode=DIR_MODE)
                p.chmod(DIR_MODE)
        except OSError as e:
            raise UsageError(f"cannot create run directory: {e.strerror}", path=str(path)) from e
    path.chmod(DIR_MODE)
    return path


def ensure_private_dir(path: Path) -> Path:
    """`path` and any missing parents, created owner-only; an existing directory is fine (a lab's directory)."""
    for p in reversed([p for p in (path, *path.parents) if not p.exists()]):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another job
        p.chmod(DIR_MODE)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise UsageError("not found", path=str(path), hint="is this a run directory made by `fs3g plan`?") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"not valid JSON (line {e.lineno})", path=str(path)) from e


def lab_dir(policy: Policy) -> Path:
    return Path(policy.run_root) / policy.lab.name


def catalog_path(policy: Policy) -> Path:
    return lab_dir(policy) / "catalog.rec"


def catalog_target_path(policy: Policy) -> Path:
    return lab_dir(policy) / "catalog-target.json"


def _target(policy: Policy) -> dict:
    return {"bucket": policy.s3.bucket, "prefix": policy.s3.prefix, "endpoint_url": policy.s3.endpoint_url}


def _describe_target(target: dict) -> str:
    where = f"s3://{target['bucket']}/{target['prefix'] + '/' if target['prefix'] else ''}"
    return where + (f" at {target['endpoint_url']}" if target.get("endpoint_url") else "")


def record_catalog_target(policy: Policy) -> None:
    """Note where the catalog's objects are (written with the catalog): a catalog says what one bucket holds."""
    write_json_atomic(catalog_target_path(policy), _target(policy))


def catalog_target_mismatch(policy: Policy) -> str | None:
    """Why the lab's catalog does not describe the policy's bucket and prefix (they changed since it was written),
    or None when it does (or when the catalog predates this record)."""
    path = catalog_target_path(policy)
    if not path.is_file():
        return None
    recorded = read_json(path)
    if recorded == _target(policy):
        return None
    return (f"the catalog describes {_describe_target(recorded)}, but the policy now names "
            f"{_describe_target(_target(policy))}")


def default_run_dir(policy: Policy, now: datetime, kind: str | None = None) -> Path:
    """`<run_root>/<lab>/<kind>-<UTC time>` (kind: the lab's name for backups, `restore`, `compare`), made unique."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = lab_dir(policy) / f"{kind or policy.lab.name}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


@dataclass(frozen=True)
class ShardedLayout:
    """What every sharded run directory holds (backup, restore, compare): each shard's input, each shard's results
    (written by its task), and the merge's report."""

    run_dir: Path

    @property
    def shards_dir(self) -> Path:
        return self.run_dir / "shards"

    def shard_file(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:06d}.rec"

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"

    def result_file(self, index: int, suffix: str = ".json") -> Path:
        return self.results_dir / f"shard-{index:06d}{suffix}"

    @property
    def report_file(self) -> Path:
        return self.run_dir / "report.json"


class RunLayout(ShardedLayout):
    """A backup run."""

    @property
    def plan_file(self) -> Path:
        return self.run_dir / "plan.json"

    @property
    def deleted_file(self) -> Path:
        return self.run_dir / "deleted.rec"

    @property
    def skipped_file(self) -> Path:
        return self.run_dir / "skipped.jsonl"

    @property
    def directories_file(self) -> Path:
        """Directories new or changed since the catalog (mode, times, owner): catalog records only, no object."""
        return self.run_dir / "directories.rec"

    @property
    def work_dir(self) -> Path:
        """Scratch space for the scan's sorted runs; removed when the plan is written."""
        return self.run_dir / ".work"


def write_catalog(previous: Path | None, backed_up: Iterable[Entry], deleted_file: Path | None, target: Path,
                  work_dir: Path, run_records: int = 100_000) -> int:
    """Write the catalog the next plan diffs against; return its entry count.

    new catalog = previous catalog − `deleted_file`'s entries, with every `backed_up` entry (any order) replacing or
    adding to the previous record. A planned entry that was not backed up keeps its previous record, so the next plan
    sees it as changed again. Streams everything: an external sort of `backed_up`, then a merge-join.
    """
    spiller = RunSpiller(work_dir, "catalog", run_records)
    for entry in backed_up:
        spiller.add(entry)
    fresh = sorted_stream(spiller.finish(), work_dir)
    old = read_records(previous) if previous is not None and previous.is_file() else iter(())
    gone = (e.key for e in read_records(deleted_file)) if deleted_file and deleted_file.is_file() else iter(())

    def merged() -> Iterator[Entry]:
        next_gone = next(gone, None)
        tagged = heapq.merge(((e.key, 1, e) for e in old), ((e.key, 0, e) for e in fresh), key=itemgetter(0, 1))
        for key, group in groupby(tagged, key=itemgetter(0)):
            first = next(group)  # the fresh record sorts first (tag 0) when both exist
            while next_gone is not None and next_gone < key:
                next_gone = next(gone, None)
            if first[1] == 1 and next_gone == key:
                continue  # deleted from disk since the last catalog
            yield first[2]

    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return write_records(target, merged())


def update_catalog(previous: Path | None, layout: RunLayout, target: Path, work_dir: Path,
                   backed_up: Callable[[Entry], bool] = lambda entry: True, run_records: int = 100_000) -> int:
    """`write_catalog` with the run's planned entries that `backed_up` accepts, as the plan recorded them."""
    if not layout.plan_file.is_file():
        raise UsageError("no plan.json: not a complete run directory", path=str(layout.run_dir))
    entries = (e for shard in sorted(layout.shards_dir.glob("shard-*.rec")) for e in read_records(shard)
               if backed_up(e))
    return write_catalog(previous, entries, layout.deleted_file, target, work_dir, run_records)


class SequentialShardCutter:
    """Shards in arrival order, each closed at `max_files` entries or before passing `max_bytes` (a single larger
    entry gets a shard of its own): restores and hash checks, whose entries need no directory grouping."""

    def __init__(self, shards_dir: Path, max_files: int, max_bytes: int):
        self.shards_dir, self.max_files, self.max_bytes = shards_dir, max_files, max_bytes
        self.shards: list[dict] = []
        self._writer: RecordWriter | None = None

    def add(self, entry: Entry) -> None:
        current = self.shards[-1] if self.shards else None
        if self._writer is None or current is None or current["files"] >= self.max_files or (
                current["files"] and current["bytes"] + entry.size_bytes > self.max_bytes):
            self._open()
            current = self.shards[-1]
        assert self._writer is not None
        self._writer.write(entry)
        current["files"] += 1
        current["bytes"] += entry.size_bytes

    def add_group(self, group: list[Entry]) -> None:
        """Hard links of one file: one shard for all (a restore links the others to the first), its bytes once."""
        current = self.shards[-1] if self.shards else None
        size = group[0].size_bytes
        if self._writer is None or current is None or (current["files"] and (
                current["files"] + len(group) > self.max_files or current["bytes"] + size > self.max_bytes)):
            self._open()
            current = self.shards[-1]
        assert self._writer is not None
        for entry in group:
            self._writer.write(entry)
        current["files"] += len(group)
        current["bytes"] += size

    def _open(self) -> None:
        self._close()
        index = len(self.shards)
        path = self.shards_dir / f"shard-{index:06d}.rec"
        self._writer = RecordWriter(path)
        self.shards.append({"index": index, "file": path.name, "files": 0, "bytes": 0})

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> list[dict]:
        self._close()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def journal_file(layout: ShardedLayout, shard: int) -> Path:
    return layout.result_file(shard, ".journal")


def shard_result_file(layout: ShardedLayout, shard: int) -> Path:
    return layout.result_file(shard)


def failures_file(layout: ShardedLayout, shard: int) -> Path:
    return layout.result_file(shard, ".failures.jsonl")


def _path_text(path: bytes) -> str:
    return os.fsdecode(path)  # surrogateescape: JSON keeps any byte exact


@dataclass(frozen=True)
class DoneRecord:
    """What the uploader recorded for one backed-up file: the version it read and the object it wrote."""

    size_bytes: int
    mtime_ns: int
    key: str
    etag: str
    tree_hash: str


def read_done_records(path: Path) -> dict[bytes, DoneRecord]:
    """The journal's finished files (one shard's worth: bounded by `shards.max_files`)."""
    return _parse_journal(path)[0] if path.exists() else {}


def read_open_uploads(path: Path) -> dict[bytes, "OpenUpload"]:
    """Multipart uploads the journal started and did not end (a task killed or stopped mid-file)."""
    return _parse_journal(path)[1] if path.exists() else {}


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload the journal started and did not finish."""

    upload_id: str
    key: str
    part_size: int
    size_bytes: int
    mtime_ns: int


def _parse_journal(path: Path) -> tuple[dict[bytes, DoneRecord], dict[bytes, "OpenUpload"]]:
    """(finished files, multipart uploads started and not ended) from a shard journal."""
    done: dict[bytes, DoneRecord] = {}
    open_uploads: dict[bytes, OpenUpload] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the work it described is redone
            file_path = os.fsencode(record["p"])
            kind = record["t"]
            if kind == "done":
                done[file_path] = DoneRecord(record["s"], record["m"], record["k"], record["e"], record["h"])
                open_uploads.pop(file_path, None)
            elif kind == "mpu":
                open_uploads[file_path] = OpenUpload(record["u"], record["k"], record["ps"], record["s"], record["m"])
            elif kind == "mpu-end":
                open_uploads.pop(file_path, None)
    return done, open_uploads


class ShardJournal:
    """Append-only JSON lines, one per finished file or multipart event, flushed as written (a `kill -9` loses
    nothing already written) and fsynced every `fsync_interval_s`. Reading it back gives what a rerun may skip.

    Memory: one small record per file of the shard (bounded by `shards.max_files`).
    """

    def __init__(self, path: Path, fsync_interval_s: float = 2.0):
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        self.done: dict[bytes, DoneRecord] = {}  # files already backed up
        self.open_uploads: dict[bytes, OpenUpload] = {}
        if path.exists():
            self.done, self.open_uploads = _parse_journal(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._file = os.fdopen(fd, "a", encoding="ascii")
        self._last_sync = 0.0

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        now = time_monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._file.fileno())
            self._last_sync = now

    def record_done(self, path: bytes, size_bytes: int, mtime_ns: int, key: str, tree_hash: str, etag: str,
                    checksum: str | None) -> None:
        self._write({"t": "done", "p": _path_text(path), "s": size_bytes, "m": mtime_ns, "k": key, "h": tree_hash,
                     "e": etag, "c": checksum})

    def record_upload_started(self, path: bytes, upload: OpenUpload) -> None:
        self._write({"t": "mpu", "p": _path_text(path), "u": upload.upload_id, "k": upload.key,
                     "ps": upload.part_size, "s": upload.size_bytes, "m": upload.mtime_ns})

    def record_upload_ended(self, path: bytes, upload_id: str, how: str) -> None:
        self._write({"t": "mpu-end", "p": _path_text(path), "u": upload_id, "how": how})

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
