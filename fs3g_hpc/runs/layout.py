"""The run directory of every kind (backup, restore, compare, catalog rebuild): one layout, owner-only directories, atomic JSON writes,
the shard of an array task.

    <run_root>/<lab>/catalog.rec                  the catalog the last successful backup merge wrote (runs/catalog.py)
    <run_root>/<lab>/<kind>-<UTC time>/           one run directory (0700); kind: the lab's name for backups,
                                                  `restore`, `compare`, `rebuild`, `prune`
        plan.json | restore.json | compare.json   the run's header
          | rebuild.json | prune.json             (runs/files.py); written last, so its presence
                                                  means the run was prepared whole
        shards/shard-000000.rec ...               one record file per array task
        results/shard-N.json                      a shard's result (ShardResult), written when its task ends
        results/shard-N.journal                   what the task finished (a rerun resumes from it)
        results/shard-N.failures.jsonl            one FailureLine per file the task could not do
        results/shard-N.progress.json             the task's counters (runs/progress.py)
        logs/, jobs/                              job logs and scripts, submitted job ids (Slurm runs)
        report.json, summary.txt, failures.jsonl  the merge's report (runs/files.Report), its text, its failures
    backup runs also hold (backup/plan.py):
        deleted.rec                               catalog entries no longer on disk (reported, never deleted from S3)
        directories.rec                           directories new or changed since the catalog: the merge records them
                                                  in the catalog (mode, times, owner); a directory has no object
        skipped.jsonl                             entries the scan could not take, with the reason
        failed.rec                                what the merge could not verify: a retry round is cut from it

Run directories hold a lab's file names: directories are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from ..config import Policy
from ..errors import UsageError

DIR_MODE = 0o700
FILE_MODE = 0o600


class RunKind(str, Enum):
    BACKUP = "backup"
    RESTORE = "restore"
    COMPARE = "compare"
    REBUILD = "rebuild"
    PRUNE = "prune"


HEADER_FILES = {RunKind.BACKUP: "plan.json", RunKind.RESTORE: "restore.json", RunKind.COMPARE: "compare.json",
                RunKind.REBUILD: "rebuild.json", RunKind.PRUNE: "prune.json"}


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
class RunLayout:
    """What every sharded run directory holds (backup, restore, compare): each shard's input, each shard's results
    (written by its task), the merge's report, and the kind's header file."""

    run_dir: Path
    kind: RunKind = RunKind.BACKUP

    @classmethod
    def detect(cls, run_dir: Path) -> "RunLayout | None":
        """The layout of the run in `run_dir`, its kind from the header file it holds; None when it holds none."""
        for kind, name in HEADER_FILES.items():
            if (run_dir / name).is_file():
                return cls(run_dir, kind)
        return None

    @property
    def header_file(self) -> Path:
        return self.run_dir / HEADER_FILES[self.kind]

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
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def jobs_dir(self) -> Path:
        return self.run_dir / "jobs"

    @property
    def submitted_file(self) -> Path:
        """jobs/submitted.json: the arrays and the merge a Slurm submission made."""
        return self.jobs_dir / "submitted.json"

    @property
    def report_file(self) -> Path:
        return self.run_dir / "report.json"

    @property
    def summary_file(self) -> Path:
        return self.run_dir / "summary.txt"

    @property
    def failures_file(self) -> Path:
        """The merge's failures.jsonl: one FailureLine per file not done."""
        return self.run_dir / "failures.jsonl"

    # -- backup runs ---------------------------------------------------------------------------------------------

    @property
    def plan_file(self) -> Path:
        return self.run_dir / HEADER_FILES[RunKind.BACKUP]

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
    def failed_file(self) -> Path:
        """The entries a backup merge could not verify (records): what a retry round is cut from."""
        return self.run_dir / "failed.rec"

    @property
    def work_dir(self) -> Path:
        """Scratch space for the scan's sorted runs; removed when the plan is written."""
        return self.run_dir / ".work"


def journal_file(layout: RunLayout, shard: int) -> Path:
    return layout.result_file(shard, ".journal")


def shard_result_file(layout: RunLayout, shard: int) -> Path:
    return layout.result_file(shard)


def failures_file(layout: RunLayout, shard: int) -> Path:
    return layout.result_file(shard, ".failures.jsonl")


def shard_from_environment(shard: int | None, shard_count: int, environ: Mapping[str, str], where: Path | str,
                           what: str = "the plan") -> int:
    """The shard a task runs: `shard` when given, else its Slurm array index (SLURM_ARRAY_TASK_ID) plus the offset of
    its array (FS3G_SHARD_OFFSET: a run split at MaxArraySize). UsageError when there is no such shard."""
    if shard is None:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.isdigit():
            raise UsageError("no shard given: pass --shard N or run as a Slurm array task (SLURM_ARRAY_TASK_ID)")
        shard = int(task) + int(environ.get("FS3G_SHARD_OFFSET", "0"))
    if not 0 <= shard < shard_count:
        raise UsageError(f"shard {shard} does not exist ({what} has {shard_count} shards: 0-{shard_count - 1})",
                         path=str(where))
    return shard
