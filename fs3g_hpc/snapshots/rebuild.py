"""`fs3g catalog rebuild --config C`: the lab's catalog (and a snapshot) built from the bucket alone, for a bucket
written per object without snapshots (by the original tool, or by fs3g before snapshots). It runs as a job array
split by key range, through the run core (runs/executor.py, runs/task.py), like a compare's hash checks:

    <run_root>/<lab>/rebuild-<UTC time>/         one rebuild run (0700)
        rebuild.json                             header (runs/files.RebuildHeader): policy snapshot, keys listed,
                                                 HEADs in flight per task, shards; written last
        shards/shard-N.rec                       one key range: placeholder records (path, class, listed size)
        results/shard-N.rec                      the shard's catalog records, sorted; written whole (renamed into
                                                 place) when the shard is done: its journal
        results/shard-N.json|failures.jsonl      its result (runs/files.ShardResult) and one line per object whose
                                                 HEAD failed
        report.json                              RebuildSummary, written by the merge

    1. list   (here) [PREFIX/]{smallfile,largefile,symlinks}/<root>/ for each root (one request per 1,000 keys), plus
              the shared .fs3g-long/ directories (their pathmap objects say which path each holds), cut in key order
              into shards of `snapshots.rebuild_shard_keys` keys
    2. shards (one array task each, `fs3g rebuild-shard RUN_DIR`) HEAD their objects (listings carry no metadata:
              one HEAD per object is unavoidable here) in `workers` threads and write their records sorted. A shard
              whose results/shard-N.rec exists is done and is not redone (a rerun after kill -9 redoes only the
              shards without it); an object whose HEAD fails is named in the failures file and left out
    3. merge  (`fs3g rebuild-merge RUN_DIR`, the merge job) the shards' records merged by path (a path under two
              classes keeps the newer mtime) into <run_root>/<lab>/catalog.rec, then a snapshot written as a merge
              writes one. A shard without its records (stopped, killed, never run) stops the merge: the catalog is
              not replaced, and the line says how to resume (`--resume RUN_DIR`)

Records carry the object metadata's mtime, ctime, atime, mode, owner and tree hash (the original tool's float-string
mtimes kept at their precision; model/mtimes.py decides equality), so the next backup uploads only what changed.
An object without readable metadata, or whose HEAD failed, is left out (so that file is backed up again) and counted.
Memory: one listing page and `workers` HEADs in flight, one shard's records while sorting (rebuild_shard_keys), one
record per shard while merging. Nothing in the bucket is changed except the new snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..config import Policy, policy_to_dict
from ..model.keys import LONG_DIR, PATHMAP_MAX_BYTES, KeyClass, encode_path, parse_key, pathmap_key
from ..model.mtimes import text_ns
from ..model.objectmeta import TREEHASH_KEY
from ..model.records import Entry, EntryKind, by_key, read_records, sorted_stream, write_records
from ..runs.catalog import catalog_path, record_catalog_target
from ..runs.executor import RunSpec, fs3g_argv
from ..runs.files import FailureLine, RebuildHeader, ShardResult
from ..runs.layout import RunKind, RunLayout, default_run_dir, ensure_private_dir, make_private_dir, read_json, \
    shard_from_environment, write_json_atomic
from ..runs.progress import Counters
from ..runs.report import read_header, read_shard_result
from ..runs.shards import SequentialShardCutter
from ..runs.task import ShardTask, ShardWork, run_task
from .store import record_origin, write_snapshot

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 32
_CLASSES = (KeyClass.SMALL, KeyClass.LARGE, KeyClass.SYMLINK)


@dataclass
class RebuildSummary:
    """report.json of a rebuild run (and what the command prints)."""

    listed: int = 0
    entries: int = 0
    heads: int = 0
    unusable: int = 0
    shards: int = 0
    catalog: str = ""
    snapshot_id: str = ""
    failed: int = 0  # HEADs that failed (named in the shards' failures files)
    not_done: list[int] = field(default_factory=list)  # shards without records: the merge did not run

    def lines(self) -> list[str]:
        if self.not_done:
            shown = ", ".join(map(str, self.not_done[:20])) + (" ..." if len(self.not_done) > 20 else "")
            return [f"catalog rebuild: {len(self.not_done)} of {self.shards} shard(s) not done ({shown}): "
                    "catalog not replaced, no snapshot written"]
        left = []
        if self.unusable:
            left.append(f"{self.unusable:,} objects without readable metadata left out")
        if self.failed:
            left.append(f"{self.failed:,} objects whose HEAD failed left out (named in results/*.failures.jsonl)")
        return [f"catalog rebuild: {self.listed:,} objects listed in {self.shards} shard(s), {self.heads:,} HEAD "
                f"requests; {self.entries:,} catalog entries -> {self.catalog}",
                f"  snapshot {self.snapshot_id}" + (f"; {'; '.join(left)} (backed up again next time)" if left
                                                    else "")]

    def to_json(self) -> dict[str, Any]:
        return {"listed": self.listed, "entries": self.entries, "heads": self.heads, "unusable": self.unusable,
                "failed": self.failed, "shards": self.shards, "catalog": self.catalog,
                "snapshot": self.snapshot_id, "not_done": list(self.not_done)}

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "RebuildSummary":
        from ..errors import UsageError

        if not isinstance(data, dict):
            raise UsageError("not a rebuild report", path=str(where))
        try:
            return cls(int(data["listed"]), int(data["entries"]), int(data["heads"]), int(data["unusable"]),
                       int(data["shards"]), str(data["catalog"]), str(data["snapshot"]), int(data.get("failed", 0)),
                       [int(i) for i in data.get("not_done", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"not a rebuild report ({e})", path=str(where)) from None


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _listed_keys(policy: Policy, client: Any) -> Iterator[Entry]:
    """The objects under the policy's roots as placeholder records (path, class in `dev`, size), key-range order."""
    from ..transfer.objects import list_tree, read_small_object

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    roots = [r.encode("utf-8", "surrogateescape").rstrip(b"/") for r in policy.roots]

    def under_roots(path: bytes) -> bool:
        return any(path == r or path.startswith(r + b"/") for r in roots)

    for klass in _CLASSES:
        for root in roots:
            base = _join(prefix, klass.value, encode_path(root)) + "/"
            for key, listed in list_tree(client, bucket, base):
                _, path, digest = parse_key(prefix, key)
                if path is not None:
                    yield _placeholder(path, klass, listed.size_bytes)
        for key, listed in list_tree(client, bucket, _join(prefix, klass.value, LONG_DIR) + "/"):
            digest = parse_key(prefix, key)[2] or ""
            path = read_small_object(client, bucket, pathmap_key(prefix, digest), PATHMAP_MAX_BYTES)
            if path is not None and hashlib.sha256(path).hexdigest() == digest and under_roots(path):
                yield _placeholder(path, klass, listed.size_bytes)


