"""`fs3g estimate`: what a backup and its storage cost, from a plan, before the first byte moves. Pure: no S3, no Slurm
(estimate_for, the command's whole route, may scan the roots into a scratch plan first).

Inputs: the entries of a plan (every planned file, streamed from its shards) and the policy (classes, part size,
lifecycle), and a dated price table (`configs/pricing.yaml`, per region). Outputs, in the table's currency:

- upload requests: with `storage.small_files: objects`, one PUT per small file and symlink; with `packs`, the small
  files and symlinks of each shard go into packs of `storage.pack_size_bytes` (pack count = ceil(tar bytes of the
  shard's members / pack size), at least one per shard that has any; a member's tar bytes are its data padded to 512
  plus an estimated ~1.5 KiB of pax + ustar headers): each pack is one PUT or a multipart upload (create + one per
  part + complete) in `storage.pack_storage_class`, plus one index PUT in STANDARD. A large file is one PUT when it
  fits one part, else a multipart upload (create + one per part + complete) and the PUT of its tree-hash tag; the
  pathmap PUT of a hashed long path; PUTs are priced by the class they write into;
- verification: one LIST per key directory and shard (and per 1,000 keys), one HEAD per hashed long key;
- lifecycle transitions: one per large object moved by the rule (none when large files are uploaded straight into
  the archive class);
- monthly storage by class: per-object small files and symlinks in STANDARD; packs in their class (each pack billed
  at least the class's minimum object size, and the per-object overhead of GLACIER and DEEP_ARCHIVE once per pack,
  not per file) with their indexes in STANDARD (an estimated 80 bytes of compressed index per member); large files
  in the archive class, each billed at least the class's minimum object size, plus the per-object overhead of
  GLACIER and DEEP_ARCHIVE (8 KB at the STANDARD rate and 32 KB at the archive rate);
- restore, per retrieval tier: the retrieval per GB and per 1,000 requests for archived objects, the temporary copy
  at the STANDARD rate for the restore's days, the GETs (ranged for large objects; at least one per pack touched),
  the transfer out, and the time. Packs are thawed whole: the bytes to thaw for the selected files are those of every
  pack holding one of them (`thawed_bytes`; thaw amplification = thawed bytes / selected bytes). For a plan the
  packs are laid out as the packer fills them (a shard's members in plan order); for the catalog, from each packed
  record's location;
- early-deletion exposure: what deleting every archived object right after it arrives would still cost (the class's
  minimum storage duration).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import ARCHIVED_CLASSES, Policy, Prices, SmallFiles, StorageClass, load_prices
from .model.entries import KEY_CLASS, EntryClass, classify
from .model.keys import KeyClass, object_key
from .model.packs import PackRef
from .model.records import Entry, EntryKind, packed, read_records
from .model.s3limits import S3_MAX_PART_BYTES, ObjectTooLarge, part_size_for
from .model.sizes import format_size

GB = 1024**3
DAYS_PER_MONTH = 30


# -- tallies ----------------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a set of entries means in objects and requests under one policy."""

    small_files: int = 0
    small_bytes: int = 0
    symlinks: int = 0
    symlink_bytes: int = 0
    large_files: int = 0
    large_bytes: int = 0
    single_put_large: int = 0
    multipart_uploads: int = 0
    parts: int = 0
    long_keys: int = 0
    key_directories: int = 0
    large_billed_bytes: int = 0  # large bytes after the class's minimum object size
    # packs (storage.small_files: packs, or catalog records with a location)
    packed_members: int = 0  # small files and symlinks inside packs (counted in small_files / symlinks too)
    packed_bytes: int = 0  # their data bytes
    packs: int = 0
    pack_bytes: int = 0  # tar bytes of the packs (headers, padding, end of archive)
    pack_single_puts: int = 0
    pack_multipart_uploads: int = 0
    pack_parts: int = 0
    index_bytes: int = 0  # estimated compressed index bytes (STANDARD)
    pack_billed_bytes: int = 0  # pack bytes after the pack class's minimum object size, per pack
    # restore of the selected files (all of them, or those under the estimate's PATHs) from packs
    restore_selected_bytes: int = 0  # data bytes of the selected packed members
    restore_packs: int = 0  # packs holding at least one of them
    thawed_bytes: int = 0  # tar bytes of those packs: what an archive class must restore

    @property
    def objects(self) -> int:
        """Objects in the bucket: per-object files and symlinks, large files, and each pack with its index."""
        return self.small_files + self.symlinks - self.packed_members + self.large_files + 2 * self.packs

    @property
    def thaw_amplification(self) -> float | None:
        """Bytes thawed / bytes selected for a restore from packs (None without packed files)."""
        return self.thawed_bytes / self.restore_selected_bytes if self.restore_selected_bytes else None


