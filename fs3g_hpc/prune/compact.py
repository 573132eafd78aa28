"""Pack compaction, the first step of `fs3g prune` when `storage.pack_compact_below` > 0: packs whose live fraction
fell below it are rewritten, their live members copied into new packs and the newest snapshot re-published pointing
at them; the old packs, then unreferenced, go in the same prune's normal delete pass (one deletion path).

Which packs: model/compaction.py (live = referenced by a kept snapshot or the local catalog; never a pack an older
kept snapshot references: "held by snapshot X" until retention forgets X; archive classes only with
--include-archived, a pack not yet restored is restore-requested and left for the next prune). The dry run reports
every pack below the threshold with its verdict, and the bytes copied and freed, the requests and their cost, and
for archived packs the thaw (retrieval) cost; it changes nothing.

Steps of `--apply`, in this order, each journaled (CompactLine) in the prune run directory before the next:

    1. thaw         archived qualifying packs without a restored copy: RestoreObject (policy restore.tier/days)
    2. copy         per pack, the live members read with ranged GETs through restore/packs.py's coalescing reader
                    (plan_spans, SpanReader, read_header, DataHash: headers parsed and checked, each file's SHA-256
                    and tree hash, each symlink's target hash verified), appended through transfer/packer.PackStream
                    (the backup's pack writer) to new packs with new indexes under packs/<new run_id>/
                    (`<run_id>` = `<UTC stamp>-<8 hex>`, shard 000000). A pack with a member that fails a check is
                    not compacted (named; its members already appended are dead bytes of the new pack)
    3. snapshot     the newest snapshot's records with the copied members' locations replaced, published through
                    snapshots/store.write_snapshot (the merge's publisher) with `supersedes: <old newest id>`; then
                    verified: its manifest read back equal, every chunk's checksum and record count, and every new
                    pack listed with its size. A snapshot that does not verify raises UnverifiedSnapshot: prune
                    stops before its delete pass (nothing deleted), naming the snapshot (`fs3g snapshots verify` it)
    4. catalog      the lab's catalog.rec rewritten the same way (atomic replace), its origin note moved to the new
                    snapshot (or dropped when the catalog was not the old newest), packs.jsonl recomputed; under the
                    prune lock (locks/prune.json), held from step 1 to here
Then retention (model/retention.decide_snapshots) forgets the superseded snapshot and the delete pass removes the
old packs and indexes, now unreferenced.

Crash safety (kill -9 anywhere, then a rerun recomputes everything): before step 3's manifest exists the new packs
are unreferenced (and newer than the newest snapshot, so kept until a later one; then deleted as orphans) and the
old ones still referenced; after it, the new snapshot references the new packs and the old packs are unreferenced.
A catalog not yet rewritten still points at the old packs, which the delete pass keeps while it references them
(the local catalog is a reference); the rerun compacts those packs again into another new run. Nothing referenced
is ever lost, and nothing is deleted here.

Run-directory files (0600): compact.jsonl (one CompactLine per step done), compact.json (the plan: CompactionPlan).
Memory: one PackFacts per pack; the sorted spill of the newest snapshot's and the catalog's members (on disk, merged);
one member's bytes (a small file) at a time plus the new pack's part buffers (COPY_BUFFERS × uploader
buffer_size_bytes); the old-to-new location map of at most MAX_MEMBERS_PER_RUN members per prune (packs past it wait
for the next prune).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import Policy, StorageClass
from ..config.pricing import Prices
from ..errors import Fs3gError, UsageError
from ..model.compaction import PackFacts, PackVerdict, judge
from ..model.packs import (END_OF_ARCHIVE, PACK_SUFFIX, PACKS_DIR, IndexEntry, IndexWriter, MemberInfo, MemberType,
                           PackRef, absolute_key, index_key, member_header, pack_key, padded, padding,
                           relative_to_prefix)
from ..model.records import Entry, RecordWriter, read_records
from ..model.retention import decide_snapshots
from ..model.sizes import format_size
from ..model.snapshots import SnapshotManifest, snapshot_time
from ..restore.packs import (DataHash, MemberError, MemberFault, SpanReader, Wanted, plan_spans, read_header,
                             symlink_hash)
from ..runs.catalog import catalog_path, packs_usage_path, read_packs_usage
from .files import GB
from .plan import KeySpill

MAX_MEMBERS_PER_RUN = 500_000  # members relocated by one prune: the old-to-new map's bound
COPY_BUFFERS = 4  # part buffers of the new pack in flight
FILE_MODE = 0o600


class UnverifiedSnapshot(Fs3gError):
    """The snapshot compaction published does not read back as written: prune stops before deleting anything."""


class CompactStep(Enum):
    PLANNED = "planned"
    THAW_REQUESTED = "thaw-requested"
    PACK_SKIPPED = "pack-skipped"  # a member failed its check: that pack is not compacted
    PACK_COPIED = "pack-copied"  # an old pack's live members are all in new packs
    PACK_WRITTEN = "pack-written"  # a new pack and its index are in the bucket
    SNAPSHOT_PUBLISHED = "snapshot-published"
    SNAPSHOT_VERIFIED = "snapshot-verified"
    CATALOG_REWRITTEN = "catalog-rewritten"
    DONE = "done"


@dataclass(frozen=True)
class CompactLine:
    """One line of compact.jsonl: a step done, what it concerned (a pack key, a snapshot id), when."""

    step: CompactStep
    subject: str
    at: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step.value, "subject": self.subject, "at": self.at, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "CompactLine":
        try:
            return cls(CompactStep(data["step"]), str(data["subject"]), str(data["at"]), str(data.get("detail", "")))
        except (KeyError, TypeError, ValueError):
            raise UsageError("not a compaction journal line", path=where) from None


def read_journal(path: Path) -> Iterator[CompactLine]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                data = json.loads(line)
            except ValueError:
                raise UsageError("not JSON", path=f"{path}:{number}") from None
            yield CompactLine.from_json(data, f"{path}:{number}")


class Journal:
    def __init__(self, run_dir: Path, after_step: Callable[[CompactLine], None] | None):
        fd = os.open(run_dir / "compact.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self.file = os.fdopen(fd, "a", encoding="utf-8")
        self.after_step = after_step

    def write(self, step: CompactStep, subject: str, detail: str = "") -> None:
        line = CompactLine(step, subject, datetime.now(timezone.utc).isoformat(timespec="seconds"), detail)
        self.file.write(json.dumps(line.to_json()) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.after_step is not None:
            self.after_step(line)

    def close(self) -> None:
        self.file.close()


# -- the plan ----------------------------------------------------------------------------------------------------------

@dataclass
class PackLine:
    facts: PackFacts
    verdict: PackVerdict

    def to_json(self) -> dict[str, Any]:
        f = self.facts
        return {"pack": f.pack, "verdict": self.verdict.name.lower(), "reason": self.verdict.value,
                "live_fraction": round(f.live_fraction, 4), "live_bytes": f.live_bytes, "pack_bytes": f.pack_bytes,
                "live_members": f.live_members, "storage_class": f.storage_class, "held_by": f.held_by}

    def line(self) -> str:
        f = self.facts
        why = f"held by snapshot {f.held_by}" if self.verdict is PackVerdict.HELD else self.verdict.value
        return (f"  {f.pack}  live {f.live_fraction:.1%} ({format_size(f.live_bytes)} of "
                f"{format_size(f.member_bytes)}, {f.storage_class})  {why}")


@dataclass
class CompactionPlan:
    threshold: float
    include_archived: bool
    newest: str = ""
    currency: str = ""
    packs: list[PackLine] = field(default_factory=list)  # every pack below the threshold (any verdict), held ones
    bytes_copied: int = 0
    bytes_freed: int = 0
    members: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # GET, PUT (class), RESTORE
    request_cost: float = 0.0
    thaw_bytes: int = 0
    thaw_cost: float = 0.0

    def chosen(self, verdict: PackVerdict = PackVerdict.COMPACT) -> list[PackFacts]:
        return [p.facts for p in self.packs if p.verdict is verdict]

    def to_json(self) -> dict[str, Any]:
        return {"format": "fs3g-compaction", "version": 1, "threshold": self.threshold,
                "include_archived": self.include_archived, "newest": self.newest,
                "packs": [p.to_json() for p in self.packs], "compact": len(self.chosen()), "members": self.members,
                "bytes_copied": self.bytes_copied, "bytes_freed": self.bytes_freed, "requests": self.requests,
                "currency": self.currency, "request_cost": round(self.request_cost, 6),
                "thaw_bytes": self.thaw_bytes, "thaw_cost": round(self.thaw_cost, 6)}

    def lines(self) -> list[str]:
        cur = self.currency or "?"
        out = [f"pack compaction (storage.pack_compact_below {self.threshold}): {len(self.chosen())} packs to "
               f"compact, {format_size(self.bytes_copied)} copied ({self.members:,} members), "
               f"{format_size(self.bytes_freed)} freed; requests {self.requests or {}} cost {self.request_cost:.4f} "
               f"{cur}"]
        if self.thaw_bytes or self.chosen(PackVerdict.THAW):
            out.append(f"  archived packs to thaw first: {format_size(self.thaw_bytes)}, retrieval "
                       f"{self.thaw_cost:.4f} {cur} (restore requested by --apply; compacted by the next prune)")
        out += [p.line() for p in self.packs]
        return out


def _prefix_dir(prefix: str, directory: str) -> str:
    return "/".join(p for p in (prefix, directory) if p) + "/"


def _member_key(ref: PackRef) -> str:
    return f"{ref.pack}\t{ref.header_offset:020d}\t{padded(ref.data_end) - ref.header_offset}"


def _complete_manifests(policy: Policy, client: Any, work: Path) -> list[SnapshotManifest]:
    from ..snapshots.store import read_manifest, snapshot_ids

    out = []
    for sid in snapshot_ids(policy, client):
        manifest = read_manifest(policy, client, sid, work)
        if manifest is not None:
            out.append(manifest)
    return out


def _gather(policy: Policy, client: Any, work: Path, include_archived: bool, now: datetime
            ) -> tuple[CompactionPlan, SnapshotManifest | None, list[PackFacts]]:
    from ..snapshots.store import iter_snapshot
    from ..transfer.lister import iter_objects
    from ..transfer.objects import head_object

    bucket, prefix = policy.s3.bucket, policy.s3.prefix
    plan = CompactionPlan(policy.storage.pack_compact_below, include_archived)
    manifests = _complete_manifests(policy, client, work)
    ours = [m for m in manifests if m.lab == policy.lab.name and tuple(m.roots) == tuple(policy.roots)]
    if not ours:
        return plan, None, []
    decisions = decide_snapshots([(m.snapshot_id, snapshot_time(m.snapshot_id), m.supersedes) for m in ours],
                                 policy.retention.rule(), now)
    forgotten = {d.snapshot_id for d in decisions if not d.keep}
    newest = next(m for m in ours if m.snapshot_id == decisions[0].snapshot_id)
    plan.newest = newest.snapshot_id
    # Live members: the newest snapshot's and the local catalog's, unique by (pack, offset), spilled and merged.
    spill = KeySpill(work, "compact-live")
    for entry in iter_snapshot(policy, client, newest, work):
        if entry.location:
            spill.add(_member_key(PackRef.decode(entry.location, "snapshot record")))
    local = catalog_path(policy)
    if local.is_file():
        for entry in read_records(local):
            if entry.location:
                spill.add(_member_key(PackRef.decode(entry.location, str(local))))
    live: dict[str, list[int]] = {}
    for key in spill.sorted_unique():
        pack, _, span = key.split("\t")
        counts = live.setdefault(pack, [0, 0])
        counts[0] += 1
        counts[1] += int(span)
    # Held: packs another kept (or unfinished-lab, other-lab) snapshot references, newest holder first.
    held: dict[str, str] = {}
    for manifest in sorted(manifests, key=lambda m: m.snapshot_id, reverse=True):
        if manifest.snapshot_id == newest.snapshot_id or manifest.snapshot_id in forgotten:
            continue
        for entry in iter_snapshot(policy, client, manifest, work):
            if entry.location:
                ref = PackRef.decode(entry.location, f"snapshot {manifest.snapshot_id}")
                if ref.pack in live:
                    held.setdefault(ref.pack, manifest.snapshot_id)
    newest_s = snapshot_time(newest.snapshot_id).timestamp()
    facts: list[PackFacts] = []
    for key, obj in iter_objects(client, bucket, _prefix_dir(prefix, PACKS_DIR)):
        if not key.endswith(PACK_SUFFIX):
            continue
        rel = relative_to_prefix(prefix, key)
        members, live_bytes = live.get(rel, (0, 0))
        fact = PackFacts(rel, obj.size_bytes, live_bytes, members, obj.storage_class,
                         young=bool(obj.modified_s and obj.modified_s >= newest_s), held_by=held.get(rel, ""))
        verdict = judge(fact, plan.threshold, include_archived)
        if verdict is PackVerdict.THAW:  # is a restored copy readable already? one HEAD per such pack
            info = head_object(client, bucket, key)
            fact = dataclasses.replace(fact, restored=info.restore_ready if info else None)
            verdict = judge(fact, plan.threshold, include_archived)
        if verdict in (PackVerdict.NO_LIVE, PackVerdict.ABOVE, PackVerdict.YOUNG) or (
                verdict is PackVerdict.HELD and not fact.live_fraction < plan.threshold):
            continue
        plan.packs.append(PackLine(fact, verdict))
        facts.append(fact)
    return plan, newest, facts


def _price(prices: Prices | None, what: Callable[[Prices], float]) -> float:
    if prices is None:
        return 0.0
    try:
        return what(prices)
    except UsageError:
        return 0.0


def plan_compaction(policy: Policy, client: Any, work: Path, prices: Prices | None, *, include_archived: bool,
                    now: datetime | None = None) -> tuple[CompactionPlan, SnapshotManifest | None]:
    """What compaction would do now (nothing is changed): the packs, their verdicts, bytes and costs."""
    plan, newest, _ = _gather(policy, client, work, include_archived, now or datetime.now(timezone.utc))
    plan.currency = prices.currency if prices else ""
    chosen, budget = [], MAX_MEMBERS_PER_RUN
    for fact in plan.chosen():
        if fact.live_members > budget:
            continue  # the next prune's: the map of one prune is bounded
        budget -= fact.live_members
        chosen.append(fact)
    keys = {f.pack for f in chosen}
    plan.packs = [p for p in plan.packs if p.verdict is not PackVerdict.COMPACT or p.facts.pack in keys]
    plan.bytes_copied = sum(f.live_bytes for f in chosen)
    plan.bytes_freed = sum(f.pack_bytes for f in chosen) - plan.bytes_copied
    plan.members = sum(f.live_members for f in chosen)
    if chosen:
        klass = policy.storage.pack_storage_class.value
        part = policy.uploader.buffer_size_bytes
        new_packs = -(-plan.bytes_copied // policy.storage.pack_size_bytes)
        parts = -(-plan.bytes_copied // part) + new_packs
        # about one ranged GET per pack (members closer than restore/packs.COALESCE_GAP_BYTES share one); per new
        # pack create + parts + complete, its index; the new snapshot's chunks and manifest
        plan.requests = {"GET": len(chosen), f"PUT {klass}": parts + 2 * new_packs,
                         "PUT STANDARD": new_packs + (len(newest.chunks) + 1 if newest else 0)}
        plan.request_cost = (len(chosen) * _price(prices, lambda p: p.get()) / 1000
                             + (parts + 2 * new_packs) * _price(prices, lambda p: p.put(klass)) / 1000
                             + plan.requests["PUT STANDARD"] * _price(prices, lambda p: p.put("STANDARD")) / 1000)
    tier = policy.restore.tier.value
    for fact in plan.chosen(PackVerdict.THAW):
        plan.thaw_bytes += fact.pack_bytes
        plan.thaw_cost += fact.pack_bytes / GB * _price(prices, lambda p: p.retrieval(fact.storage_class, tier)[0])
        plan.thaw_cost += _price(prices, lambda p: p.retrieval(fact.storage_class, tier)[1]) / 1000
    if plan.thaw_bytes:
        plan.requests["RESTORE"] = len(plan.chosen(PackVerdict.THAW))
    return plan, newest


# -- applying ----------------------------------------------------------------------------------------------------------

class NewPacks:
    """The new packs of one compaction, written one after the other through PackStream (shard 0, n from 0)."""

    def __init__(self, policy: Policy, client: Any, run_id: str, pool: ThreadPoolExecutor, journal: Journal):
        self.policy, self.client, self.run_id, self.pool, self.journal = policy, client, run_id, pool, journal
        self.part_size = policy.uploader.buffer_size_bytes
        self.limit = policy.storage.pack_size_bytes
        self.buffers = threading.Semaphore(COPY_BUFFERS)
        self.n = 0
        self.key = ""
        self.stream: Any = None
        self.index: IndexWriter | None = None
        self.members = 0
        self.written: dict[str, tuple[int, int]] = {}  # relative key -> (members, bytes)

    def _open(self) -> None:
        from ..transfer.packer import PackStream

        prefix = self.policy.s3.prefix
        self.key = pack_key(prefix, self.run_id, 0, self.n)
        self.n += 1
        n = self.n - 1
        self.stream = PackStream(
            self.client, self.policy.s3.bucket, self.key, self.policy.storage.pack_storage_class, self.part_size,
            self.pool, metadata=lambda members: {"fs3g-run-id": self.run_id, "fs3g-shard": "0", "fs3g-pack": str(n),
                                                 "fs3g-compacted": "1",
                                                 **({"fs3g-members": str(members)} if members is not None else {})},
            acquire=self.buffers.acquire, release=self.buffers.release)
        self.index = IndexWriter(relative_to_prefix(prefix, self.key), self.run_id)
        self.members = 0

    def append(self, info: MemberInfo, data: bytes) -> PackRef:
        """One member (its headers as the old pack had them, its verified data); its new place."""
        header = member_header(info)
        total = len(header) + len(data) + len(padding(len(data)))
        if self.stream is not None and self.members and self.stream.offset + total + len(END_OF_ARCHIVE) > self.limit:
            self.close()
        if self.stream is None:
            self._open()
        header_offset = self.stream.offset
        self.stream.write(header)
        data_offset = self.stream.offset
        if data:
            self.stream.write(data)
            self.stream.write(padding(len(data)))
        assert self.index is not None
        self.index.add(IndexEntry.of(info, header_offset, data_offset))
        self.members += 1
        return PackRef(relative_to_prefix(self.policy.s3.prefix, self.key), header_offset, data_offset,
                       info.size_bytes)

    def close(self) -> None:
        from ..transfer.multipart import put_checked

        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        try:
            _, size, _ = stream.finish(self.members)
            assert self.index is not None
            put_checked(self.client, self.policy.s3.bucket, index_key(self.key), self.index.finish(size), {},
                        StorageClass.STANDARD)
        except BaseException:
            stream.abort()
            raise
        self.written[relative_to_prefix(self.policy.s3.prefix, self.key)] = (self.members, size)
        self.journal.write(CompactStep.PACK_WRITTEN, self.key, f"{self.members} members, {size} bytes")

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.abort()
            self.stream = None


@dataclass
class CompactionResult:
    plan: CompactionPlan
    snapshot: str = ""  # the new snapshot's id
    new_packs: list[str] = field(default_factory=list)
    compacted: list[str] = field(default_factory=list)  # old packs now unreferenced (the delete pass's)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (pack, why) not compacted this round
    thaw_requested: list[str] = field(default_factory=list)
    error: str = ""
    resumed_catalog: str = ""  # a killed compaction's catalog step finished: the snapshot the catalog now is

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "snapshot": self.snapshot, "new_packs": self.new_packs,
                "compacted": self.compacted, "skipped": [{"pack": p, "why": w} for p, w in self.skipped],
                "thaw_requested": self.thaw_requested, "error": self.error,
                "resumed_catalog": self.resumed_catalog}

    def lines(self) -> list[str]:
        out = self.plan.lines()
        if self.resumed_catalog:
            out.append(f"catalog: an interrupted compaction's step finished (now snapshot {self.resumed_catalog})")
        if self.snapshot:
            out.append(f"compacted {len(self.compacted)} packs into {len(self.new_packs)} new; snapshot "
                       f"{self.snapshot} supersedes {self.plan.newest}")
        out += [f"  not compacted: {p}: {w}" for p, w in self.skipped]
        out += [f"  restore requested: {p} (compacted by a later prune)" for p in self.thaw_requested]
        if self.error:
            out.append(f"compaction stopped, nothing published: {self.error} (the rerun starts again)")
        return out


def _wanted(policy: Policy, client: Any, newest: SnapshotManifest, work: Path, packs: set[str]
            ) -> dict[str, dict[int, Wanted]]:
    """Per chosen pack, its live members by header offset (a record of each: the newest snapshot's or the
    catalog's)."""
    from ..snapshots.store import iter_snapshot

    out: dict[str, dict[int, Wanted]] = {p: {} for p in packs}

    def add(entry: Entry, where: str) -> None:
        if entry.location:
            ref = PackRef.decode(entry.location, where)
            if ref.pack in out and ref.header_offset not in out[ref.pack]:
                out[ref.pack][ref.header_offset] = Wanted(ref, (entry,))

    for entry in iter_snapshot(policy, client, newest, work):
        add(entry, "snapshot record")
    local = catalog_path(policy)
    if local.is_file():
        for entry in read_records(local):
            add(entry, str(local))
    return out


def _copy_pack(policy: Policy, client: Any, pack: PackFacts, wanted: dict[int, Wanted],
               writer: NewPacks) -> dict[int, PackRef]:
    """Read and verify one pack's live members, append them to the new packs: old header offset -> new place.
    MemberError (or a service error) when any member fails: the pack is then not compacted."""
    from ..transfer.downloader import open_range

    bucket = policy.s3.bucket
    key = absolute_key(policy.s3.prefix, pack.pack)
    moved: dict[int, PackRef] = {}
    etag: str | None = None
    for span in plan_spans(wanted.values(), pack.pack_bytes):
        with open_range(client, bucket, key, span.start, span.end, etag) as stream:
            etag = etag or stream.etag
            reader = SpanReader(stream, span.start, span.end, key)
            for w in span.members:
                info = read_header(reader, w, key)
                where = f"{key} at {w.ref.header_offset}"
                if info.type is MemberType.SYMLINK:
                    entry = w.entries[0]
                    if entry.tree_hash and symlink_hash(info.link_target) != entry.tree_hash.hex():
                        raise MemberError(MemberFault.CORRUPT, f"{where}: the symlink's target is not the recorded "
                                                               "one")
                    data = b""
                else:
                    digest = DataHash(info.size_bytes)
                    pieces = []
                    for piece in reader.pieces(info.size_bytes):
                        digest.update(piece)
                        pieces.append(piece)
                    digest.verify(info, w.entries[0], where)
                    data = b"".join(pieces)
                moved[w.ref.header_offset] = writer.append(info, data)
    return moved


def _relocated(entries: Iterator[Entry], moved: dict[tuple[str, int], PackRef], where: str) -> Iterator[Entry]:
    for entry in entries:
        if entry.location:
            ref = PackRef.decode(entry.location, where)
            new = moved.get((ref.pack, ref.header_offset))
            if new is not None:
                entry = entry._replace(location=new.encode())
        yield entry


def _verify_published(policy: Policy, client: Any, manifest: SnapshotManifest, work: Path,
                      written: dict[str, tuple[int, int]]) -> None:
    from ..snapshots.store import iter_snapshot, read_manifest
    from ..transfer.lister import list_directory

    back = read_manifest(policy, client, manifest.snapshot_id, work)
    if back is None or back.to_json() != manifest.to_json():
        raise UnverifiedSnapshot(f"snapshot {manifest.snapshot_id}: its manifest does not read back as written")
    count = sum(1 for _ in iter_snapshot(policy, client, back, work))  # every chunk's size, SHA-256 and records
    if count != manifest.counts.entries:
        raise UnverifiedSnapshot(f"snapshot {manifest.snapshot_id}: {count} records read back, "
                                 f"{manifest.counts.entries} written")
    listings: dict[str, Any] = {}
    for rel, (_, size) in written.items():
        key = absolute_key(policy.s3.prefix, rel)
        parent = key.rsplit("/", 1)[0] + "/"
        if parent not in listings:
            listings[parent] = list_directory(client, policy.s3.bucket, parent)
        for k, want in ((key, size), (index_key(key), None)):
            found = listings[parent].get(k)
            if found is None or (want is not None and found.size_bytes != want):
                raise UnverifiedSnapshot(f"new pack object {k} is missing or of another size after the upload")


def compact(policy: Policy, client: Any, work: Path, prices: Prices | None, *, apply: bool,
            include_archived: bool = False, run_dir: Path | None = None, now: datetime | None = None,
            after_step: Callable[[CompactLine], None] | None = None) -> CompactionResult | None:
    """prune's first step: None when storage.pack_compact_below is 0 (the default); else the plan (dry run), or with
    `apply` (and `run_dir`, the prune's run directory) the compaction done (see the module's docstring).
    The caller (prune/run.planning) holds the prune lock (locks/prune.json) throughout, and keeps it for the delete
    pass. `after_step` is a test seam, called after each journal line."""
    if not policy.storage.pack_compact_below > 0:
        return None
    resumed = _resume_catalog(policy, client, work) if apply else ""
    plan, newest = plan_compaction(policy, client, work, prices, include_archived=include_archived, now=now)
    result = CompactionResult(plan, resumed_catalog=resumed)
    if not apply or newest is None or not (plan.chosen() or plan.chosen(PackVerdict.THAW)):
        return result
    assert run_dir is not None
    from ..runs.layout import write_json_atomic

    write_json_atomic(run_dir / "compact.json", plan.to_json())
    journal = Journal(run_dir, after_step)
    try:
        journal.write(CompactStep.PLANNED, newest.snapshot_id, f"{len(plan.chosen())} packs")
        _thaw(policy, client, plan, result, journal)
        if plan.chosen():
            try:
                _rewrite(policy, client, work, plan, newest, result, journal)
            except UnverifiedSnapshot:
                raise  # published but not as written: no delete pass may trust it
            except Fs3gError as e:  # before the snapshot's manifest: the new packs are orphans, nothing changed
                result.error = str(e)
        journal.write(CompactStep.DONE, result.snapshot or newest.snapshot_id)
    finally:
        journal.close()
    return result


def _resume_catalog(policy: Policy, client: Any, work: Path) -> str:
    """A compaction killed after publishing its snapshot but before rewriting the catalog left the catalog as the
    superseded snapshot (its origin note says so, its size matches): it becomes the successor, downloaded through
    snapshots/store.download_catalog, packs.jsonl recomputed. The snapshot id, or "" when there was nothing to do."""
    from ..backup.catalog import write_packs_usage
    from ..snapshots.store import download_catalog, matching_snapshots, read_manifest, read_origin

    local = catalog_path(policy)
    origin = read_origin(policy)
    if origin is None or not local.is_file() or local.stat().st_size != origin.catalog_bytes:
        return ""
    newest = next(matching_snapshots(policy, client, work), None)
    if newest is None or newest.snapshot_id == origin.snapshot_id:
        return ""
    step, seen = newest, set()
    while step is not None and step.supersedes and step.supersedes not in seen:
        if step.supersedes == origin.snapshot_id:
            download_catalog(policy, client, newest, local, work)
            usage = packs_usage_path(policy)
            write_packs_usage(local, list(read_packs_usage(usage)), {}, usage)
            return newest.snapshot_id
        seen.add(step.supersedes)
        step = read_manifest(policy, client, step.supersedes, work)
    return ""


def _thaw(policy: Policy, client: Any, plan: CompactionPlan, result: CompactionResult, journal: Journal) -> None:
    from ..transfer.downloader import request_restore

    for fact in plan.chosen(PackVerdict.THAW):
        key = absolute_key(policy.s3.prefix, fact.pack)
        outcome = request_restore(client, policy.s3.bucket, key, policy.restore.days, policy.restore.tier.value)
        result.thaw_requested.append(fact.pack)
        journal.write(CompactStep.THAW_REQUESTED, key, outcome.value)


def _rewrite(policy: Policy, client: Any, work: Path, plan: CompactionPlan, newest: SnapshotManifest,
             result: CompactionResult, journal: Journal) -> None:
    from ..backup.catalog import write_packs_usage
    from ..snapshots.store import iter_snapshot, read_origin, record_origin, write_snapshot

    chosen = plan.chosen()
    wanted = _wanted(policy, client, newest, work, {f.pack for f in chosen})
    now = datetime.now(timezone.utc)
    run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    moved: dict[tuple[str, int], PackRef] = {}
    with ThreadPoolExecutor(max_workers=COPY_BUFFERS, thread_name_prefix="compact") as pool:
        writer = NewPacks(policy, client, run_id, pool, journal)
        try:
            for fact in chosen:
                try:
                    staged = _copy_pack(policy, client, fact, wanted.pop(fact.pack), writer)
                except (MemberError, Fs3gError) as e:
                    result.skipped.append((fact.pack, str(e)))
                    journal.write(CompactStep.PACK_SKIPPED, fact.pack, str(e))
                    continue
                except Exception as e:  # noqa: BLE001 - a GET refused, a pack gone: this pack waits, named
                    result.skipped.append((fact.pack, f"{type(e).__name__}: {e}"))
                    journal.write(CompactStep.PACK_SKIPPED, fact.pack, f"{type(e).__name__}: {e}")
                    continue
                moved.update({(fact.pack, offset): ref for offset, ref in staged.items()})
                result.compacted.append(fact.pack)
                journal.write(CompactStep.PACK_COPIED, fact.pack, f"{len(staged)} members")
            writer.close()
        except BaseException:
            writer.abort()
            raise
    result.new_packs = sorted(writer.written)
    if not moved:
        result.compacted = []
        return
    records = work / "compact-snapshot.rec"
    with RecordWriter(records) as out:
        for entry in _relocated(iter_snapshot(policy, client, newest, work), moved, "snapshot record"):
            out.write(entry)
    manifest = write_snapshot(policy, records, client, work, run_id=run_id, source="compact",
                              supersedes=newest.snapshot_id)
    records.unlink(missing_ok=True)
    result.snapshot = manifest.snapshot_id
    journal.write(CompactStep.SNAPSHOT_PUBLISHED, manifest.snapshot_id, f"supersedes {newest.snapshot_id}")
    try:
        _verify_published(policy, client, manifest, work, writer.written)
    except Fs3gError as e:
        if isinstance(e, UnverifiedSnapshot):
            raise
        raise UnverifiedSnapshot(f"snapshot {manifest.snapshot_id} could not be read back: {e}") from e
    journal.write(CompactStep.SNAPSHOT_VERIFIED, manifest.snapshot_id)
    local = catalog_path(policy)
    if local.is_file():
        origin = read_origin(policy)
        with RecordWriter(local) as out:  # a temporary beside it, renamed over it once complete
            for entry in _relocated(read_records(local), moved, str(local)):
                out.write(entry)
        record_origin(policy, manifest.snapshot_id if origin and origin.snapshot_id == newest.snapshot_id else None,
                      local)
        usage = packs_usage_path(policy)
        write_packs_usage(local, list(read_packs_usage(usage)), writer.written, usage)
        journal.write(CompactStep.CATALOG_REWRITTEN, str(local))
