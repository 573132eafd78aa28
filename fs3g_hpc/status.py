"""`fs3g status`: where a run stands, from its own files (journals, results, report) and, for Slurm runs, `sacct`.

Per shard: pending (nothing written yet), running (journal growing), done, failed, interrupted, or the Slurm state of
its array task when that says more (e.g. CANCELLED, TIMEOUT); files and bytes done (a hard-linked file's bytes once, as
the plan counts them), rate, ETA.

A run's state is a typed value (BackupRunStatus, RestoreRunStatus, CompareRunStatus, RebuildRunStatus,
PruneRunStatus) with `lines()` for people and
`to_json()` for `--json`, read through runs/ (its layout, RunLayout.detect for the kind, the typed files). Reads
only. Memory: one shard's journal at a time, plus one small record per shard.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Union

from .model.records import EntryKind, read_records
from .model.sizes import format_duration, format_size
from .runs.files import CompareHeader, PlanHeader, PruneHeader, RebuildHeader, RestoreHeader
from .runs.journal import read_done_records
from .runs.layout import RunKind, RunLayout, journal_file, read_json
from .runs.report import read_header, read_shard_result


@dataclass(frozen=True)
class ShardStatusLine:
    index: int
    state: str
    files_done: int
    files: int
    bytes_done: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def shard_states(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None
                 ) -> list[ShardStatusLine]:
    layout = RunLayout(run_dir)
    header = read_header(layout)
    assert isinstance(header, PlanHeader)
    from_slurm: dict[int, str] = {}
    if slurm_states is not None and layout.submitted_file.exists():
        from_slurm = slurm_states(read_json(layout.submitted_file)["arrays"])
    lines = []
    for summary in header.shards:
        index = summary.index
        result = read_shard_result(layout, index)
        journal = journal_file(layout, index)
        done = read_done_records(journal)
        if result is not None:
            state = result.status.value
        elif journal.exists():
            state = "running"
        else:
            state = "pending"
        slurm = from_slurm.get(index)
        if slurm and slurm not in ("COMPLETED", "RUNNING", "PENDING") and state != "done":
            state = slurm.lower()
        lines.append(ShardStatusLine(index, state, len(done), summary.files,
                                     _done_bytes(done, layout.shards_dir / summary.file
                                                 if summary.hardlinked_files else None), summary.bytes))
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


def _counts(states: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return dict(sorted(counts.items()))


def _read_optional(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


@dataclass(frozen=True)
class BackupRunStatus:
    """A backup run (or one of its retry rounds): shards, progress, the jobs it was submitted as, the merge's report."""

    run_dir: Path
    shards: list[ShardStatusLine]
    rate_bytes_per_s: float | None  # None before any shard wrote its journal
    eta_s: float | None
    jobs: dict | None  # jobs/submitted.json: arrays, merge (a Slurm run)
    report: dict | None  # report.json, once merged

    kind = "backup"

    @property
    def shard_states(self) -> dict[str, int]:
        return _counts([s.state for s in self.shards])

    def totals(self) -> dict[str, int]:
        return {"files_done": sum(s.files_done for s in self.shards), "files": sum(s.files for s in self.shards),
                "bytes_done": sum(s.bytes_done for s in self.shards), "bytes": sum(s.bytes for s in self.shards)}

    @property
    def phase(self) -> str:
        """planned (nothing ran yet), running, or merged."""
        if self.report is not None:
            return "merged"
        if self.jobs is None and all(s.state == "pending" for s in self.shards):
            return "planned"
        return "running"

    def lines(self) -> list[str]:
        t = self.totals()
        rate = "" if self.rate_bytes_per_s is None else f", {self.rate_bytes_per_s / 1e6:.1f} MB/s"
        eta = "" if self.eta_s is None else ", ETA " + format_duration(self.eta_s)
        verdict = ""
        if self.report is not None:
            verdict = (f"; merged: {self.report['verified']['files']:,} verified, "
                       f"{self.report['failed']['files']:,} failed")
        out = [f"{self.run_dir}: {t['files_done']:,}/{t['files']:,} files, {format_size(t['bytes_done'])}/"
               f"{format_size(t['bytes'])}{rate}{eta}{verdict}",
               "  shards: " + ", ".join(f"{k} {v}" for k, v in self.shard_states.items())]
        for s in self.shards:
            if s.state not in ("done",):
                out.append(f"  shard {s.index}: {s.state}, {s.files_done:,}/{s.files:,} files")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_dir": str(self.run_dir), "phase": self.phase, "totals": self.totals(),
                "shard_states": self.shard_states, "rate_bytes_per_s": self.rate_bytes_per_s, "eta_s": self.eta_s,
                "jobs": self.jobs, "shards": [s.to_json() for s in self.shards], "report": self.report}


