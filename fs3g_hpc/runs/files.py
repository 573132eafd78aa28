"""The files of a run directory as typed values: each with `to_json()` and `from_json(data, where)`.

    plan.json | restore.json | compare.json   RunHeader (PlanHeader, RestoreHeader, CompareHeader, PruneHeader
    | prune.json                              for prune.json): kind, format,
                                              tool version, created, lab, policy snapshot, shards (ShardSummary),
                                              shard_count; the kind's own fields in `details`
    results/shard-N.json                      ShardResult: shard, status (done|failed|interrupted), signal, files,
                                              the kind's counts, the failures file and a sample of its lines
    results/shard-N.failures.jsonl,           FailureLine: path, outcome, reason, retryable (and the shard, in a
    failures.jsonl                            merge's file)
    report.json                               Report: planned, verified, failed (files, bytes), shard_states,
                                              failures_file, the timing fields; the kind's own fields in `details`

One vocabulary: a failure line says `reason`. Files written before that read too (a shard's `detail`); a backup
shard's failure line still carries `detail` beside `reason` for the readers of that field. Reading adds nothing a
file lacked: `to_json(from_json(x))` keeps every key of x. A malformed file is a UsageError naming the file and key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ..errors import UsageError
from ..model.snapshots import AsOf
from .layout import RunKind

T = TypeVar("T")


def _field(data: Any, key: str, where: Path | str, kind: type | tuple[type, ...] | None = None,
           default: Any = ...) -> Any:
    """`data[key]`, checked: UsageError naming the file and the key when it is missing or of the wrong type."""
    if not isinstance(data, Mapping):
        raise UsageError("not a JSON object", path=str(where), key=key)
    if key not in data:
        if default is not ...:
            return default
        raise UsageError("missing", path=str(where), key=key)
    value = data[key]
    if kind is not None and not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)  # type: ignore
        raise UsageError(f"not {names}: {value!r}", path=str(where), key=key)
    return value


@dataclass(frozen=True)
class Count:
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data: Any, where: Path | str, key: str = "") -> "Count":
        if not isinstance(data, Mapping):
            raise UsageError("not a JSON object", path=str(where), key=key or None)
        return cls(int(_field(data, "files", where, int)), int(data.get("bytes", 0)))


# -- headers ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardSummary:
    """One shard as its run's header lists it; `details`: the kind's own counts (a backup's per-class files and
    hard-linked files)."""

    index: int
    file: str
    files: int
    bytes: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "file": self.file, "files": self.files, "bytes": self.bytes, **self.details}

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "ShardSummary":
        rest = {k: v for k, v in data.items() if k not in ("index", "file", "files", "bytes")} if isinstance(
            data, Mapping) else {}
        return cls(_field(data, "index", where, int), _field(data, "file", where, str),
                   _field(data, "files", where, int), _field(data, "bytes", where, int, 0), rest)

    @property
    def hardlinked_files(self) -> int:
        return int(self.details.get("hardlinked_files", 0))

    @property
    def large_files(self) -> int | None:
        """A backup shard's planned large files (None in a plan that does not count them)."""
        value = self.details.get("large_files")
        return value if isinstance(value, int) else None


_COMMON = ("format", "tool_version", "created", "lab", "policy", "shard_count", "shards")