def _placeholder(path: bytes, klass: KeyClass, size: int) -> Entry:
    kind = EntryKind.SYMLINK if klass is KeyClass.SYMLINK else EntryKind.FILE
    return Entry.of(path, kind, size, 0, 0, 0, 0, 0, 0, _CLASSES.index(klass), 0, 1)


def entry_from_metadata(listed: Entry, metadata: dict[str, str]) -> Entry | None:
    """The catalog record an object's metadata describes; None when it has no readable mtime."""
    try:
        mtime = text_ns(metadata["mtime"])
    except (KeyError, ValueError):
        return None

    def number(name: str, parse: Callable[[str], int], default: int) -> int:
        try:
            return parse(metadata[name])
        except (KeyError, ValueError):
            return default

    def octal(text: str) -> int:
        text = text.strip()
        return int(text[2:] if text.lower().startswith("0o") else text, 8)

    is_link = listed.kind is EntryKind.SYMLINK
    mode = number("mode", octal, 0o120777 if is_link else 0o100644)
    tree = metadata.get(TREEHASH_KEY, "").strip().lower()
    tree_hash = bytes.fromhex(tree) if len(tree) == 64 and all(c in "0123456789abcdef" for c in tree) else b""
    return listed._replace(mtime_ns=mtime, ctime_ns=number("ctime", text_ns, 0), atime_ns=number("atime", text_ns, 0),
                           mode=mode, uid=number("owneruid", int, 0), gid=number("groupuid", int, 0), dev=0,
                           tree_hash=tree_hash)


def _newest_per_path(entries: Iterator[Entry]) -> Iterator[Entry]:
    for _, group in groupby(entries, key=by_key):
        yield max(group, key=lambda e: e.mtime_ns)


class RebuildVerdict(str, Enum):
    DONE = "done"  # every shard done, no HEAD failed: the catalog and its snapshot are written
    INCOMPLETE = "incomplete"  # written, but some objects' HEADs failed (named; those files are backed up again)
    NOT_MERGED = "not merged"  # some shard has no records (stopped, killed, never ran): nothing replaced