PAX_HEADER_BYTES = 1536  # estimated pax 'x' header + its records + ustar header of one member (a short path)
INDEX_BYTES_PER_MEMBER = 80  # estimated compressed index line per member
TAR_BLOCK = 512
END_OF_ARCHIVE_BYTES = 1024


def packs_layout(policy: Policy) -> bool:
    """Whether new small files and symlinks go into packs (storage.small_files)."""
    return policy.storage.small_files is SmallFiles.PACKS


def member_tar_bytes(entry: Entry) -> int:
    """A member's estimated bytes in a pack: headers plus its data padded to a whole tar block (a symlink has no
    data; its target rides in the pax header)."""
    data = 0 if entry.kind is EntryKind.SYMLINK else -(-entry.size_bytes // TAR_BLOCK) * TAR_BLOCK
    extra = max(0, len(entry.key) - 200)  # a long path lengthens the pax records
    return PAX_HEADER_BYTES + -(-extra // TAR_BLOCK) * TAR_BLOCK + data


class PackLayout:
    """Packs as the packer fills them, one shard after another: a pack is closed when the next member would pass
    `pack_size` (a member never larger than it starts its own). With `costs`, counts what the packs cost (pack
    count, tar bytes, parts); with `thaw`, which packs hold a selected member and their bytes. Memory: one pack's
    counters."""

    def __init__(self, pack_size: int, buffer_size: int, minimum_bytes: int, *, costs: bool, thaw: bool):
        self.pack_size = pack_size
        self.buffer_size = buffer_size
        self.minimum_bytes = minimum_bytes
        self.costs, self.thaw = costs, thaw
        self.fill = 0  # tar bytes in the open pack (0: none open)
        self.touched = False

    def add(self, t: Tally, member_bytes: int, selected: bool) -> None:
        if self.fill and self.fill + member_bytes + END_OF_ARCHIVE_BYTES > self.pack_size:
            self.close(t)
        self.fill += member_bytes
        self.touched = self.touched or selected

    def close(self, t: Tally) -> None:
        """The open pack (if any) ends: the end of the shard, or the next member would pass the pack size."""
        if not self.fill:
            return
        size = self.fill + END_OF_ARCHIVE_BYTES
        if self.costs:
            t.packs += 1
            t.pack_bytes += size
            t.pack_billed_bytes += max(size, self.minimum_bytes)
            _count_object_puts(t, size, self.buffer_size, pack=True)
        if self.thaw and self.touched:
            t.restore_packs += 1
            t.thawed_bytes += size
        self.fill, self.touched = 0, False


def _count_object_puts(t: Tally, size: int, buffer: int, *, pack: bool) -> None:
    try:
        part = part_size_for(size, buffer)
    except ObjectTooLarge:  # the upload will refuse it; count it in the largest parts S3 takes
        part = S3_MAX_PART_BYTES
    if size <= part:
        if pack:
            t.pack_single_puts += 1
        else:
            t.single_put_large += 1
    elif pack:
        t.pack_multipart_uploads += 1
        t.pack_parts += math.ceil(size / part)
    else:
        t.multipart_uploads += 1
        t.parts += math.ceil(size / part)


def tally(entries: Iterable[Entry], policy: Policy, prices: Prices | None) -> Tally:
    """`tally_shards` of one shard."""
    return tally_shards([entries], policy, prices)


def tally_shards(shards: Iterable[Iterable[Entry]], policy: Policy, prices: Prices | None, *,
                 selected: Callable[[Entry], bool] | None = None, from_catalog: bool = False,
                 pack_sizes: dict[str, int] | None = None) -> Tally:
    """Stream the entries of each shard once (files and symlinks; anything else is ignored). Without prices (a
    region the table lacks) the counts are the same and billed bytes have no class minimum.

    `selected`: the entries counted (default all); the others only take their place in the packs, so that the
    restore figures say which packs hold a selected file (thawed_bytes). `from_catalog`: the entries are catalog
    records, packed exactly when they carry a location (a record without one keeps its own object, whatever the
    policy says now); else the policy's storage.small_files decides. `pack_sizes` (pack key -> bytes, from the
    lab's packs.jsonl): a catalog pack's size as written; without it, as far as its last live member."""
    t = Tally()
    threshold = policy.storage.small_file_threshold_bytes
    buffer = policy.uploader.buffer_size_bytes
    archive = policy.storage.archive_storage_class.value
    minimum = prices.minimum_object_bytes(archive) if prices is not None else 0
    pack_class = policy.storage.pack_storage_class.value
    pack_minimum = prices.minimum_object_bytes(pack_class) if prices is not None else 0
    into_packs = packs_layout(policy) and not from_catalog
    # The packs the counted entries make (their cost), and, when only some are counted, the packs of every entry (a
    # selected file shares its pack with the others: the restore thaws those).
    layouts = [PackLayout(policy.storage.pack_size_bytes, buffer, pack_minimum, costs=True, thaw=selected is None)]
    if selected is not None:
        layouts.append(PackLayout(policy.storage.pack_size_bytes, buffer, pack_minimum, costs=False, thaw=True))
    catalog_packs: dict[str, list[int]] = {}  # pack key -> [end of its last member, touched]: one per pack
    for shard in shards:
        last_dir: tuple[KeyClass, bytes] | None = None
        for entry in shard:
            entry_class = classify(entry, threshold)
            if entry_class is None:
                continue
            wanted = selected is None or selected(entry)
            in_pack = (packed(entry) if from_catalog else into_packs and entry_class is not EntryClass.LARGE)
            if in_pack:
                if from_catalog:
                    ref = PackRef.decode(entry.location, "catalog record")
                    counter = catalog_packs.setdefault(ref.pack, [0, 0])
                    counter[0] = max(counter[0], ref.data_end)
                    counter[1] = counter[1] or wanted
                else:
                    size = member_tar_bytes(entry)
                    if wanted:
                        layouts[0].add(t, size, True)
                    if len(layouts) > 1:
                        layouts[1].add(t, size, wanted)
            if not wanted:
                continue
            if in_pack:
                t.packed_members += 1
                t.packed_bytes += entry.size_bytes
                t.restore_selected_bytes += entry.size_bytes
                t.index_bytes += INDEX_BYTES_PER_MEMBER
            if entry_class is EntryClass.SYMLINK:
                t.symlinks += 1
                t.symlink_bytes += entry.size_bytes
            elif entry_class is EntryClass.SMALL:
                t.small_files += 1
                t.small_bytes += entry.size_bytes
            else:
                t.large_files += 1
                t.large_bytes += entry.size_bytes
                t.large_billed_bytes += max(entry.size_bytes, minimum)
                _count_object_puts(t, entry.size_bytes, buffer, pack=False)
            if in_pack:
                continue
            klass = KEY_CLASS[entry_class]
            if object_key(policy.s3.prefix, klass, entry.path).long_path_sha256 is not None:
                t.long_keys += 1
            directory = (klass, entry.directory)
            if directory != last_dir:  # shards keep a directory's entries together
                t.key_directories += 1
                last_dir = directory
        for layout in layouts:
            layout.close(t)  # a shard's last pack ends with the shard
    for pack, (end, touched) in catalog_packs.items():
        if not touched:  # no counted member: outside what this tally is about
            continue
        # the catalog knows the end of the last live member: a lower bound when packs.jsonl does not say
        size = (pack_sizes or {}).get(pack) or end + END_OF_ARCHIVE_BYTES
        t.packs += 1
        t.pack_bytes += size
        t.pack_billed_bytes += max(size, pack_minimum)
        _count_object_puts(t, size, buffer, pack=True)
        if touched:
            t.restore_packs += 1
            t.thawed_bytes += size
    return t


# -- costs ------------------------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    currency: str
    prices_date: str
    region: str
    archive_class: str
    requests: dict[str, int] = field(default_factory=dict)
    upload_cost: dict[str, float] = field(default_factory=dict)
    storage_gb: dict[str, float] = field(default_factory=dict)
    storage_cost_month: dict[str, float] = field(default_factory=dict)
    restore: list[dict[str, Any]] = field(default_factory=list)
    early_deletion_exposure: float = 0.0
    notes: list[str] = field(default_factory=list)
    packs: dict[str, Any] = field(default_factory=dict)  # the packs stored, and per pack vs per object
    restore_packs: dict[str, Any] = field(default_factory=dict)  # restore of the selected packed files

    @property
    def upload_total(self) -> float:
        return sum(self.upload_cost.values())

    @property
    def storage_total_month(self) -> float:
        return sum(self.storage_cost_month.values())

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "prices_date": self.prices_date, "region": self.region,
                "archive_class": self.archive_class, "requests": self.requests, "upload_cost": self.upload_cost,
                "upload_total": self.upload_total, "storage_gb": self.storage_gb,
                "storage_cost_month": self.storage_cost_month, "storage_total_month": self.storage_total_month,
                "restore": self.restore, "early_deletion_exposure": self.early_deletion_exposure,
                "packs": self.packs, "restore_packs": self.restore_packs, "notes": self.notes}


def _puts(upload: Tally) -> tuple[int, int, int]:
    """(PUTs into STANDARD, PUTs of large-file data, PUTs of pack data): the tree-hash tag of a multipart object and
    the index of a pack are STANDARD PUTs."""
    per_object = upload.small_files + upload.symlinks - upload.packed_members
    puts_standard = per_object + upload.long_keys + upload.multipart_uploads + upload.packs
    puts_large = upload.single_put_large + upload.parts + 2 * upload.multipart_uploads
    puts_packs = upload.pack_single_puts + upload.pack_parts + 2 * upload.pack_multipart_uploads
    return puts_standard, puts_large, puts_packs


def _lists(upload: Tally) -> int:
    """The merge's verification: a LIST per key directory and per 1,000 objects (packs: one listing of each run's
    packs/ directory, per 1,000 keys, counted in the objects)."""
    return upload.key_directories + math.ceil(upload.objects / 1000)


def upload_requests(upload: Tally, policy: Policy) -> dict[str, int]:
    """The requests a backup of `upload` makes (uploads and the merge's verification), priced or not."""
    puts_standard, puts_large, puts_packs = _puts(upload)
    return {"PUT": puts_standard + puts_large + puts_packs, "LIST": _lists(upload),
            "HEAD": upload.long_keys, "transitions": 0 if policy.storage.upload_large_to_archive else upload.large_files}


def restore_cost(prices: Prices, archive_class: str, tier: str, days: int, *, archived_objects: int,
                 archived_bytes: int, gets: int, out_bytes: int) -> dict[str, Any]:
    """One retrieval tier's cost of a restore: `archived_*` from `archive_class` (retrieval and the temporary copy for
    `days`), `gets` GET requests and `out_bytes` transferred out. Shared by `fs3g estimate` and `restore --dry-run`."""
    archived = archive_class in {c.value for c in ARCHIVED_CLASSES}
    per_gb, per_1000, hours = prices.retrieval(archive_class, tier) if archived else (0.0, 0.0, 0.0)
    retrieval = archived_bytes / GB * per_gb + archived_objects / 1000 * per_1000
    copy = archived_bytes / GB * prices.storage("STANDARD") * days / DAYS_PER_MONTH if archived else 0.0
    get_cost = gets / 1000 * prices.get()
    transfer = out_bytes / GB * prices.transfer_out()
    return {"tier": tier, "hours": hours, "retrieval": retrieval, "temporary_copy": copy, "requests": get_cost,
            "transfer_out": transfer, "total": retrieval + copy + get_cost + transfer}


def restore_gets(stored: Tally) -> int:
    """GETs of restoring everything in `stored`: one per small object and symlink, one per part of a large one, and
    at least one (ranged or whole) per pack holding a selected file."""
    return (stored.small_files + stored.symlinks - stored.packed_members + stored.single_put_large + stored.parts
            + stored.restore_packs)


def restore_packs_figures(stored: Tally, pack_class: str) -> dict[str, Any]:
    """What a restore of the selected packed files means in packs: the packs touched, the bytes selected and the
    bytes thawed (whole packs, only when the packs are in an archive class) and the amplification."""
    archived = pack_class in {c.value for c in ARCHIVED_CLASSES}
    return {"pack_storage_class": pack_class, "packs": stored.restore_packs,
            "selected_bytes": stored.restore_selected_bytes, "pack_bytes": stored.thawed_bytes,
            "thawed_bytes": stored.thawed_bytes if archived else 0,
            "thaw_amplification": stored.thaw_amplification if archived else None,
            "fetch": "whole packs restored, then ranged GETs" if archived else "ranged GETs of the members"}


def estimate(upload: Tally, stored: Tally, policy: Policy, prices: Prices) -> Estimate:
    """`upload`: what this run sends; `stored`: what the bucket holds afterwards (the same for a full plan)."""
    archive = policy.storage.archive_storage_class.value
    pack_class = policy.storage.pack_storage_class.value
    archive_classes = {c.value for c in ARCHIVED_CLASSES}
    direct = policy.storage.upload_large_to_archive
    large_put_class = archive if direct else StorageClass.STANDARD.value
    e = Estimate(prices.currency, prices.date, prices.region, archive)

    puts_standard, puts_large, puts_packs = _puts(upload)
    lists = _lists(upload)
    e.requests = upload_requests(upload, policy)
    e.upload_cost = {
        "PUT STANDARD": puts_standard / 1000 * prices.put(StorageClass.STANDARD.value),
        f"PUT {large_put_class} (large files)": puts_large / 1000 * prices.put(large_put_class),
    }
    if upload.packs:
        e.upload_cost[f"PUT {pack_class} (packs)"] = puts_packs / 1000 * prices.put(pack_class)
    e.upload_cost.update({
        "LIST": lists / 1000 * prices.list(),
        "HEAD": upload.long_keys / 1000 * prices.get(),
        f"transitions to {archive}": 0.0 if direct else upload.large_files / 1000 * prices.transition(archive),
    })

    storage: dict[str, float] = {StorageClass.STANDARD.value: 0.0, archive: 0.0}

    def bill(klass: str, n_bytes: float) -> None:
        storage[klass] = storage.get(klass, 0.0) + n_bytes

    over_std, over_arch = prices.overhead(archive) if archive in archive_classes else (0, 0)
    bill(StorageClass.STANDARD.value, stored.small_bytes + stored.symlink_bytes - stored.packed_bytes
         + stored.large_files * over_std + stored.index_bytes)
    bill(archive, stored.large_billed_bytes + stored.large_files * over_arch)
    pack_std, pack_arch = prices.overhead(pack_class) if pack_class in archive_classes else (0, 0)
    if stored.packs:
        bill(pack_class, stored.pack_billed_bytes + stored.packs * pack_arch)
        bill(StorageClass.STANDARD.value, stored.packs * pack_std)
    e.storage_gb = {k: v / GB for k, v in storage.items()}
    e.storage_cost_month = {k: v / GB * prices.storage(k) for k, v in storage.items()}
    if stored.large_files and over_std:
        e.notes.append(f"{stored.large_files:,} archived objects carry {over_std + over_arch:,} bytes of overhead "
                       "each (8 KB at the STANDARD rate, 32 KB at the archive rate)")
    if stored.packs:
        per_object = stored.packed_members
        target = pack_class if pack_class in archive_classes else archive
        e.packs = {"packs": stored.packs, "members": stored.packed_members, "pack_bytes": stored.pack_bytes,
                   "index_bytes": stored.index_bytes, "pack_storage_class": pack_class,
                   "pack_size_bytes": policy.storage.pack_size_bytes,
                   "put_requests": puts_packs + upload.packs,
                   "overhead_bytes": stored.packs * (pack_std + pack_arch),
                   "overhead_bytes_if_per_object": per_object * (pack_std + pack_arch),
                   # moving them to an archive class by a lifecycle rule: one transition per pack, not per file
                   "transition_class": target,
                   "transitions_if_moved": stored.packs, "transitions_if_per_object": per_object,
                   "transition_cost_if_moved": (stored.packs / 1000 * prices.transition(target)
                                                if target in archive_classes else 0.0),
                   "transition_cost_if_per_object": (per_object / 1000 * prices.transition(target)
                                                     if target in archive_classes else 0.0)}
        if pack_std:
            e.notes.append(f"{stored.packs:,} packs in {pack_class} carry {pack_std + pack_arch:,} bytes of overhead "
                           f"each: {format_size(stored.packs * (pack_std + pack_arch))}, against "
                           f"{format_size(per_object * (pack_std + pack_arch))} for {per_object:,} objects")
    if not direct and policy.storage.lifecycle_days:
        e.notes.append(f"large files stay in STANDARD for {policy.storage.lifecycle_days} day(s) before the "
                       "lifecycle rule moves them (not in the monthly figure)")

    archived = archive in archive_classes
    packs_archived = pack_class in archive_classes and stored.restore_packs > 0
    if stored.restore_selected_bytes:
        e.restore_packs = restore_packs_figures(stored, pack_class)
    out_bytes = stored.small_bytes + stored.symlink_bytes + stored.large_bytes
    # The tiers a restore of everything can use: the archive class's, and those the packs' class offers too.
    tiers = prices.tiers(archive) if archived else ["(none)"]
    if packs_archived:
        tiers = [t for t in prices.tiers(pack_class) if not archived or t in tiers]
    for tier in tiers:
        cost = restore_cost(prices, archive, tier, policy.restore.days,
                            archived_objects=stored.large_files if archived else 0,
                            archived_bytes=stored.large_bytes if archived else 0, gets=restore_gets(stored),
                            out_bytes=out_bytes)
        if packs_archived:  # whole packs thawed
            thaw = restore_cost(prices, pack_class, tier, policy.restore.days, archived_objects=stored.restore_packs,
                                archived_bytes=stored.thawed_bytes, gets=0, out_bytes=0)
            cost = {**cost, "hours": max(cost["hours"], thaw["hours"]),
                    **{k: cost[k] + thaw[k] for k in ("retrieval", "temporary_copy", "total")}}
        e.restore.append(cost)
    minimum_days = prices.minimum_days(archive)
    archive_bytes = storage[archive]
    e.early_deletion_exposure = archive_bytes / GB * prices.storage(archive) * minimum_days / DAYS_PER_MONTH
    if stored.packs and pack_class != archive:
        e.early_deletion_exposure += (storage[pack_class] / GB * prices.storage(pack_class)
                                      * prices.minimum_days(pack_class) / DAYS_PER_MONTH)
    return e


def _money(x: float) -> str:
    return f"{x:,.2f}" if abs(x) >= 100 else f"{x:.4f}"


def render(e: Estimate, upload: Tally, stored: Tally, scope: str) -> list[str]:
    c = e.currency
    lines = [f"estimate: {scope}  (prices of {e.prices_date}, {e.region}, {c})",
             f"  objects   {stored.small_files:,} small, {stored.large_files:,} large, {stored.symlinks:,} symlinks"]
    if e.packs:
        p = e.packs
        lines.append(f"  packs     {p['members']:,} small files and symlinks in {p['packs']:,} packs of up to "
                     f"{format_size(p['pack_size_bytes'])} ({format_size(p['pack_bytes'])} in "
                     f"{p['pack_storage_class']}, indexes ~{format_size(p['index_bytes'])} in STANDARD): "
                     f"{p['put_requests']:,} PUT with the index PUTs")
        if p["transition_cost_if_moved"] or p["transition_cost_if_per_object"]:
            lines.append(f"            transitions to {p['transition_class']}: {p['transitions_if_moved']:,} (one per "
                         f"pack, {_money(p['transition_cost_if_moved'])} {c}) instead of "
                         f"{p['transitions_if_per_object']:,} per object "
                         f"({_money(p['transition_cost_if_per_object'])} {c})")
    lines.append(f"  upload    {e.requests['PUT']:,} PUT, {e.requests['LIST']:,} LIST, {e.requests['HEAD']:,} HEAD, "
                 f"{e.requests['transitions']:,} transitions: {_money(e.upload_total)} {c}")
    for name, cost in e.upload_cost.items():
        lines.append(f"    {name:38} {_money(cost):>12}")
    lines.append(f"  storage   {_money(e.storage_total_month)} {c} a month")
    for klass, cost in e.storage_cost_month.items():
        lines.append(f"    {klass:38} {e.storage_gb[klass]:12,.1f} GB {_money(cost):>12}")
    if e.restore_packs:
        r = e.restore_packs
        if r["thawed_bytes"]:
            lines.append(f"  thaw      {r['packs']:,} packs hold the selected files: {format_size(r['thawed_bytes'])} "
                         f"restored from {r['pack_storage_class']} for {format_size(r['selected_bytes'])} selected "
                         f"(thaw amplification {r['thaw_amplification']:.2f}x)")
        else:
            lines.append(f"  packs     the selected files are in {r['packs']:,} {r['pack_storage_class']} packs "
                         f"({format_size(r['pack_bytes'])}): ranged GETs fetch {format_size(r['selected_bytes'])}, "
                         "nothing to thaw")
    lines.append("  restore (everything above, per tier):")
    for r in e.restore:
        lines.append(f"    {r['tier']:10} ~{r['hours']:g} h: retrieval {_money(r['retrieval'])} + copy "
                     f"{_money(r['temporary_copy'])} + GETs {_money(r['requests'])} + transfer out "
                     f"{_money(r['transfer_out'])} = {_money(r['total'])} {c}")
    lines.append(f"  early deletion: up to {_money(e.early_deletion_exposure)} {c} if the archived objects were deleted "
                 f"right after they arrive")
    lines += [f"  note: {n}" for n in e.notes]
    return lines


# -- a plan's figures, shared by `fs3g estimate` and `fs3g backup --dry-run` ---------------------------------------------

def default_region(policy: Policy) -> str:
    return policy.s3.region or "us-east-1"


def prices_for(policy: Policy, pricing: Path | None = None, region: str | None = None) -> Prices:
    """The price table (default: the shipped configs/pricing.yaml) for `region` (default: the policy's)."""
    from .resources import DataDir, data_file

    return load_prices(pricing or data_file(DataDir.CONFIGS, "pricing.yaml"), region or default_region(policy))


@dataclass(frozen=True)
class PlanFigures:
    """What a plan sends (`upload`), what the bucket holds afterwards (`stored`), and `scope` in words."""

    upload: Tally
    stored: Tally
    scope: str


def plan_figures(run_dir: Path, policy: Policy, prices: Prices | None, scope: str,
                 wanted: tuple[bytes, ...] = ()) -> PlanFigures:
    """Tally a plan's shards (streamed: one record at a time) and, for an incremental plan, the catalog for what is
    stored. `wanted`: only entries at or below these absolute paths (matched at component boundaries)."""
    from .runs.catalog import catalog_path, packs_usage_path, path_selector, read_catalog, read_packs_usage
    from .runs.files import PlanHeader
    from .runs.layout import RunLayout, read_json

    layout = RunLayout(run_dir)
    header = PlanHeader.from_json(read_json(layout.plan_file), layout.plan_file)
    shards = (read_records(layout.shards_dir / s.file) for s in header.shards)
    upload = tally_shards(shards, policy, prices, selected=path_selector(wanted) if wanted else None)
    if header.details.get("full", True) or not catalog_path(policy).is_file():
        stored = upload
    else:  # an incremental plan sends the changes; the bucket holds the catalog's files
        sizes = {u.pack: u.bytes for u in read_packs_usage(packs_usage_path(policy))}  # one number per pack
        stored = tally_shards([read_catalog(policy)], policy, prices, from_catalog=True,
                              selected=path_selector(wanted) if wanted else None, pack_sizes=sizes)
        scope += "; storage and restore from the catalog"
    if wanted:
        scope += f"; under {', '.join(os.fsdecode(w) for w in wanted)}"
    return PlanFigures(upload, stored, scope)


def estimate_for(policy: Policy, prices: Prices, paths: Iterable[str] = (),
                 run_dir: Path | None = None) -> tuple[PlanFigures, Estimate]:
    """`fs3g estimate`: the figures of the plan in `run_dir`, or (None) of a fresh scan of the policy's roots (a full
    plan into a private scratch directory under the lab's run directory, removed afterwards), and their estimate.
    `paths`: only files under these."""
    import shutil
    import tempfile

    from .backup.plan import PlanOptions, make_plan
    from .runs.layout import ensure_private_dir, lab_dir
    from .scan import ScanSettings

    wanted = tuple(os.fsencode(os.path.normpath(os.path.abspath(p))) for p in paths)
    scratch = None
    try:
        if run_dir is not None:
            scope = f"plan {run_dir}"
        else:  # a fresh scan: a full plan into a private scratch directory, removed afterwards
            scratch = Path(tempfile.mkdtemp(prefix=".estimate-", dir=ensure_private_dir(lab_dir(policy))))
            run_dir = scratch / "plan"
            make_plan(policy, run_dir, PlanOptions(full=True, catalog=None, scan=ScanSettings(
                workers=len(os.sched_getaffinity(0))), max_array_size=1001, max_array_size_source="estimate"))
            scope = f"a fresh scan of {', '.join(policy.roots)}"
        figures = plan_figures(run_dir, policy, prices, scope, wanted)
        return figures, estimate(figures.upload, figures.stored, policy, prices)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
