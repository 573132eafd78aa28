"""Running `fs3g compare`: in this process, or with its hash checks as jobs (prepare, submit, follow), and the two
steps its jobs run (one shard's hash check, the merge). The CLI parses arguments into a `CompareRequest`, calls these
and turns what they return into exit codes; nothing here reads argv or knows an exit code.

Memory is that of the steps called (compare/join.py, compare/jobs.py, compare/report.py): bounded whatever the tree;
the reports are streamed to `out` a line at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence, TextIO

from ..config import Policy
from ..errors import Fs3gError, UsageError
from ..runs.files import CompareHeader
from ..runs.layout import read_json
from ..model.sizes import format_size
from ..scan import ScanSettings
from .checks import CompareSummary
from .jobs import CompareLayout, compare_shard, default_compare_dir, prepare_compare
from .join import DEFAULT_WORKERS, compare_tree
from .report import JsonReport, TextReport, print_limited, write_report_text

# What the local executor's interrupted line says to do.
RESUME_LOCAL = "the same fs3g compare again (a hash check only reads)"
# How long `--wait` follows a compare's merge job.
WAIT_S = 7 * 86400


@dataclass(frozen=True)
class CompareRequest:
    """What to compare and how: the subtrees (default: the policy's roots), the checks, the output."""

    paths: tuple[str, ...] = ()
    check_sha256: bool = False
    against_bucket: bool = False
    workers: int = DEFAULT_WORKERS
    scan_settings: ScanSettings | None = None
    as_json: bool = False
    limit: int | None = None
    as_of: str | None = None  # compare with that snapshot of the bucket's instead of the lab's catalog


def compare_here(policy: Policy, request: CompareRequest, out: TextIO) -> CompareSummary:
    """The whole compare in this process, its report (text or JSON, at most `limit` lines) streamed to `out`."""
    report = (JsonReport if request.as_json else TextReport)(out, request.limit)
    summary = compare_tree(policy, request.paths, check_sha256=request.check_sha256,
                           against_bucket=request.against_bucket, workers=request.workers, out=report,
                           scan_settings=request.scan_settings, as_of=request.as_of)
    report.finish(summary)
    return summary


@dataclass(frozen=True)
class PreparedCompare:
    """A compare run whose coordinator has joined both sides: its layout and header (compare.json)."""

    layout: CompareLayout
    header: CompareHeader

    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir

    @property
    def shards(self) -> list[dict]:
        return [s.to_json() for s in self.header.shards]

    @property
    def shard_count(self) -> int:
        return self.header.shard_count


def prepare_jobs(policy: Policy, request: CompareRequest, run_dir: Path | None, out: TextIO) -> PreparedCompare:
    """Check that the request can run as jobs, join both sides here and cut the files to hash into shards (in
    `run_dir`, default <run_root>/<lab>/compare-<time>); one line to `out` says what is left to hash."""
    if not request.check_sha256:
        raise UsageError("--executor is for --check-sha256 (reading the files is what a job array spreads); "
                         "drop it to compare by size and mtime here")
    if request.as_json:
        raise UsageError("--json is not available with --executor yet: the merge writes report.json")
    run_dir = run_dir or default_compare_dir(policy, datetime.now(timezone.utc))
    layout, header = prepare_compare(policy, request.paths, run_dir, against_bucket=request.against_bucket,
                                     workers=request.workers, scan_settings=request.scan_settings,
                                     as_of=request.as_of)
    out.write(f"compare {layout.run_dir}: {header.summary['discrepancies']:,} discrepancies found without reading "
              f"files; {header.to_hash.files:,} files ({format_size(header.to_hash.bytes)}) to hash in "
              f"{header.shard_count} shards\n")
    return PreparedCompare(layout, header)


def submit_and_follow(policy: Policy, prepared: PreparedCompare, *, fs3g: Sequence[str], wait: bool,
                      limit: int | None, out: TextIO) -> bool | None:
    """Submit the hash-check arrays and the merge to Slurm; with `wait`, follow the merge job (through sacct) and
    print its report: whether no discrepancy was found, or None without `wait`."""
    from ..slurm.submit import submit_compare, wait_for_job

    layout = prepared.layout
    submitted = submit_compare(policy, layout.run_dir, prepared.shard_count, fs3g)
    out.write(f"submitted: arrays {', '.join(submitted.array_ids) or '(none)'}; merge {submitted.merge_id} "
              f"(afterany); the verdict goes to {layout.text_file} and {layout.report_file}\n")
    if not wait:
        return None
    state = wait_for_job(submitted.merge_id, timeout_s=WAIT_S)
    if not layout.report_file.exists():
        raise Fs3gError(f"compare merge job {submitted.merge_id} ended {state.value} without a report",
                        hint=f"see {layout.run_dir / 'logs'}")
    print_limited(layout.text_file, limit, out)
    return bool(read_json(layout.report_file)["ok"])


def hash_shard(run_dir: Path, shard: int | None, out: TextIO, *,
               on_requeue: Callable[[], None] | None = None) -> dict:
    """One array task: hash one shard's files (SLURM_ARRAY_TASK_ID when `shard` is None); one line of counts.
    `on_requeue`: what a pre-timeout SIGUSR1 calls (the Slurm requeue, as for backup and restore tasks)."""
    counts = compare_shard(run_dir, shard, on_requeue=on_requeue)
    out.write(f"compare shard: {counts['files']:,} files hashed ({format_size(counts['hashed_bytes'])}), "
              f"{counts['changed']:,} changed, {counts['cannot_check']:,} cannot check\n")
    return counts


def merge(run_dir: Path, out: TextIO) -> CompareSummary:
    """The merge: every finding into report.json and discrepancies.txt, whose lines and table go to `out`."""
    summary, text = write_report_text(run_dir)
    print_limited(text, None, out)
    return summary