@dataclass(frozen=True)
class RebuildLayout(RunLayout):
    """A catalog rebuild run (its header: rebuild.json)."""

    kind: RunKind = RunKind.REBUILD

    def shard_records(self, index: int) -> Path:
        """results/shard-N.rec: the shard's records, sorted; there only once the shard is done."""
        return self.result_file(index, ".rec")


def default_rebuild_dir(policy: Policy, now: datetime) -> Path:
    return default_run_dir(policy, now, "rebuild")


def _client(policy: Policy, workers: int, client_factory: Callable[[Policy], Any] | None) -> Any:
    if client_factory is not None:
        return client_factory(policy)
    from ..transfer.client import ClientSettings, make_s3_client

    return make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=workers))


def prepare_rebuild(policy: Policy, run_dir: Path, *, workers: int = DEFAULT_WORKERS,
                    client_factory: Callable[[Policy], Any] | None = None) -> tuple[RebuildLayout, RebuildHeader]:
    """Step 1: list the roots' objects and cut them by key range into shards; the header written last."""
    client = _client(policy, workers, client_factory)
    layout = RebuildLayout(make_private_dir(run_dir))
    make_private_dir(layout.shards_dir)
    cutter = SequentialShardCutter(layout.shards_dir, policy.snapshots.rebuild_shard_keys, 1 << 62)
    listed = 0
    try:
        for entry in _listed_keys(policy, client):
            cutter.add(entry)
            listed += 1
        shards = cutter.finish()
    except BaseException:
        cutter.abort()
        raise
    header = {"tool_version": __version__, "created": datetime.now(timezone.utc).isoformat(),
              "lab": policy.lab.name, "listed": listed, "workers": workers, "shard_count": len(shards),
              "shards": shards, "policy": policy_to_dict(policy)}
    write_json_atomic(layout.header_file, header)
    return layout, RebuildHeader.from_json(header, layout.header_file)


def load_rebuild(run_dir: Path) -> tuple[RebuildLayout, RebuildHeader, Policy]:
    layout = RebuildLayout(run_dir)
    header = read_header(layout)
    assert isinstance(header, RebuildHeader)
    return layout, header, header.policy_snapshot(layout.header_file)


def rebuild_shard(run_dir: Path, shard: int | None, *, environ: dict[str, str] | None = None,
                  client_factory: Callable[[Policy], Any] | None = None,
                  on_requeue: Callable[[], None] | None = None) -> ShardResult | None:
    """Step 2 for one shard (one array task, on runs/task.run_task); None when the shard was done already."""
    from ..compare.join import bounded_map
    from ..model.keys import object_key
    from ..transfer.objects import ObjectAccessError, head_object

    layout, header, policy = load_rebuild(run_dir)
    env = dict(os.environ if environ is None else environ)
    index = shard_from_environment(shard, header.shard_count, env, layout.header_file, "the rebuild")
    if layout.shard_records(index).is_file():
        return None  # done before (its records are its journal): not redone
    bucket, prefix, workers = policy.s3.bucket, policy.s3.prefix, header.workers
    counts = {"heads": 0, "entries": 0, "unusable": 0, "failed": 0}

    def work(task: ShardTask) -> ShardWork:
        client = _client(policy, workers, client_factory)

        def head(entry: Entry) -> Any:
            key = object_key(prefix, _CLASSES[entry.dev], entry.path).key
            try:
                return head_object(client, bucket, key)
            except ObjectAccessError as e:
                return e

        def counters() -> Counters:
            return Counters(counts["heads"], task.summary.files, 0, 0, counts["failed"])

        records: list[Entry] = []
        with ThreadPoolExecutor(workers) as pool, task.progress(counters):
            for listed, info in bounded_map(pool, head, read_records(layout.shard_file(task.index)), workers * 4):
                if task.stop.is_set():
                    break
                counts["heads"] += 1
                if isinstance(info, Exception):
                    counts["failed"] += 1
                    task.failures.record(FailureLine(listed.path, f"HEAD failed: {info}", "not rebuilt"))
                    continue
                record = None if info is None else entry_from_metadata(listed, dict(info.metadata))
                if record is None:
                    counts["unusable"] += 1
                    continue
                records.append(record._replace(size_bytes=info.size_bytes))
        if not task.stop.is_set():
            records.sort(key=by_key)
            counts["entries"] = write_records(layout.shard_records(task.index), records)
        return ShardWork(counts["failed"], dict(counts))

    return run_task(layout, header, index, work, label="rebuild shard", environ=env, on_requeue=on_requeue)


