"""The files of a prune run directory (runs/layout.py's layout, kind `prune`) as typed values, and the plan a merge
adds up from them.

    <run_root>/<lab>/prune-<UTC time>/        one `--apply` run (0700, files 0600); a dry run works in a hidden
                                              <run_root>/<lab>/.prune-dry-<UTC time>/ removed once it has reported
        prune.json                            the header (runs/files.PruneHeader), written LAST by the planning pass:
                                              its presence means the shards' inputs are whole
        shards/shard-N.refs                   the referenced keys in shard N's key range, sorted, one per line
        shards/shard-N.newest                 the newest snapshot's own references in that range (the hard check)
        results/shard-N.delete                the keys shard N will delete, in key order: written (atomically) BEFORE
                                              its first delete; a rerun reuses it
        results/shard-N.tally.json            what shard N's join found (ShardTally), written with the delete list
        results/shard-N.journal               one JSON line per DeleteObjects batch done (BatchLine): a rerun skips them
        results/shard-N.json, .failures.jsonl the task's result (runs/task.py) and the keys S3 refused, by name
        snapshots.delete                      the forgotten snapshots' keys, chunks first, manifests last (the merge's)
        delete.txt                            the whole run's list: every shard's list in key order, then
                                              snapshots.delete; written by the merge before it deletes a snapshot key
        merge.journal, merge.failures.jsonl   the merge's batches done, the snapshot keys S3 refused
        report.json, summary.txt              the merge's report (runs/files.Report; the plan in `details`)

Memory: a tally is a few counters per storage class; a journal line names a batch's first and last keys and the keys
S3 refused (at most one batch's).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config.pricing import Prices
from ..errors import UsageError
from ..model.retention import Decision, KeepReason
from ..model.sizes import format_size
from ..runs.layout import FILE_MODE, RunKind, RunLayout

GB = 1024 ** 3
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class PruneLayout(RunLayout):
    """A prune run's directory (its header: prune.json)."""

    kind: RunKind = RunKind.PRUNE

    def refs_file(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:06d}.refs"

    def newest_file(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:06d}.newest"

    def delete_file(self, index: int) -> Path:
        return self.result_file(index, ".delete")

    def tally_file(self, index: int) -> Path:
        return self.result_file(index, ".tally.json")

    @property
    def snapshots_delete_file(self) -> Path:
        return self.run_dir / "snapshots.delete"

    @property
    def delete_list(self) -> Path:
        return self.run_dir / "delete.txt"

    @property
    def merge_journal(self) -> Path:
        return self.run_dir / "merge.journal"