@dataclass(frozen=True)
class RestoreShardStatus:
    index: int
    state: str
    files: int
    files_in_place: int  # restored or found already present

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreRunStatus:
    """A restore run: its Glacier stage (requests, polls, objects in progress), its download shards, its report."""

    run_dir: Path
    planned: dict  # files, bytes
    destination: str
    stage: dict | None  # stage/state.json: requested, pending, polls, verdict
    chain: dict  # jobs/chain.json: poll jobs, then the download arrays and the merge
    shards: list[RestoreShardStatus]
    report: dict | None

    kind = "restore"

    @property
    def shard_states(self) -> dict[str, int]:
        return _counts([s.state for s in self.shards])

    @property
    def phase(self) -> str:
        """selected (not staged yet), staging (Glacier restores requested, waiting), downloading, or merged."""
        if self.report is not None:
            return "merged"
        if self.stage is None:
            return "selected"
        if self.stage["verdict"] == "waiting":
            return "staging"
        return "downloading"

    def lines(self) -> list[str]:
        chain, stage, planned = self.chain, self.stage, self.planned
        out = [f"{self.run_dir}: restore of {planned['files']:,} files {format_size(planned['bytes'])} -> "
               f"{self.destination}"]
        if stage is None:
            out.append("  glacier: not staged yet" + (f" (poll job {chain['stages'][-1]})" if chain.get("stages")
                                                      else ""))
        else:
            waiting = (f", next poll job {chain['stages'][-1]}" if stage["verdict"] == "waiting" and chain.get("stages")
                       else "")
            out.append(f"  glacier: {stage['requested']:,} restore requests, {stage['pending']:,} objects in progress "
                       f"after {stage['polls']} polls ({stage['verdict']}{waiting})")
        in_place = sum(s.files_in_place for s in self.shards)
        out.append(f"  shards: {in_place:,}/{planned['files']:,} files in place; "
                   + ", ".join(f"{k} {v}" for k, v in self.shard_states.items()))
        if self.report is not None:
            data = self.report
            out.append(f"  merged: {data['restored']['files']:,} restored, {data['already_present']:,} already "
                       f"present, {data['failed']['files']:,} failed, {data['refused']:,} refused")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_dir": str(self.run_dir), "phase": self.phase, "planned": self.planned,
                "destination": self.destination,
                "files_in_place": sum(s.files_in_place for s in self.shards), "shard_states": self.shard_states,
                "stage": self.stage, "jobs": self.chain, "shards": [s.to_json() for s in self.shards],
                "report": self.report}


