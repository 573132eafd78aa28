"""`fs3g compare --check-sha256 --executor slurm|local`: the tree hashes of a large tree read by a job array.

    <run_root>/<lab>/compare-<UTC time>/          one compare run (0700)
        compare.json                              header: policy snapshot, the coordinator's summary (its source: the
                                                  catalog, or the --as-of snapshot), as_of, shards
        found.jsonl                               what the coordinator decided itself (missing, changed by
                                                  size/mtime, only in S3, cannot check)
        shards/shard-N.rec                        files to hash: the local entry, with the stored tree hash
        results/shard-N.jsonl|json                what each array task found, and its result (runs/files.ShardResult:
                                                  hashed, hashed_bytes, changed, cannot_check; an older task's
                                                  result counts its files in `files`)
        report.json, discrepancies.txt            written by the merge

The coordinator (the submitting process) does the streamed merge-join of `compare.join.compare_tree` once and
hands every file that needs its hash read to the shards instead of reading it (`prepare_compare`); each array task
reads and hashes its shard (`compare_shard`, on runs/task.run_task: stopped by a signal, it ends as interrupted and
the merge reports the files it did not reach as cannot-check); the merge (compare/report.py) adds the tasks' findings to the
coordinator's and writes the verdict. Reading is what costs at petabyte scale (SHA-256 runs at ~1.4 GB/s per core), so
that is what the array spreads. Memory: the coordinator's is the join's (shards are cut as files come, one record at a
time); a task streams its shard, holding one record and one read buffer.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .. import __version__
from ..config import Policy, policy_to_dict
from ..model.entries import EntryClass, classify
from ..model.records import Entry, read_records
from ..runs.files import CompareHeader
from ..runs.layout import RunKind, RunLayout, default_run_dir, make_private_dir, shard_from_environment, \
    write_json_atomic
from ..runs.progress import Counters
from ..runs.report import read_header
from ..runs.task import ShardTask, ShardWork, run_task
from ..runs.shards import SequentialShardCutter
from ..scan import ScanSettings
from .checks import Category, Discrepancy, NotComparable, local_tree_hash
from .join import compare_tree


@dataclass(frozen=True)
class CompareLayout(RunLayout):
    """A compare run whose hash checks run as jobs (its header: compare.json)."""

    kind: RunKind = RunKind.COMPARE

    @property
    def found_file(self) -> Path:
        return self.run_dir / "found.jsonl"

    def shard_found(self, index: int) -> Path:
        return self.result_file(index, ".jsonl")

    def shard_result(self, index: int) -> Path:
        return self.result_file(index)

    @property
    def text_file(self) -> Path:
        return self.run_dir / "discrepancies.txt"


def default_compare_dir(policy: Policy, now: datetime) -> Path:
    return default_run_dir(policy, now, "compare")


def private_file(path: Path, mode: str = "w") -> TextIO:
    """A text file of the run, created owner-only (it names the lab's paths)."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC), 0o600), mode,
                encoding="ascii")