@dataclass(frozen=True)
class RunHeader:
    """What every run's header holds. `details`: the kind's own fields, as written (see the subclasses' accessors)."""

    kind: RunKind
    format: int | None
    tool_version: str | None
    created: str | None
    lab: str
    policy: dict[str, Any]
    shards: tuple[ShardSummary, ...]
    details: dict[str, Any] = field(default_factory=dict)

    KIND = RunKind.BACKUP

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def shard(self, index: int) -> ShardSummary:
        return self.shards[index]

    def policy_snapshot(self, where: Path | str) -> Any:
        """The policy the run was made with (config.Policy)."""
        from ..config import policy_from_snapshot

        return policy_from_snapshot(self.policy, f"{where}: policy")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {} if self.format is None else {"format": self.format}
        data.update({"tool_version": self.tool_version, "created": self.created, "lab": self.lab})
        data.update(self.details)
        data.update({"shard_count": self.shard_count, "shards": [s.to_json() for s in self.shards],
                     "policy": self.policy})
        return data

    @classmethod
    def from_json(cls: type[T], data: Any, where: Path | str) -> T:
        shards = _field(data, "shards", where, list)
        count = _field(data, "shard_count", where, int)
        if count != len(shards):
            raise UsageError(f"shard_count {count} but {len(shards)} shards listed", path=str(where), key="shard_count")
        summaries = tuple(ShardSummary.from_json(s, f"{where}: shards[{i}]") for i, s in enumerate(shards))
        for i, s in enumerate(summaries):
            if s.index != i:
                raise UsageError(f"shard {i} has index {s.index}", path=str(where), key=f"shards[{i}].index")
        return cls(cls.KIND, _field(data, "format", where, int, None),  # type: ignore[attr-defined, call-arg]
                   _field(data, "tool_version", where, str, None), _field(data, "created", where, str, None),
                   _field(data, "lab", where, str), _field(data, "policy", where, dict), summaries,
                   {k: v for k, v in data.items() if k not in _COMMON})


@dataclass(frozen=True)
class PlanHeader(RunHeader):
    """plan.json: the backup plan (backup/plan.py writes it; its fields are listed there)."""

    KIND = RunKind.BACKUP

    @property
    def planned(self) -> Count:
        return Count.from_json(self.details.get("planned", {"files": 0}), "plan.json", "planned")

    @property
    def changes(self) -> dict[str, Count]:
        return {k: Count.from_json(v, "plan.json", f"changes.{k}") for k, v in self.details["changes"].items()}

    @property
    def retry_round(self) -> int:
        return int(self.details.get("retry_round", 0))

    @property
    def run_id(self) -> str:
        """The plan's id (backup/plan.new_run_id), naming its packs; plans written before packs have none ("")."""
        return str(self.details.get("run_id", ""))

    @property
    def kept_unreadable(self) -> int:
        return int(self.details.get("kept_unreadable", 0))

    @property
    def directories(self) -> dict:
        return dict(self.details.get("directories", {}))

    @property
    def retry_of(self) -> str | None:
        return self.details.get("retry_of")

    @property
    def skipped(self) -> int:
        return int(self.details.get("skipped", 0))

    @property
    def catalog(self) -> dict | None:
        return self.details.get("catalog")

    @property
    def arrays(self) -> dict:
        return dict(self.details.get("arrays", {}))

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "PlanHeader":
        header = super().from_json(data, where)
        for key in ("changes", "planned"):
            _field(data, key, where, dict)
        return header  # type: ignore[return-value]


@dataclass(frozen=True)
class RestoreHeader(RunHeader):
    """restore.json: what a restore selected (source, requests, base, destination, tier, days, overwrite, wait,
    refused, planned, directories)."""

    KIND = RunKind.RESTORE

    @property
    def destination(self) -> str:
        return str(self.details["destination"])

    @property
    def planned(self) -> Count:
        return Count.from_json(self.details["planned"], "restore.json", "planned")

    @property
    def source(self) -> str:
        return str(self.details.get("source", ""))

    @property
    def refused(self) -> int:
        return int(self.details.get("refused", 0))

    @property
    def requests(self) -> list[str]:
        """The restored paths as requested (absolute, as the backup saw them)."""
        return list(self.details.get("requests", []))

    @property
    def overwrite(self) -> bool:
        return bool(self.details.get("overwrite", False))

    @property
    def tier(self) -> str:
        return str(self.details["tier"])

    @property
    def days(self) -> int:
        return int(self.details["days"])

    @property
    def wait(self) -> bool:
        """Whether the restore waits for Glacier (its stage polls) rather than ending once requested."""
        return bool(self.details.get("wait", True))

    @property
    def as_of(self) -> AsOf | None:
        """The snapshot a `restore --as-of` selected from (None: the newest catalog, as it is now)."""
        data = self.details.get("as_of")
        return None if data is None else AsOf.from_json(data, "restore.json")

    @property
    def directories(self) -> int:
        """How many directories the restore selected (directories.rec)."""
        return int(self.details.get("directories", 0))

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "RestoreHeader":
        header = super().from_json(data, where)
        _field(data, "destination", where, str)
        _field(data, "planned", where, dict)
        return header  # type: ignore[return-value]