@dataclass(frozen=True)
class CompareRunStatus:
    """A compare whose hash checks run as jobs: what the join found, its hash-check shards, its report."""

    run_dir: Path
    discrepancies: int  # found by the join, before any file was read
    to_hash: dict  # files, bytes
    shards: list[ShardStatusLine]
    report: dict | None

    kind = "compare"

    @property
    def shard_states(self) -> dict[str, int]:
        return _counts([s.state for s in self.shards])

    @property
    def phase(self) -> str:
        """hashing (the shards' reads), or merged."""
        return "merged" if self.report is not None else "hashing"

    def lines(self) -> list[str]:
        out = [f"{self.run_dir}: compare, {self.discrepancies:,} discrepancies found without reading files; "
               f"{self.to_hash['files']:,} files {format_size(self.to_hash['bytes'])} to hash",
               "  shards: " + ", ".join(f"{k} {v}" for k, v in self.shard_states.items())]
        if self.report is not None:
            out.append("  merged: " + ("no differences" if self.report.get("ok") else "differences found"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_dir": str(self.run_dir), "phase": self.phase,
                "discrepancies": self.discrepancies, "to_hash": self.to_hash, "shard_states": self.shard_states,
                "shards": [s.to_json() for s in self.shards], "report": self.report}


@dataclass(frozen=True)
class RebuildRunStatus:
    """A catalog rebuild run (snapshots/rebuild.py): its key-range shards (HEADs done), then the merge."""

    run_dir: Path
    listed: int
    shards: list[ShardStatusLine]
    report: dict | None

    kind = "rebuild"

    @property
    def shard_states(self) -> dict[str, int]:
        return _counts([s.state for s in self.shards])

    @property
    def phase(self) -> str:
        return "merged" if self.report is not None and not self.report.get("not_done") else "heads"

    def lines(self) -> list[str]:
        out = [f"{self.run_dir}: catalog rebuild, {self.listed:,} objects listed in {len(self.shards)} shard(s)",
               "  shards: " + ", ".join(f"{k} {v}" for k, v in self.shard_states.items())]
        if self.phase == "merged":
            assert self.report is not None
            out.append(f"  merged: {self.report.get('entries', 0):,} catalog entries, snapshot "
                       f"{self.report.get('snapshot', '')}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_dir": str(self.run_dir), "phase": self.phase, "listed": self.listed,
                "shard_states": self.shard_states, "shards": [s.to_json() for s in self.shards],
                "report": self.report}


@dataclass(frozen=True)
class PruneRunStatus:
    """A prune run: what it is to do (dry run or apply, snapshots forgotten), its key-range shards, its report."""

    run_dir: Path
    apply: bool
    forgotten: int
    shards: list[ShardStatusLine]  # files: keys listed for deletion; files_done: deleted so far
    report: dict | None

    kind = "prune"

    @property
    def shard_states(self) -> dict[str, int]:
        return _counts([s.state for s in self.shards])

    @property
    def phase(self) -> str:
        """deleting (the shards), incomplete (merged with shards left to resume), or merged."""
        if self.report is None:
            return "deleting" if self.apply else "listing"
        return "merged" if self.report.get("complete") else "incomplete"

    def lines(self) -> list[str]:
        done = sum(s.files_done for s in self.shards)
        listed = sum(s.files for s in self.shards)
        out = [f"{self.run_dir}: prune ({'apply' if self.apply else 'dry run'}), {self.forgotten} snapshots forgotten",
               f"  shards: {done:,}/{listed:,} keys deleted; " + ", ".join(f"{k} {v}" for k, v in
                                                                           self.shard_states.items())]
        if self.report is not None:
            out.append(f"  merged: {self.report.get('deleted', 0):,} deleted, {self.report.get('errors', 0):,} "
                       f"refused" + ("" if self.report.get("complete") else
                                     "; incomplete: `fs3g prune --config C --apply` resumes it"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_dir": str(self.run_dir), "phase": self.phase, "apply": self.apply,
                "forgotten": self.forgotten, "shard_states": self.shard_states,
                "shards": [s.to_json() for s in self.shards], "report": self.report}


RunStatus = Union[BackupRunStatus, RestoreRunStatus, CompareRunStatus, RebuildRunStatus, PruneRunStatus]


def prune_status(run_dir: Path) -> PruneRunStatus:
    layout = RunLayout(run_dir, RunKind.PRUNE)
    header = read_header(layout)
    assert isinstance(header, PruneHeader)
    shards = []
    for shard in header.shards:
        result = read_shard_result(layout, shard.index)
        journal = journal_file(layout, shard.index)
        state = result.status.value if result is not None else "running" if journal.exists() else "pending"
        listed = deleted = 0
        if result is not None:
            listed, deleted = result.count("listed_for_deletion"), result.count("deleted")
        shards.append(ShardStatusLine(shard.index, state, deleted, listed, 0, 0))
    return PruneRunStatus(run_dir, header.apply, len(header.forgotten), shards, _read_optional(layout.report_file))


def rebuild_status(run_dir: Path) -> RebuildRunStatus:
    layout = RunLayout(run_dir, RunKind.REBUILD)
    header = read_header(layout)
    assert isinstance(header, RebuildHeader)
    shards = []
    for shard in header.shards:
        result = read_shard_result(layout, shard.index)
        heads = result.count("heads") if result is not None else 0
        shards.append(ShardStatusLine(shard.index, "pending" if result is None else result.status.value, heads,
                                      shard.files, 0, 0))
    return RebuildRunStatus(run_dir, header.listed, shards, _read_optional(layout.report_file))


def restore_status(run_dir: Path) -> RestoreRunStatus:
    layout = RunLayout(run_dir, RunKind.RESTORE)
    header = read_header(layout)
    assert isinstance(header, RestoreHeader)
    shards = []
    for shard in header.shards:
        result = read_shard_result(layout, shard.index)
        if result is not None:
            shards.append(RestoreShardStatus(shard.index, result.status.value, shard.files,
                                             result.count("restored") + result.count("already_present")))
        else:
            shards.append(RestoreShardStatus(shard.index, "pending", shard.files, 0))
    return RestoreRunStatus(run_dir, header.details["planned"], header.destination,
                            _read_optional(run_dir / "stage" / "state.json"),
                            _read_optional(layout.jobs_dir / "chain.json") or {}, shards,
                            _read_optional(layout.report_file))


def compare_status(run_dir: Path) -> CompareRunStatus:
    layout = RunLayout(run_dir, RunKind.COMPARE)
    header = read_header(layout)
    assert isinstance(header, CompareHeader)
    shards = []
    for shard in header.shards:
        result = read_shard_result(layout, shard.index)
        done = result is not None and result.status.value == "done"
        shards.append(ShardStatusLine(shard.index, "pending" if result is None else result.status.value,
                                      shard.files if done else 0, shard.files,
                                      shard.bytes if done else 0, shard.bytes))
    return CompareRunStatus(run_dir, int(header.summary.get("discrepancies", 0)), header.to_hash.to_json(), shards,
                            _read_optional(layout.report_file))


def backup_status(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None
                  ) -> BackupRunStatus:
    layout = RunLayout(run_dir)
    lines = shard_states(run_dir, slurm_states)
    bytes_done = sum(s.bytes_done for s in lines)
    total = sum(s.bytes for s in lines)
    journals = [journal_file(layout, s.index) for s in lines if journal_file(layout, s.index).exists()]
    rate = eta = None
    if journals:
        started = min(os.stat(j).st_ctime for j in journals)
        active = any(s.state in ("running", "pending") for s in lines)
        ended = time.time() if active else max(os.stat(j).st_mtime for j in journals)
        elapsed = max(ended - started, 1e-6)
        rate = bytes_done / elapsed
        if rate > 0 and bytes_done < total:
            eta = (total - bytes_done) / rate
    return BackupRunStatus(run_dir, lines, rate, eta, _read_optional(layout.submitted_file),
                           _read_optional(layout.report_file))


def run_status(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None) -> RunStatus:
    """Where the run in `run_dir` stands, whatever its kind (a directory without a header: a backup, as before)."""
    layout = RunLayout.detect(run_dir)
    if layout is not None and layout.kind is RunKind.RESTORE:
        return restore_status(run_dir)
    if layout is not None and layout.kind is RunKind.COMPARE:
        return compare_status(run_dir)
    if layout is not None and layout.kind is RunKind.REBUILD:
        return rebuild_status(run_dir)
    if layout is not None and layout.kind is RunKind.PRUNE:
        return prune_status(run_dir)
    return backup_status(run_dir, slurm_states)


def describe_restore(run_dir: Path) -> list[str]:
    """A restore run: its Glacier stage (requests, polls, objects in progress), then its download shards."""
    return restore_status(run_dir).lines()


def describe(run_dir: Path, slurm_states: Callable[[list[str]], dict[int, str]] | None = None) -> list[str]:
    return run_status(run_dir, slurm_states).lines()


def retry_rounds(run_dir: Path) -> list[Path]:
    """A backup run and the retry rounds its merges made, in order (each report.json names the next)."""
    rounds = [run_dir]
    while True:
        report = _read_optional(rounds[-1] / "report.json")
        nxt = (report or {}).get("retry", {}).get("run_dir")
        if not nxt or Path(nxt) in rounds or not RunLayout(Path(nxt)).plan_file.is_file():
            return rounds
        rounds.append(Path(nxt))


@dataclass(frozen=True)
class CommandOutcome:
    """What `backup --json` and `restore --json` print: the exit code, the run, the rounds that retried it, and the
    report of the last round (None when the command returned before the merge, e.g. submitted without --wait)."""

    command: str
    exit_code: int
    runs: list[RunStatus]

    def to_json(self) -> dict[str, Any]:
        final = self.runs[-1]
        return {"command": self.command, "exit_code": self.exit_code, "ok": self.exit_code == 0,
                "run_dir": str(self.runs[0].run_dir), "finished": final.report is not None, "report": final.report,
                "status": self.runs[0].to_json(), "retries": [r.to_json() for r in self.runs[1:]]}


def is_run_dir(path: Path) -> bool:
    """A run directory of any kind (it holds plan.json, restore.json, compare.json, rebuild.json or prune.json)."""
    return RunLayout.detect(path) is not None


def runs_of_lab(lab_dir: Path) -> list[Path]:
    if not lab_dir.is_dir():
        return []
    return sorted(p for p in lab_dir.iterdir() if is_run_dir(p))