def prepare_compare(policy: Policy, paths: Sequence[str], run_dir: Path, *, against_bucket: bool, workers: int,
                    scan_settings: ScanSettings | None = None, as_of: str | None = None,
                    client_factory: Callable[[Policy], Any] | None = None) -> tuple[CompareLayout, CompareHeader]:
    """Join both sides once, record what needs no reading, and cut the files to hash into shards. With `as_of` (a
    time or snapshot id), the other side is that snapshot of the bucket's (its records' tree hashes go to the
    shards), as for a compare in this process."""
    started = datetime.now(timezone.utc)
    layout = CompareLayout(make_private_dir(run_dir))
    make_private_dir(layout.shards_dir)
    cutter = SequentialShardCutter(layout.shards_dir, policy.shards.max_files, policy.shards.max_bytes)
    lock = threading.Lock()

    def to_hash(local: Entry, stored_hex: str, _klass: EntryClass) -> None:
        with lock:  # called from the compare's pool threads
            cutter.add(local._replace(tree_hash=bytes.fromhex(stored_hex)))

    with private_file(layout.found_file) as found:
        try:
            summary = compare_tree(policy, paths, check_sha256=True, against_bucket=against_bucket, workers=workers,
                                   out=lambda d: found.write(json.dumps(d.to_json()) + "\n"),
                                   client_factory=client_factory, scan_settings=scan_settings, hash_sink=to_hash,
                                   as_of=as_of)
            shards = cutter.finish()
        except BaseException:
            cutter.abort()
            raise
    header = {
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(),
        "started": started.isoformat(),  # before the coordinator's join: what the report's elapsed_s counts from
        "lab": policy.lab.name,
        "summary": summary.to_json(),
        "as_of": as_of,  # the --as-of given (the snapshot it chose is the summary's source), or None
        "shard_count": len(shards),
        "to_hash": {"files": sum(s["files"] for s in shards), "bytes": sum(s["bytes"] for s in shards)},
        "shards": shards,
        "policy": policy_to_dict(policy),
    }
    write_json_atomic(layout.header_file, header)
    return layout, CompareHeader.from_json(header, layout.header_file)


def load_compare(run_dir: Path) -> tuple[CompareLayout, CompareHeader]:
    """A compare run's layout and its header (compare.json, typed)."""
    layout = CompareLayout(run_dir)
    header = read_header(layout)
    assert isinstance(header, CompareHeader)
    return layout, header


def compare_shard(run_dir: Path, shard: int | None, environ: dict[str, str] | None = None, *,
                  on_requeue: Callable[[], None] | None = None) -> dict:
    """Read and hash one shard's files (on runs/task.run_task); write what differs. Rerunning it redoes the shard
    (it only reads). Its counts: files (hashed), hashed_bytes, changed, cannot_check."""
    layout, header = load_compare(run_dir)
    policy = header.policy_snapshot(layout.header_file)
    env = dict(os.environ if environ is None else environ)
    shard = shard_from_environment(shard, header.shard_count, env, layout.header_file, "the compare")
    threshold = policy.storage.small_file_threshold_bytes
    counts = {"files": 0, "hashed_bytes": 0, "changed": 0, "cannot_check": 0}

    def hash_files(task: ShardTask) -> ShardWork:
        planned = task.summary

        def counters() -> Counters:
            return Counters(counts["files"], planned.files, counts["hashed_bytes"], planned.bytes,
                            counts["cannot_check"])

        with private_file(layout.shard_found(task.index)) as out, task.progress(counters):
            for entry in read_records(layout.shard_file(task.index)):
                if task.stop.is_set():
                    break  # interrupted: the merge reports the files not reached as cannot-check
                klass = classify(entry, threshold) or EntryClass.SMALL
                counts["files"] += 1
                try:
                    digest, read_bytes = local_tree_hash(entry)
                    counts["hashed_bytes"] += read_bytes
                    found = (None if digest == entry.tree_hash.hex() else
                             Discrepancy(Category.CHANGED, klass, entry.path, "SHA-256 tree hash differs"))
                except NotComparable as e:
                    found = Discrepancy(Category.CANNOT_CHECK, klass, entry.path, str(e))
                except FileNotFoundError:
                    found = Discrepancy(Category.CANNOT_CHECK, klass, entry.path, "vanished during the compare")
                except OSError as e:
                    found = Discrepancy(Category.CANNOT_CHECK, klass, entry.path, f"cannot read: {e.strerror or e}")
                if found is not None:
                    counts["changed" if found.category is Category.CHANGED else "cannot_check"] += 1
                    out.write(json.dumps(found.to_json()) + "\n")
        # A discrepancy is a finding, not a failure: the shard is done (its files are in its .jsonl).
        return ShardWork(0, {"hashed": counts["files"], "hashed_bytes": counts["hashed_bytes"],
                             "changed": counts["changed"], "cannot_check": counts["cannot_check"]})

    run_task(layout, header, shard, hash_files, label="compare shard", environ=env, on_requeue=on_requeue)
    return counts
