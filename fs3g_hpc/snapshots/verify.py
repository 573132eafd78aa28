"""`fs3g snapshots verify`: every object, pack and pack index a snapshot names is in the bucket with the recorded size.

    per-object file or symlink   its key (model/keys.object_key) is listed with the size its record holds; the
                                 listing is of the key's directory (Delimiter "/"), one per directory as the
                                 snapshot's records pass, so a directory's files cost one request per 1,000
    packed file                  its pack is listed, once per packs/<run_id>/ after the records, and must hold at
                                 least the bytes its members end at (PackRef.data_end)
    a pack's index               `<pack>.tar.idx`, in the same listing (no request of its own): it must be there, and
                                 at least MIN_INDEX_BYTES long (a snapshot records no index size, so a listing can
                                 only show an index gone or cut below the smallest gzip stream; a longer truncation
                                 is refused by the restore that reads it, naming the index line)

No HEAD request. A chunk that fails its checksum is a SnapshotError naming the chunk (exit 2, from store.py); what is
missing is named, one line per file or pack (exit 1). Memory: one directory's listing, plus one counter per pack the
snapshot names (never one per file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..config import Policy
from ..errors import UsageError
from ..model.keys import KeyClass, object_key
from ..model.packs import PackRef, absolute_key, index_key
from ..model.records import EntryKind, display_path, packed
from ..transfer.lister import list_directory
from .store import chosen_snapshot, iter_snapshot

MAX_NAMED = 1000  # problems named in full; the counts stay complete
MIN_INDEX_BYTES = 20  # the smallest gzip stream of an index: 10-byte header, a deflate block, 8-byte trailer


class Problem(str, Enum):
    MISSING = "missing"
    SIZE = "size differs"


@dataclass
class VerifyReport:
    snapshot_id: str
    checked_objects: int = 0
    checked_packs: int = 0
    checked_indexes: int = 0
    problems: int = 0
    named: list[str] = field(default_factory=list)

    def add(self, problem: Problem, what: str, detail: str = "") -> None:
        self.problems += 1
        if len(self.named) < MAX_NAMED:
            self.named.append(f"{problem.value}: {what}" + (f" ({detail})" if detail else ""))

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def lines(self) -> list[str]:
        head = (f"snapshot {self.snapshot_id}: {self.checked_objects:,} objects, {self.checked_packs:,} packs and "
                f"{self.checked_indexes:,} pack indexes checked, " + ("all present with their recorded sizes" if self.ok else f"{self.problems:,} missing "
                                                                                        "or of another size"))
        more = self.problems - len(self.named)
        return [head] + self.named + ([f"... and {more:,} more"] if more > 0 else [])

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "objects": self.checked_objects, "packs": self.checked_packs,
                "indexes": self.checked_indexes, "problems": self.problems, "named": self.named, "ok": self.ok}


def verify_snapshot(policy: Policy, client: Any, work: Path, snapshot: str | None = None) -> VerifyReport:
    manifest = chosen_snapshot(policy, client, work, snapshot)
    if manifest is None:
        raise UsageError(f"no snapshot {snapshot or ''} of this lab's roots in s3://{policy.s3.bucket}".replace("  ",
                                                                                                                " "),
                         hint="list them with `fs3g snapshots --config LAB.yaml`")
    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    report = VerifyReport(manifest.snapshot_id)
    packs: dict[str, int] = {}  # pack key -> the end of its last member the snapshot names
    directory, listing = "", {}
    threshold = policy.storage.small_file_threshold_bytes
    for entry in iter_snapshot(policy, client, manifest, work):
        if entry.kind not in (EntryKind.FILE, EntryKind.SYMLINK):
            continue
        if packed(entry):
            ref = PackRef.decode(entry.location, f"snapshot {manifest.snapshot_id}: {display_path(entry.path)}")
            packs[ref.pack] = max(packs.get(ref.pack, 0), ref.data_end)
            continue
        klass = (KeyClass.SYMLINK if entry.kind is EntryKind.SYMLINK else
                 KeyClass.SMALL if entry.size_bytes <= threshold else KeyClass.LARGE)
        key = object_key(prefix, klass, entry.path).key
        parent = key.rsplit("/", 1)[0] + "/"
        if parent != directory:
            directory, listing = parent, list_directory(client, bucket, parent)
        report.checked_objects += 1
        found = listing.get(key)
        if found is None:
            report.add(Problem.MISSING, f"s3://{bucket}/{key}", display_path(entry.path))
        elif found.size_bytes != entry.size_bytes:
            report.add(Problem.SIZE, f"s3://{bucket}/{key}", f"{found.size_bytes} bytes, recorded {entry.size_bytes}")
    listing = {}
    for pack in sorted(packs):
        key = absolute_key(prefix, pack)
        parent = key.rsplit("/", 1)[0] + "/"
        if parent != directory:
            directory, listing = parent, list_directory(client, bucket, parent)
        report.checked_packs += 1
        found = listing.get(key)
        if found is None:
            report.add(Problem.MISSING, f"s3://{bucket}/{key}", "a pack")
        elif found.size_bytes < packs[pack]:
            report.add(Problem.SIZE, f"s3://{bucket}/{key}", f"{found.size_bytes} bytes, its members end at "
                                                            f"{packs[pack]}")
        index = listing.get(index_key(key))
        report.checked_indexes += 1
        if index is None:
            report.add(Problem.MISSING, f"s3://{bucket}/{index_key(key)}", "a pack's index")
        elif index.size_bytes < MIN_INDEX_BYTES:
            report.add(Problem.SIZE, f"s3://{bucket}/{index_key(key)}", f"a pack's index of {index.size_bytes} bytes, "
                                                                       f"less than any index ({MIN_INDEX_BYTES})")
    return report