@dataclass(frozen=True)
class CompareHeader(RunHeader):
    """compare.json: a compare whose hash checks run as jobs (started, the join's summary, what is to hash)."""

    KIND = RunKind.COMPARE

    @property
    def started(self) -> str | None:
        return self.details.get("started") or self.created

    @property
    def summary(self) -> dict:
        return dict(self.details["summary"])

    @property
    def to_hash(self) -> Count:
        return Count.from_json(self.details["to_hash"], "compare.json", "to_hash")

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "CompareHeader":
        header = super().from_json(data, where)
        _field(data, "summary", where, dict)
        return header  # type: ignore[return-value]


@dataclass(frozen=True)
class RebuildHeader(RunHeader):
    """rebuild.json: a catalog rebuild (snapshots/rebuild.py): the keys listed, cut by key range into shards, and the
    HEAD requests each shard keeps in flight."""

    KIND = RunKind.REBUILD

    @property
    def listed(self) -> int:
        return int(self.details.get("listed", 0))

    @property
    def workers(self) -> int:
        return int(self.details.get("workers", 1))

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "RebuildHeader":
        header = super().from_json(data, where)
        _field(data, "listed", where, int)
        _field(data, "workers", where, int)
        return header  # type: ignore[return-value]


@dataclass(frozen=True)
class PruneHeader(RunHeader):
    """prune.json: a prune run (prune/plan.py writes it; its fields are listed there): bucket, prefix, apply, the
    clock it decided with, the snapshots' decisions, the newest snapshot, the batch size, the price table."""

    KIND = RunKind.PRUNE

    @property
    def bucket(self) -> str:
        return str(self.details["bucket"])

    @property
    def prefix(self) -> str:
        return str(self.details.get("prefix", ""))

    @property
    def apply(self) -> bool:
        return bool(self.details.get("apply", False))

    @property
    def now(self) -> str:
        return str(self.details["now"])

    @property
    def newest(self) -> str:
        return str(self.details.get("newest", ""))

    @property
    def forgotten(self) -> list[str]:
        return [str(s) for s in self.details.get("forgotten", [])]

    @property
    def batch_keys(self) -> int:
        return int(self.details.get("batch_keys", 1000))

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "PruneHeader":
        header = super().from_json(data, where)
        _field(data, "bucket", where, str)
        _field(data, "now", where, str)
        _field(data, "snapshots", where, list)
        return header  # type: ignore[return-value]


HEADER_TYPES: dict[RunKind, type[RunHeader]] = {RunKind.BACKUP: PlanHeader, RunKind.RESTORE: RestoreHeader,
                                                RunKind.COMPARE: CompareHeader, RunKind.REBUILD: RebuildHeader,
                                                RunKind.PRUNE: PruneHeader}


# -- shard results and failures -------------------------------------------------------------------------------------

class ShardStatus(str, Enum):
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class FailureLine:
    """One file a shard (or a merge) could not do. `reason` is read from `detail` in a shard's older lines."""

    path: bytes
    reason: str
    outcome: str | None = None
    retryable: bool = True
    shard: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": os.fsdecode(self.path)}  # surrogateescape: JSON keeps any byte exact
        if self.shard is not None:
            data["shard"] = self.shard
        if self.outcome is not None:
            data["outcome"] = self.outcome
        data.update({"reason": self.reason, "retryable": self.retryable})
        return data

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "FailureLine":
        reason = _field(data, "reason", where, str, None)
        if reason is None:
            reason = _field(data, "detail", where, str)
        return cls(os.fsencode(_field(data, "path", where, str)), reason, _field(data, "outcome", where, str, None),
                   bool(data.get("retryable", True)), _field(data, "shard", where, int, None))

    def text(self) -> str:
        """`outcome: reason` (a merge's reason already names its outcome)."""
        return f"{self.outcome}: {self.reason}" if self.outcome else self.reason