@dataclass
class ShardTally:
    """What one shard's join found: the unreferenced objects (and packs) of its range, by storage class (objects,
    bytes, byte-days still inside the class's minimum duration), those held for that minimum, those newer than the
    newest snapshot (kept), and how many keys its delete list holds."""

    objects: int = 0
    packs: int = 0
    bytes: int = 0
    held_objects: int = 0
    held_bytes: int = 0
    young_objects: int = 0
    doomed: int = 0
    by_class: dict[str, list[float]] = field(default_factory=dict)  # class -> [objects, bytes, early byte-days]

    def to_json(self) -> dict[str, Any]:
        return {"format": "fs3g-prune-tally", "objects": self.objects, "packs": self.packs, "bytes": self.bytes,
                "held_objects": self.held_objects, "held_bytes": self.held_bytes,
                "young_objects": self.young_objects, "doomed": self.doomed,
                "by_class": {k: list(v) for k, v in sorted(self.by_class.items())}}

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> "ShardTally":
        if not isinstance(data, dict) or data.get("format") != "fs3g-prune-tally":
            raise UsageError("not a prune shard tally", path=str(where))
        try:
            by_class = {str(k): [float(x) for x in v][:3] for k, v in dict(data.get("by_class", {})).items()}
            return cls(*(int(data[k]) for k in ("objects", "packs", "bytes", "held_objects", "held_bytes",
                                                "young_objects", "doomed")), by_class)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"malformed prune shard tally ({e})", path=str(where)) from None

    def add(self, other: "ShardTally") -> None:
        for name in ("objects", "packs", "bytes", "held_objects", "held_bytes", "young_objects", "doomed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for klass, values in other.by_class.items():
            mine = self.by_class.setdefault(klass, [0.0, 0.0, 0.0])
            for i, v in enumerate(values):
                mine[i] += v


@dataclass(frozen=True)
class BatchLine:
    """One line of a journal: a DeleteObjects batch done (its number in the list, its size, its first and last keys,
    the keys S3 refused with their codes)."""

    batch: int
    keys: int
    first: str
    last: str
    refused: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "keys": self.keys, "errors": len(self.refused), "first": self.first,
                "last": self.last, "refused": [list(r) for r in self.refused]}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "BatchLine":
        try:
            return cls(int(data["batch"]), int(data["keys"]), str(data["first"]), str(data["last"]),
                       tuple((str(k), str(c)) for k, c in data.get("refused", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{where}: malformed journal line ({e})") from None


def read_batches(path: Path) -> Iterator[BatchLine]:
    """A journal's lines; a last line cut short by a kill is ignored (its batch is redone: deleting twice is fine)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                return
            yield BatchLine.from_json(json.loads(line), f"{path}: line {number}")


def write_lines_atomic(path: Path, lines: Iterable[str]) -> int:
    """`lines` to `path` (0600) through a temporary file, fsynced, then renamed: the list is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
            n += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return n


def read_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line[:-1]


def decisions_to_json(decisions: Iterable[Decision]) -> list[dict[str, Any]]:
    return [{"id": d.snapshot_id, "time": d.time.isoformat(), "keep": d.keep, "reasons": [r.value for r in d.reasons],
             **({"superseded_by": d.superseded_by} if d.superseded_by else {})} for d in decisions]


def decisions_from_json(data: Any, where: str) -> list[Decision]:
    try:
        return [Decision(str(d["id"]), datetime.fromisoformat(d["time"]), tuple(KeepReason(r) for r in d["reasons"]),
                         str(d.get("superseded_by", ""))) for d in data]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{where}: snapshots: malformed ({e})") from None


def storage_price(prices: Prices | None, klass: str) -> float:
    if prices is None:
        return 0.0
    try:
        return prices.storage(klass)
    except UsageError:
        return 0.0


@dataclass
class PrunePlan:
    """What a prune decided and found: the snapshots kept and forgotten, and the shards' tallies added up and priced
    (what the dry run prints, and `--json`)."""

    bucket: str
    prefix: str
    decisions: list[Decision]
    currency: str = ""
    objects: int = 0
    packs: int = 0
    bytes: int = 0
    monthly_cost: float = 0.0
    early_charge: float = 0.0
    held_objects: int = 0
    held_bytes: int = 0
    young_objects: int = 0  # modified after the newest snapshot: a later backup's, kept
    snapshot_objects: int = 0
    shards: int = 0
    by_class: dict[str, list[int]] = field(default_factory=dict)

    @property
    def forgotten(self) -> list[str]:
        return [d.snapshot_id for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[str]:
        return [d.snapshot_id for d in self.decisions if d.keep]

    def add(self, tally: ShardTally, prices: Prices | None) -> None:
        """One shard's tally, priced: monthly storage freed, and (minimum - age) days of storage for what is still
        inside its class's minimum duration."""
        self.objects += tally.objects
        self.packs += tally.packs
        self.bytes += tally.bytes
        self.held_objects += tally.held_objects
        self.held_bytes += tally.held_bytes
        self.young_objects += tally.young_objects
        for klass, (n, size, byte_days) in tally.by_class.items():
            price = storage_price(prices, klass)
            self.monthly_cost += size / GB * price
            self.early_charge += byte_days / GB * price / DAYS_PER_MONTH
            counts = self.by_class.setdefault(klass, [0, 0])
            counts[0] += int(n)
            counts[1] += int(size)

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix,
                "snapshots": [{"id": d.snapshot_id, "keep": d.keep, "reasons": [r.value for r in d.reasons]}
                              for d in self.decisions],
                "forgotten": self.forgotten, "unreferenced": {"objects": self.objects, "packs": self.packs,
                                                              "bytes": self.bytes},
                "currency": self.currency, "monthly_cost_freed": round(self.monthly_cost, 6),
                "early_deletion_charge": round(self.early_charge, 6),
                "held_for_minimum_duration": {"objects": self.held_objects, "bytes": self.held_bytes},
                "newer_than_newest_snapshot": self.young_objects,
                "forgotten_snapshot_objects": self.snapshot_objects, "shards": self.shards,
                "by_class": {k: {"objects": v[0], "bytes": v[1]} for k, v in sorted(self.by_class.items())}}

    def lines(self) -> list[str]:
        out = [f"snapshots: {len(self.kept)} kept, {len(self.forgotten)} forgotten"]
        for d in self.decisions:
            why = ", ".join(r.value for r in d.reasons) if d.keep else \
                f"superseded by {d.superseded_by}" if d.superseded_by else "forget"
            out.append(f"  {d.snapshot_id}  {'keep  ' if d.keep else 'forget'}  {why}")
        out.append(f"unreferenced: {self.objects:,} objects ({self.packs:,} packs), {format_size(self.bytes)}"
                   + (f" (listed in {self.shards} key-range shards)" if self.shards else ""))
        for klass, (n, b) in sorted(self.by_class.items()):
            out.append(f"  {klass}: {n:,} objects, {format_size(b)}")
        cur = self.currency or "?"
        out.append(f"monthly cost freed: {self.monthly_cost:.4f} {cur}; early-deletion charge if deleted now: "
                   f"{self.early_charge:.4f} {cur}")
        if self.held_objects:
            out.append(f"held: {self.held_objects:,} objects ({format_size(self.held_bytes)}) are inside their "
                       "class's minimum duration (kept unless --allow-early-delete)")
        if self.young_objects:
            out.append(f"kept: {self.young_objects:,} objects newer than the newest snapshot (a backup not merged)")
        out.append(f"forgotten snapshots' objects: {self.snapshot_objects:,}")
        return out
