"""The output of `fs3g compare`: discrepancy lines and the summary table as text or one JSON object, written as the
discrepancies come (nothing is held but the counts); and the merge of a compare run whose hash checks ran as jobs,
which streams the coordinator's findings and every task's into report.json and discrepancies.txt, a line at a time.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TextIO

from .. import __version__
from ..runs.files import ShardStatus
from ..runs.layout import read_json, write_json_atomic
from ..model.entries import EntryClass, classify
from ..model.records import read_records
from ..runs.progress import timing_fields, timing_line
from .checks import Category, CompareSummary, Discrepancy
from ..runs.report import read_shard_result
from .jobs import CompareLayout, load_compare, private_file

class TextReport:
    """One line per discrepancy as it comes (at most `limit`), then the summary table."""

    def __init__(self, stream: TextIO, limit: int | None = None):
        self.stream = stream
        self.limit = limit
        self.shown = 0
        self.hidden = 0

    def __call__(self, d: Discrepancy) -> None:
        if self.limit is not None and self.shown >= self.limit:
            self.hidden += 1
            return
        self.stream.write(d.line() + "\n")
        self.shown += 1

    def finish(self, summary: CompareSummary) -> None:
        if self.hidden:
            self.stream.write(f"... {self.hidden:,} more not shown (--limit {self.limit})\n")
        self.stream.write("\n".join(summary.table_lines()) + "\n")
        self.stream.flush()


class JsonReport:
    """One JSON object, written as it goes: {"discrepancies": [...], "shown", "not_shown", "summary"}."""

    def __init__(self, stream: TextIO, limit: int | None = None):
        self.stream = stream
        self.limit = limit
        self.shown = 0
        self.hidden = 0

    def _open(self) -> None:
        if self.shown == 0:
            self.stream.write('{"discrepancies": [')

    def __call__(self, d: Discrepancy) -> None:
        if self.limit is not None and self.shown >= self.limit:
            self.hidden += 1
            return
        self._open()
        self.stream.write(("\n " if self.shown == 0 else ",\n ") + json.dumps(d.to_json()))
        self.shown += 1

    def finish(self, summary: CompareSummary) -> None:
        self._open()
        self.stream.write(f'\n], "shown": {self.shown}, "not_shown": {self.hidden}, '
                          f'"summary": {json.dumps(summary.to_json())}}}\n')
        self.stream.flush()


# --- the merge of a compare run ---------------------------------------------------------------------------------------

def merge_compare(run_dir: Path, out: Callable[[Discrepancy], None]) -> CompareSummary:
    """The coordinator's findings plus every task's; a task that never reported leaves its files cannot-check, and
    one that was interrupted the files it did not reach."""
    layout, header = load_compare(run_dir)
    summary = CompareSummary.from_json(header.summary)
    threshold = header.policy_snapshot(layout.header_file).storage.small_file_threshold_bytes

    def emit(d: Discrepancy) -> None:
        summary.add(d)
        out(d)

    with open(layout.found_file, encoding="ascii") as f:
        for line in f:
            out(Discrepancy.from_json(json.loads(line)))  # already counted by the coordinator
    for shard in header.shards:
        index = shard.index
        result = read_shard_result(layout, index)

        def unchecked(skip: int, why: str) -> None:
            for n, entry in enumerate(read_records(layout.shard_file(index))):
                if n >= skip:
                    emit(Discrepancy(Category.CANNOT_CHECK, classify(entry, threshold) or EntryClass.SMALL,
                                     entry.path, f"its hash check (shard {index}) {why}"))

        if result is None:
            unchecked(0, "never reported")
            continue
        # `hashed`: the files the task read; a task of an older version wrote them as `files` (it always finished)
        hashed = result.count("hashed") if "hashed" in result.counts else int(result.files or 0)
        summary.hashed_files += hashed
        summary.hashed_bytes += result.count("hashed_bytes")
        with open(layout.shard_found(index), encoding="ascii") as f:
            for line in f:
                emit(Discrepancy.from_json(json.loads(line)))
        if result.status is not ShardStatus.DONE:
            unchecked(hashed, f"was {result.status.value}")
    write_json_atomic(layout.report_file, {
        "tool_version": __version__, "merged": datetime.now(timezone.utc).isoformat(), "run_dir": str(run_dir),
        **summary.to_json(),
        # Elapsed from the coordinator's start (its join included); throughput of the hash reading.
        **timing_fields(layout, header.shard_count, header.started,
                        summary.hashed_files, summary.hashed_bytes)})
    return summary


def write_report_text(run_dir: Path) -> tuple[CompareSummary, Path]:
    """Merge, writing the discrepancy lines and the table to discrepancies.txt (owner-only)."""
    layout = CompareLayout(run_dir)
    with private_file(layout.text_file) as text:
        report = TextReport(text)
        summary = merge_compare(run_dir, report)
        report.finish(summary)
        text.write(timing_line(read_json(layout.report_file)) + "\n")
    return summary, layout.text_file


def print_limited(path: Path, limit: int | None, out: TextIO) -> None:
    """A report file's lines, streamed; with a limit, that many discrepancy lines and then the table (which starts at
    `compare:`)."""
    shown = 0
    with open(path, encoding="ascii") as f:
        table = False
        for line in f:
            table = table or line.startswith("compare: ")
            if table or limit is None or shown < limit:
                out.write(line)
                shown += not table