_RESULT_COMMON = ("shard", "status", "signal", "files", "failures_file", "failures_sample")


@dataclass(frozen=True)
class ShardResult:
    """results/shard-N.json: how a shard's task ended. `counts`: the kind's counters (a backup's uploaded,
    already_done, failed, bytes_done, parts...; a restore's restored, already_present...; a compare's hashed...)."""

    shard: int
    status: ShardStatus
    signal: str | None = None
    files: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    failures_file: str | None = None
    failures_sample: tuple[FailureLine, ...] | None = None

    def count(self, name: str) -> int:
        return int(self.counts.get(name, 0))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"shard": self.shard, "status": self.status.value, "signal": self.signal}
        if self.files is not None:
            data["files"] = self.files
        data.update(self.counts)
        if self.failures_file is not None:
            data["failures_file"] = self.failures_file
        if self.failures_sample is not None:
            data["failures_sample"] = [f.to_json() for f in self.failures_sample]
        return data

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "ShardResult":
        status = _field(data, "status", where, str)
        try:
            state = ShardStatus(status)
        except ValueError:
            raise UsageError(f"unknown status {status!r}", path=str(where), key="status") from None
        sample = _field(data, "failures_sample", where, list, None)
        return cls(_field(data, "shard", where, int), state, _field(data, "signal", where, str, None) if
                   data.get("signal") is not None else None,
                   _field(data, "files", where, int, None), {k: v for k, v in data.items() if k not in _RESULT_COMMON},
                   _field(data, "failures_file", where, str, None),
                   None if sample is None else tuple(FailureLine.from_json(s, f"{where}: failures_sample")
                                                     for s in sample))


# -- the report -------------------------------------------------------------------------------------------------------

_TIMING = ("started", "elapsed_s", "shard_phase_s", "throughput", "shard_throughput")


@dataclass(frozen=True)
class Report:
    """report.json, what a merge wrote. The common part is typed; `details` keeps the kind's own fields (a backup's
    unchanged, deleted, catalog, retry...; a restore's restored, refused, stage...; a compare's counts...) in
    order. Absent common fields (a compare's report has no `planned`) are None and stay absent when written."""

    planned: Count | None = None
    verified: Count | None = None
    failed: Count | None = None
    shard_states: dict[str, int] | None = None
    failures_file: str | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed is None or self.failed.files == 0

    @property
    def retry(self) -> dict | None:
        """What a backup merge's retry round was (run_dir, round, merge_job or exit)."""
        return self.details.get("retry")

    def to_json(self) -> dict[str, Any]:
        data = dict(self.details)
        for key in ("planned", "verified", "failed"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value.to_json()
        if self.failures_file is not None:
            data["failures_file"] = self.failures_file
        if self.shard_states is not None:
            data["shard_states"] = dict(self.shard_states)
        data.update(self.timing)
        return data

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "Report":
        if not isinstance(data, Mapping):
            raise UsageError("not a JSON object", path=str(where))

        def count(key: str) -> Count | None:
            return None if key not in data else Count.from_json(data[key], where, key)

        details = {k: v for k, v in data.items() if k not in ("planned", "verified", "failed", "shard_states",
                                                              "failures_file", *_TIMING)}
        return cls(count("planned"), count("verified"), count("failed"),
                   _field(data, "shard_states", where, dict, None), _field(data, "failures_file", where, str, None),
                   {k: data[k] for k in _TIMING if k in data}, details)
