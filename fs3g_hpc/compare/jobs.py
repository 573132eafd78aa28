"""`fs3g compare --check-sha256 --executor slurm|local`: the tree hashes of a large tree read by a job array.

    <run_root>/<lab>/compare-<UTC time>/          one compare run (0700)
        compare.json                              header: policy snapshot, the coordinator's summary, shards
        found.jsonl                               what the coordinator decided itself (missing, changed by
                                                  size/mtime, only in S3, cannot check)
        shards/shard-N.rec                        files to hash: the local entry, with the stored tree hash
        results/shard-N.jsonl|json                what each array task found, and its counts
        report.json, discrepancies.txt            written by the merge

The coordinator (the submitting process) does the streamed merge-join of `compare.join.compare_tree` once and
hands every file that needs its hash read to the shards instead of reading it (`prepare_compare`); each array task
reads and hashes its shard (`compare_shard`); the merge (compare/report.py) adds the tasks' findings to the
coordinator's and writes the verdict. Reading is what costs at petabyte scale (SHA-256 runs at ~1.4 GB/s per core), so
that is what the array spreads. Memory: the coordinator's is the join's (shards are cut as files come, one record at a
time); a task streams its shard, holding one record and one read buffer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .. import __version__
from ..config import Policy, policy_from_snapshot, policy_to_dict
from ..errors import UsageError
from ..model.entries import EntryClass, classify
from ..model.records import Entry, read_records
from ..runs.layout import RunLayout, default_run_dir, ensure_private_dir, make_private_dir, read_json, write_json_atomic
from ..runs.progress import Counters, ShardProgress, progress_file
from ..runs.shards import SequentialShardCutter
from ..scan import ScanSettings
from .checks import Category, Discrepancy, NotComparable, local_tree_hash
from .join import compare_tree


class CompareLayout(RunLayout):
    """A compare run whose hash checks run as jobs."""

    @property
    def header_file(self) -> Path:
        return self.run_dir / "compare.json"

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
                    scan_settings: ScanSettings | None = None,
                    client_factory: Callable[[Policy], Any] | None = None) -> tuple[CompareLayout, dict]:
    """Join both sides once, record what needs no reading, and cut the files to hash into shards."""
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
                                   client_factory=client_factory, scan_settings=scan_settings, hash_sink=to_hash)
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
        "shard_count": len(shards),
        "to_hash": {"files": sum(s["files"] for s in shards), "bytes": sum(s["bytes"] for s in shards)},
        "shards": shards,
        "policy": policy_to_dict(policy),
    }
    write_json_atomic(layout.header_file, header)
    return layout, header


def compare_shard(run_dir: Path, shard: int | None, environ: dict[str, str] | None = None) -> dict:
    """Read and hash one shard's files; write what differs. Rerunning it redoes the shard (it only reads)."""
    layout = CompareLayout(run_dir)
    header = read_json(layout.header_file)
    policy = policy_from_snapshot(header["policy"], f"{layout.header_file}: policy")
    env = dict(os.environ if environ is None else environ)
    if shard is None:
        task = env.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.isdigit():
            raise UsageError("no shard given: pass --shard N or run as a Slurm array task (SLURM_ARRAY_TASK_ID)")
        shard = int(task) + int(env.get("FS3G_SHARD_OFFSET", "0"))
    if not 0 <= shard < header["shard_count"]:
        raise UsageError(f"shard {shard} does not exist (the compare has {header['shard_count']} shards)")
    ensure_private_dir(layout.results_dir)
    threshold = policy.storage.small_file_threshold_bytes
    counts = {"files": 0, "hashed_bytes": 0, "changed": 0, "cannot_check": 0}
    planned = header["shards"][shard]

    def counters() -> Counters:
        return Counters(counts["files"], planned["files"], counts["hashed_bytes"], planned.get("bytes", 0),
                        counts["cannot_check"])

    with private_file(layout.shard_found(shard)) as out, \
            ShardProgress(f"compare shard {shard}", counters, sys.stderr, progress_file(layout, shard)):
        for entry in read_records(layout.shard_file(shard)):
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
    write_json_atomic(layout.shard_result(shard), {"shard": shard, "status": "done", **counts})
    return counts
