"""`fs3g estimate`: what a backup and its storage cost, from a plan, before the first byte moves. Pure: no S3, no Slurm
(estimate_for, the command's whole route, may scan the roots into a scratch plan first).

Inputs: the entries of a plan (every planned file, streamed from its shards) and the policy (classes, part size,
lifecycle), and a dated price table (`configs/pricing.yaml`, per region). Outputs, in the table's currency:

- upload requests: one PUT per small file and symlink; a large file is one PUT when it fits one part, else a
  multipart upload (create + one per part + complete) and the PUT of its tree-hash tag; the pathmap PUT of a hashed
  long path; PUTs are priced by the class they write into;
- verification: one LIST per key directory and shard (and per 1,000 keys), one HEAD per hashed long key;
- lifecycle transitions: one per large object moved by the rule (none when large files are uploaded straight into
  the archive class);
- monthly storage by class: small files and symlinks in STANDARD; large files in the archive class, each billed at
  least the class's minimum object size, plus the per-object overhead of GLACIER and DEEP_ARCHIVE (8 KB at the
  STANDARD rate and 32 KB at the archive rate);
- restore, per retrieval tier: the retrieval per GB and per 1,000 requests for archived objects, the temporary copy
  at the STANDARD rate for the restore's days, the GETs (ranged for large objects), the transfer out, and the time;
- early-deletion exposure: what deleting every archived object right after it arrives would still cost (the class's
  minimum storage duration).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .config import ARCHIVED_CLASSES, Policy, Prices, StorageClass, load_prices
from .model.entries import KEY_CLASS, EntryClass, classify
from .model.keys import KeyClass, object_key
from .model.records import Entry, read_records
from .model.s3limits import S3_MAX_PART_BYTES, ObjectTooLarge, part_size_for

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

    @property
    def objects(self) -> int:
        return self.small_files + self.symlinks + self.large_files


def tally(entries: Iterable[Entry], policy: Policy, prices: Prices | None) -> Tally:
    """Stream the entries once (files and symlinks; anything else is ignored). Without prices (a region the table
    lacks) the counts are the same and large_billed_bytes has no class minimum."""
    t = Tally()
    threshold = policy.storage.small_file_threshold_bytes
    buffer = policy.uploader.buffer_size_bytes
    archive = policy.storage.archive_storage_class.value
    minimum = prices.minimum_object_bytes(archive) if prices is not None else 0
    last_dir: tuple[KeyClass, bytes] | None = None
    for entry in entries:
        entry_class = classify(entry, threshold)
        if entry_class is EntryClass.SYMLINK:
            t.symlinks += 1
            t.symlink_bytes += entry.size_bytes
        elif entry_class is EntryClass.SMALL:
            t.small_files += 1
            t.small_bytes += entry.size_bytes
        elif entry_class is EntryClass.LARGE:
            t.large_files += 1
            t.large_bytes += entry.size_bytes
            t.large_billed_bytes += max(entry.size_bytes, minimum)
            try:
                part = part_size_for(entry.size_bytes, buffer)
            except ObjectTooLarge:  # the upload will refuse it; count it in the largest parts S3 takes
                part = S3_MAX_PART_BYTES
            if entry.size_bytes <= part:
                t.single_put_large += 1
            else:
                t.multipart_uploads += 1
                t.parts += math.ceil(entry.size_bytes / part)
        else:
            continue
        klass = KEY_CLASS[entry_class]
        if object_key(policy.s3.prefix, klass, entry.path).long_path_sha256 is not None:
            t.long_keys += 1
        directory = (klass, entry.directory)
        if directory != last_dir:  # shards keep a directory's entries together
            t.key_directories += 1
            last_dir = directory
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
                "notes": self.notes}


def _puts(upload: Tally) -> tuple[int, int]:
    """(PUTs into STANDARD, PUTs of large-file data): the tree-hash tag of a multipart object is a STANDARD PUT."""
    puts_standard = upload.small_files + upload.symlinks + upload.long_keys + upload.multipart_uploads
    puts_large = upload.single_put_large + upload.parts + 2 * upload.multipart_uploads
    return puts_standard, puts_large


def upload_requests(upload: Tally, policy: Policy) -> dict[str, int]:
    """The requests a backup of `upload` makes (uploads and the merge's verification), priced or not."""
    puts_standard, puts_large = _puts(upload)
    return {"PUT": puts_standard + puts_large, "LIST": upload.key_directories + math.ceil(upload.objects / 1000),
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
    """GETs of restoring everything in `stored`: one per small object and symlink, one per part of a large one."""
    return stored.small_files + stored.symlinks + stored.single_put_large + stored.parts


def estimate(upload: Tally, stored: Tally, policy: Policy, prices: Prices) -> Estimate:
    """`upload`: what this run sends; `stored`: what the bucket holds afterwards (the same for a full plan)."""
    archive = policy.storage.archive_storage_class.value
    direct = policy.storage.upload_large_to_archive
    large_put_class = archive if direct else StorageClass.STANDARD.value
    e = Estimate(prices.currency, prices.date, prices.region, archive)

    puts_standard, puts_large = _puts(upload)
    lists = upload.key_directories + math.ceil(upload.objects / 1000)
    e.requests = upload_requests(upload, policy)
    e.upload_cost = {
        "PUT STANDARD": puts_standard / 1000 * prices.put(StorageClass.STANDARD.value),
        f"PUT {large_put_class} (large files)": puts_large / 1000 * prices.put(large_put_class),
        "LIST": lists / 1000 * prices.list(),
        "HEAD": upload.long_keys / 1000 * prices.get(),
        f"transitions to {archive}": 0.0 if direct else upload.large_files / 1000 * prices.transition(archive),
    }

    over_std, over_arch = prices.overhead(archive) if archive in {c.value for c in ARCHIVED_CLASSES} else (0, 0)
    standard_bytes = stored.small_bytes + stored.symlink_bytes + stored.large_files * over_std
    archive_bytes = stored.large_billed_bytes + stored.large_files * over_arch
    e.storage_gb = {StorageClass.STANDARD.value: standard_bytes / GB, archive: archive_bytes / GB}
    e.storage_cost_month = {StorageClass.STANDARD.value: standard_bytes / GB * prices.storage("STANDARD"),
                            archive: archive_bytes / GB * prices.storage(archive)}
    if stored.large_files and over_std:
        e.notes.append(f"{stored.large_files:,} archived objects carry {over_std + over_arch:,} bytes of overhead "
                       "each (8 KB at the STANDARD rate, 32 KB at the archive rate)")
    if not direct and policy.storage.lifecycle_days:
        e.notes.append(f"large files stay in STANDARD for {policy.storage.lifecycle_days} day(s) before the "
                       "lifecycle rule moves them (not in the monthly figure)")

    archived = archive in {c.value for c in ARCHIVED_CLASSES}
    for tier in (prices.tiers(archive) if archived else ["(none)"]):
        e.restore.append(restore_cost(prices, archive, tier, policy.restore.days, archived_objects=stored.large_files,
                                      archived_bytes=stored.large_bytes, gets=restore_gets(stored),
                                      out_bytes=stored.small_bytes + stored.symlink_bytes + stored.large_bytes))
    minimum_days = prices.minimum_days(archive)
    e.early_deletion_exposure = archive_bytes / GB * prices.storage(archive) * minimum_days / DAYS_PER_MONTH
    return e


def _money(x: float) -> str:
    return f"{x:,.2f}" if abs(x) >= 100 else f"{x:.4f}"


def render(e: Estimate, upload: Tally, stored: Tally, scope: str) -> list[str]:
    c = e.currency
    lines = [f"estimate: {scope}  (prices of {e.prices_date}, {e.region}, {c})",
             f"  objects   {stored.small_files:,} small, {stored.large_files:,} large, {stored.symlinks:,} symlinks",
             f"  upload    {e.requests['PUT']:,} PUT, {e.requests['LIST']:,} LIST, {e.requests['HEAD']:,} HEAD, "
             f"{e.requests['transitions']:,} transitions: {_money(e.upload_total)} {c}"]
    for name, cost in e.upload_cost.items():
        lines.append(f"    {name:38} {_money(cost):>12}")
    lines.append(f"  storage   {_money(e.storage_total_month)} {c} a month")
    for klass, cost in e.storage_cost_month.items():
        lines.append(f"    {klass:38} {e.storage_gb[klass]:12,.1f} GB {_money(cost):>12}")
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
    from .runs.catalog import catalog_path, read_catalog, under_paths
    from .runs.files import PlanHeader
    from .runs.layout import RunLayout, read_json

    layout = RunLayout(run_dir)
    header = PlanHeader.from_json(read_json(layout.plan_file), layout.plan_file)
    entries = (e for s in header.shards for e in read_records(layout.shards_dir / s.file))
    upload = tally(under_paths(entries, wanted), policy, prices)
    if header.details.get("full", True) or not catalog_path(policy).is_file():
        stored = upload
    else:  # an incremental plan sends the changes; the bucket holds the catalog's files
        stored = tally(read_catalog(policy, wanted), policy, prices)
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
