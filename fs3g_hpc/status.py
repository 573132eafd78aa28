"""`fs3g status`: where a run stands, from its own files (journals, results, report) and, for Slurm runs, `sacct`.

Per shard: pending (nothing written yet), running (journal growing), done, failed, interrupted, or the Slurm state of
its array task when that says more (e.g. CANCELLED, TIMEOUT); files and bytes done (a hard-linked file's bytes once, as
the plan counts them), rate, ETA.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .manifest import RunLayout, journal_file, read_done_records, read_json, shard_result_file
from .records import EntryKind, read_records
from .sizes import format_size


@dataclass(frozen=True)
class ShardStatusLine:
    index: int
    state: str
    files_done: int
    files: int
    bytes_done: int
    bytes: int


def shard_states(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None
                 ) -> list[ShardStatusLine]:
    layout = RunLayout(run_dir)
    header = read_json(layout.plan_file)
    from_slurm: dict[int, str] = {}
    submitted = run_dir / "jobs" / "submitted.json"
    if slurm_states is not None and submitted.exists():
        from_slurm = slurm_states(json.loads(submitted.read_text())["arrays"])
    lines = []
    for summary in header["shards"]:
        index = summary["index"]
        result = shard_result_file(layout, index)
        journal = journal_file(layout, index)
        done = read_done_records(journal)
        if result.exists():
            state = json.loads(result.read_text())["status"]
        elif journal.exists():
            state = "running"
        else:
            state = "pending"
        slurm = from_slurm.get(index)
        if slurm and slurm not in ("COMPLETED", "RUNNING", "PENDING") and state != "done":
            state = slurm.lower()
        lines.append(ShardStatusLine(index, state, len(done), summary["files"],
                                     _done_bytes(done, layout.shards_dir / summary["file"]
                                                 if summary.get("hardlinked_files") else None), summary["bytes"]))
    return lines


def _done_bytes(done: dict, shard_file: Path | None) -> int:
    """Bytes of the journaled files, a hard-linked file's once (as the plan counts them); `shard_file` is read only
    for a shard that holds hard links (one shard's records, bounded by shards.max_files)."""
    if shard_file is None:
        return sum(r.size_bytes for r in done.values())
    inode = {e.path: (e.dev, e.ino) for e in read_records(shard_file)
             if e.nlink > 1 and e.kind is EntryKind.FILE}
    seen: set[tuple[int, int]] = set()
    total = 0
    for path, record in done.items():
        link = inode.get(path)
        if link is not None:
            if link in seen:
                continue
            seen.add(link)
        total += record.size_bytes
    return total


def describe_restore(run_dir: Path) -> list[str]:
    """A restore run: its Glacier stage (requests, polls, objects in progress), then its download shards."""
    header = read_json(run_dir / "restore.json")
    stage_file = run_dir / "stage" / "state.json"
    stage = read_json(stage_file) if stage_file.exists() else None
    chain_file = run_dir / "jobs" / "chain.json"
    chain = read_json(chain_file) if chain_file.exists() else {}
    planned = header["planned"]
    out = [f"{run_dir}: restore of {planned['files']:,} files {format_size(planned['bytes'])} -> "
           f"{header['destination']}"]
    if stage is None:
        out.append("  glacier: not staged yet" + (f" (poll job {chain['stages'][-1]})" if chain.get("stages") else ""))
    else:
        waiting = f", next poll job {chain['stages'][-1]}" if stage["verdict"] == "waiting" and chain.get("stages") else ""
        out.append(f"  glacier: {stage['requested']:,} restore requests, {stage['pending']:,} objects in progress "
                   f"after {stage['polls']} polls ({stage['verdict']}{waiting})")
    counts: dict[str, int] = {}
    restored = 0
    for shard in header["shards"]:
        result = run_dir / "results" / f"shard-{shard['index']:06d}.json"
        if result.exists():
            data = json.loads(result.read_text())
            state = data["status"]
            restored += data["restored"] + data["already_present"]
        else:
            state = "pending"
        counts[state] = counts.get(state, 0) + 1
    out.append(f"  shards: {restored:,}/{planned['files']:,} files in place; "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    report = run_dir / "report.json"
    if report.exists():
        data = json.loads(report.read_text())
        out.append(f"  merged: {data['restored']['files']:,} restored, {data['already_present']:,} already present, "
                   f"{data['failed']['files']:,} failed, {data['refused']:,} refused")
    return out


def describe(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None) -> list[str]:
    if (run_dir / "restore.json").is_file():
        return describe_restore(run_dir)
    layout = RunLayout(run_dir)
    lines = shard_states(run_dir, slurm_states)
    files_done = sum(s.files_done for s in lines)
    files = sum(s.files for s in lines)
    bytes_done = sum(s.bytes_done for s in lines)
    total = sum(s.bytes for s in lines)
    counts: dict[str, int] = {}
    for s in lines:
        counts[s.state] = counts.get(s.state, 0) + 1
    journals = [journal_file(layout, s.index) for s in lines if journal_file(layout, s.index).exists()]
    rate = eta = ""
    if journals:
        started = min(os.stat(j).st_ctime for j in journals)
        active = any(s.state in ("running", "pending") for s in lines)
        ended = time.time() if active else max(os.stat(j).st_mtime for j in journals)
        elapsed = max(ended - started, 1e-6)
        speed = bytes_done / elapsed
        rate = f", {speed / 1e6:.1f} MB/s"
        if speed > 0 and bytes_done < total:
            eta = ", ETA " + time.strftime("%H:%M:%S", time.gmtime((total - bytes_done) / speed))
    report = run_dir / "report.json"
    verdict = ""
    if report.exists():
        data = json.loads(report.read_text())
        verdict = (f"; merged: {data['verified']['files']:,} verified, {data['failed']['files']:,} failed")
    out = [f"{run_dir}: {files_done:,}/{files:,} files, {format_size(bytes_done)}/{format_size(total)}{rate}{eta}"
           f"{verdict}",
           "  shards: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    for s in lines:
        if s.state not in ("done",):
            out.append(f"  shard {s.index}: {s.state}, {s.files_done:,}/{s.files:,} files")
    return out


def runs_of_lab(lab_dir: Path) -> list[Path]:
    if not lab_dir.is_dir():
        return []
    return sorted(p for p in lab_dir.iterdir() if (p / "plan.json").is_file() or (p / "restore.json").is_file())