def merge_rebuild(run_dir: Path, *, client_factory: Callable[[Policy], Any] | None = None
                  ) -> tuple[RebuildVerdict, RebuildSummary]:
    """Step 3: the shards' records into the lab's catalog, then its snapshot; report.json (RebuildSummary)."""
    layout, header, policy = load_rebuild(run_dir)
    summary = RebuildSummary(listed=header.listed, shards=header.shard_count)
    missing = []
    for shard in header.shards:
        result = read_shard_result(layout, shard.index)
        if not layout.shard_records(shard.index).is_file():
            missing.append(shard.index)
            continue
        if result is not None:
            summary.heads += result.count("heads")
            summary.unusable += result.count("unusable")
            summary.failed += result.count("failed")
    if missing:
        summary.not_done = missing
        write_json_atomic(layout.report_file, summary.to_json())
        return RebuildVerdict.NOT_MERGED, summary
    client = _client(policy, header.workers, client_factory)
    work = Path(tempfile.mkdtemp(prefix=".merge-", dir=run_dir))
    try:
        runs = []
        for shard in header.shards:  # links: an external merge of many runs removes its inputs, never the shards'
            link = work / f"in-{shard.index:06d}.rec"
            os.link(layout.shard_records(shard.index), link)
            runs.append(link)
        catalog = catalog_path(policy)
        ensure_private_dir(catalog.parent)
        summary.entries = write_records(catalog, _newest_per_path(sorted_stream(runs, work)))
        os.chmod(catalog, 0o600)
        record_catalog_target(policy)
        summary.catalog = str(catalog)
        manifest = write_snapshot(policy, catalog, client, work, source="rebuild", run_id=run_dir.name)
        record_origin(policy, manifest.snapshot_id, catalog)
        summary.snapshot_id = manifest.snapshot_id
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json_atomic(layout.report_file, summary.to_json())
    return (RebuildVerdict.INCOMPLETE if summary.failed else RebuildVerdict.DONE), summary


def read_rebuild_report(run_dir: Path) -> RebuildSummary | None:
    layout = RebuildLayout(run_dir)
    if not layout.report_file.is_file():
        return None
    return RebuildSummary.from_json(read_json(layout.report_file), layout.report_file)


def resume_hint(policy: Policy, run_dir: Path) -> str:
    config = policy.source_files[-1] if policy.source_files else "LAB.yaml"
    return f"fs3g catalog rebuild --config {config} --resume {run_dir} (done shards are kept)"


def rebuild_spec(policy: Policy, layout: RebuildLayout, header: RebuildHeader,
                 merge: Callable[[], int]) -> RunSpec:
    """The rebuild as the run core runs it: `rebuild-shard` tasks, then `merge` (local) or the merge job (Slurm)."""
    from ..slurm.submit import submit_rebuild

    return RunSpec(layout.run_dir, header.shards, "rebuild-shard", merge=merge,
                   submit=lambda fs3g: submit_rebuild(policy, layout.run_dir, header.shard_count, fs3g),
                   label="catalog rebuild", resume=resume_hint(policy, layout.run_dir), fs3g=fs3g_argv())


def rebuild_catalog(policy: Policy, *, workers: int = DEFAULT_WORKERS, run_dir: Path | None = None,
                    client_factory: Callable[[Policy], Any] | None = None) -> RebuildSummary:
    """The whole rebuild on the local executor (`fasts3plusglacier --backup` runs it by itself): steps 1-3; the
    summary of what was built. Fs3gError when it could not merge (a shard stopped)."""
    from ..errors import Fs3gError
    from ..runs.executor import Executor, choose_executor

    layout, header = prepare_rebuild(policy, run_dir or default_rebuild_dir(policy, datetime.now(timezone.utc)),
                                     workers=workers, client_factory=client_factory)
    outcome: list[tuple[RebuildVerdict, RebuildSummary]] = []

    def merge() -> int:
        outcome.append(merge_rebuild(layout.run_dir, client_factory=client_factory))
        return 0 if outcome[-1][0] is not RebuildVerdict.NOT_MERGED else 1

    choose_executor(Executor.LOCAL).run(rebuild_spec(policy, layout, header, merge), wait=True)
    if not outcome or outcome[-1][0] is RebuildVerdict.NOT_MERGED:
        raise Fs3gError(f"catalog rebuild {layout.run_dir} did not finish", hint=resume_hint(policy, layout.run_dir))
    return outcome[-1][1]
