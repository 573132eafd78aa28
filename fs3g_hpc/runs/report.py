"""What a merge reads of a sharded run, and what it tells people of the failures: every shard's result and failure
lines (typed, runs/files.py), the shard states, and the one `describe_failures`.

Memory: one shard's failure lines at a time (bounded by `shards.max_files`); describe_failures reads `limit` lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..model.records import display_path
from .files import HEADER_TYPES, FailureLine, Report, RunHeader, ShardResult
from .layout import RunLayout, failures_file, read_json, shard_result_file

NEVER_REPORTED = "never reported"


def read_header(layout: RunLayout) -> RunHeader:
    """The run's header file, typed for its kind (PlanHeader, RestoreHeader, CompareHeader)."""
    return HEADER_TYPES[layout.kind].from_json(read_json(layout.header_file), layout.header_file)


def read_shard_result(layout: RunLayout, index: int) -> ShardResult | None:
    """A shard's result, or None when its task never wrote one (killed, timed out, node lost, not run yet)."""
    path = shard_result_file(layout, index)
    return ShardResult.from_json(read_json(path), path) if path.exists() else None


def shard_state(layout: RunLayout, index: int) -> str:
    """done, failed, interrupted, or `never reported`."""
    result = read_shard_result(layout, index)
    return NEVER_REPORTED if result is None else result.status.value


def read_failure_lines(path: Path) -> Iterator[FailureLine]:
    """The lines of a failures file (a shard's or a merge's), typed; nothing when there is none."""
    if not path.exists():
        return
    with open(path, encoding="ascii") as f:
        for number, line in enumerate(f, 1):
            yield FailureLine.from_json(json.loads(line), f"{path}: line {number}")


def shard_failures(layout: RunLayout, index: int) -> Iterator[FailureLine]:
    return read_failure_lines(failures_file(layout, index))


def read_report(layout: RunLayout) -> Report | None:
    return Report.from_json(read_json(layout.report_file), layout.report_file) if layout.report_file.exists() else None


def describe_failures(run_dir: Path, limit: int = 10, *, more: bool = False) -> list[str]:
    """The first `limit` lines of the merge's failures.jsonl for people: `  path: [outcome: ]reason`; with `more`, a
    last `  ...` when there are others."""
    lines: list[str] = []
    for i, item in enumerate(read_failure_lines(RunLayout(run_dir).failures_file)):
        if i >= limit:
            if more:
                lines.append("  ...")
            break
        lines.append(f"  {display_path(item.path)}: {item.text()}")
    return lines
