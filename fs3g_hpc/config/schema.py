"""The policy schema: every setting is a dataclass field whose metadata carries its parser, scope and doc, so the valid
keys, the defaults and the checks have a single source. Nothing here touches S3 or Slurm.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..model.retention import Duration, RetentionRule
from ..model.s3limits import S3_MAX_PART_BYTES, S3_MAX_PUT_BYTES, S3_MIN_PART_BYTES
from ..model.sizes import GIB, KIB, MIB, TIB
from .parsers import (Parser, SLURM_TOKEN, absolute_path, boolean, choice, fraction, integer, optional, parse_bucket,
                      parse_duration, parse_endpoint_url, parse_glob, parse_prefix, parse_sbatch_option, parse_schedule,
                      parse_slurm_time, size, string, string_list)

# What the uploader process costs beyond its buffers: interpreter, boto3 clients and their connection pools,
# manifest readers and journals. Measured peak RSS of an idle uploader is ~120 MiB; this leaves headroom.
UPLOADER_OVERHEAD_BYTES = 256 * MIB


class FileKind(Enum):
    """What a YAML file's top-level `kind:` says it is (a lab policy when it says nothing)."""

    LAB = "lab"
    SITE = "site"
    PRICING = "pricing"  # a price table (configs/pricing.yaml), checked by config.pricing


class Scope(Enum):
    """Where a setting may be written."""

    ANY = "any"  # site or lab file
    LAB = "lab"  # only a lab file


class StorageClass(Enum):
    STANDARD = "STANDARD"
    REDUCED_REDUNDANCY = "REDUCED_REDUNDANCY"
    STANDARD_IA = "STANDARD_IA"
    ONEZONE_IA = "ONEZONE_IA"
    INTELLIGENT_TIERING = "INTELLIGENT_TIERING"
    GLACIER = "GLACIER"
    DEEP_ARCHIVE = "DEEP_ARCHIVE"
    GLACIER_IR = "GLACIER_IR"
    OUTPOSTS = "OUTPOSTS"
    SNOW = "SNOW"
    EXPRESS_ONEZONE = "EXPRESS_ONEZONE"


# Classes a lifecycle rule can move objects into; the archive class for large files must be one of them.
TRANSITION_CLASSES = (
    StorageClass.GLACIER,
    StorageClass.DEEP_ARCHIVE,
    StorageClass.GLACIER_IR,
    StorageClass.STANDARD_IA,
    StorageClass.ONEZONE_IA,
    StorageClass.INTELLIGENT_TIERING,
)
# Objects in these classes need a RestoreObject before they can be read.
ARCHIVED_CLASSES = (StorageClass.GLACIER, StorageClass.DEEP_ARCHIVE)
# S3 refuses transitions into the IA classes before 30 days.
IA_MIN_DAYS = 30


class SmallFiles(Enum):
    """How small files (and symlinks) are stored: as members of packs (model/packs.py) or each as its own object."""

    PACKS = "packs"
    OBJECTS = "objects"  # the original layout: smallfile/<path>, symlinks/<path>


# Bounds of storage.pack_size_bytes. Below 16 MiB the per-object costs packs exist to save come back; above 5 GiB
# (S3's single-PUT size, far below the multipart limit) one file restored from an archive class thaws too much.
MIN_PACK_BYTES = 16 * MIB
MAX_PACK_BYTES = 5 * GIB


class RestoreTier(Enum):
    BULK = "Bulk"
    STANDARD = "Standard"
    EXPEDITED = "Expedited"


class RetryMode(Enum):
    STANDARD = "standard"
    ADAPTIVE = "adaptive"


class Engine(Enum):
    AUTO = "auto"  # the lean per-object path (transfer/lean.py) where it can say what botocore says
    BOTOCORE = "botocore"


class AddressingStyle(Enum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"



def setting(parse: Parser, *, default: Any = dataclasses.MISSING, doc: str, scope: Scope = Scope.ANY) -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc, "scope": scope})


def section(cls: type, *, doc: str) -> Any:
    return field(default=None, metadata={"section": cls, "doc": doc, "scope": Scope.ANY})


@dataclass(frozen=True, kw_only=True)
class LabInfo:
    name: str = setting(string(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a lab name (letters, digits, _ . -; 63 max)"),
                        doc="short lab name: used in run directory and job names", scope=Scope.LAB)
    contact: str | None = setting(optional(string()), default=None, doc="who to tell when a backup fails",
                                  scope=Scope.LAB)


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    bucket: str = setting(parse_bucket, doc="destination bucket")
    prefix: str = setting(parse_prefix, default="", doc="key prefix for this lab, e.g. labs/genomics")
    endpoint_url: str | None = setting(optional(parse_endpoint_url), default=None,
                                       doc="S3-compatible endpoint; when unset, AWS_ENDPOINT_URL or AWS itself")
    region: str = setting(string(r"[a-z0-9][a-z0-9-]*", "a region name"), default="us-east-1", doc="bucket region")
    profile: str | None = setting(optional(string(r"[A-Za-z0-9_.@+-]+", "a profile name")), default=None,
                                  doc="AWS profile name (credentials stay in ~/.aws, never here)")
    addressing_style: AddressingStyle = setting(choice(AddressingStyle), default=AddressingStyle.AUTO,
                                                doc="auto, path or virtual (bucket in the host name)")


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    small_file_threshold_bytes: int = setting(size(0, S3_MAX_PUT_BYTES), default=128 * KIB,
                                              doc="files up to this size are small (one PUT, smallfile/)")
    archive_storage_class: StorageClass = setting(choice(StorageClass, TRANSITION_CLASSES),
                                                  default=StorageClass.GLACIER,
                                                  doc="class the lifecycle rule moves largefile/ into")
    lifecycle_days: int = setting(integer(0, 36_500), default=1, doc="days before large files move to the archive")
    upload_large_to_archive: bool = setting(boolean, default=False,
                                            doc="write large files straight into the archive class")
    small_files: SmallFiles = setting(choice(SmallFiles), default=SmallFiles.PACKS,
                                      doc="packs: small files and symlinks go into indexed tar packs (packs/); "
                                          "objects: one object each (smallfile/, symlinks/)")
    pack_size_bytes: int = setting(size(MIN_PACK_BYTES, MAX_PACK_BYTES), default=512 * MIB,
                                   doc="a pack is closed before the next member would pass this; in an archive "
                                       "class the pack is the thaw unit: restoring one file thaws its whole pack")
    pack_storage_class: StorageClass = setting(choice(StorageClass), default=StorageClass.STANDARD,
                                               doc="class packs are written in (their indexes stay STANDARD)")
    pack_compact_below: float = setting(fraction, default=0.0,
                                        doc="fs3g prune rewrites packs whose live fraction (0..1) is below "
                                            "this (0: never)")


@dataclass(frozen=True, kw_only=True)
class ShardBounds:
    max_files: int = setting(integer(1), default=100_000, doc="most entries in one shard")
    max_bytes: int = setting(size(1), default=1 * TIB, doc="most bytes in one shard (one bigger file gets its own)")


@dataclass(frozen=True, kw_only=True)
class UploaderSettings:
    """Uploader bounds. Memory ceiling of one uploader process, in bytes:

        large_workers × large_buffers × buffer_size_bytes      (part buffers of large files and packs, one budget)
      + small_workers × storage.small_file_threshold_bytes     (small files are read whole, for objects or packs)
      + UPLOADER_OVERHEAD_BYTES (256 MiB: interpreter, clients, journals)

    A policy is valid only when this fits `memory_budget_bytes`, which must fit `slurm.mem_bytes`.
    """

    small_workers: int = setting(integer(1, 1024), default=64,
                                 doc="threads putting small files (PUTs in flight: what hides the latency)")
    large_workers: int = setting(integer(1, 256), default=4, doc="large files in flight at once")
    large_buffers: int = setting(integer(1, 1024), default=8, doc="buffers per large file in flight")
    buffer_size_bytes: int = setting(size(S3_MIN_PART_BYTES, S3_MAX_PART_BYTES), default=40 * MIB,
                                     doc="buffer = multipart part size (grown for files over 10,000 parts)")
    readers_per_file: int = setting(integer(1, 64), default=1,
                                    doc="parallel readers per large file (>1 helps parallel filesystems)")
    max_attempts: int = setting(integer(1, 100), default=10, doc="botocore attempts per request, first included")
    retry_mode: RetryMode = setting(choice(RetryMode), default=RetryMode.STANDARD, doc="botocore retry mode")
    engine: Engine = setting(choice(Engine), default=Engine.AUTO,
                             doc="per-object PUTs and restore's small GETs: auto = the lean engine, botocore's own "
                                 "pipeline where it cannot serve (adaptive retries, another auth scheme); botocore = "
                                 "always botocore")

    def memory_ceiling_bytes(self, small_file_threshold_bytes: int) -> int:
        return (self.large_workers * self.large_buffers * self.buffer_size_bytes
                + self.small_workers * small_file_threshold_bytes
                + UPLOADER_OVERHEAD_BYTES)


@dataclass(frozen=True, kw_only=True)
class SlurmSettings:
    partition: str | None = setting(optional(SLURM_TOKEN), default=None, doc="partition (cluster default if unset)")
    account: str | None = setting(optional(SLURM_TOKEN), default=None, doc="account to charge")
    qos: str | None = setting(optional(SLURM_TOKEN), default=None, doc="quality of service")
    time_limit: str = setting(parse_slurm_time, default="1-00:00:00", doc="time limit per array task")
    cpus_per_task: int = setting(integer(1, 1024), default=4, doc="CPUs per array task")
    mem_bytes: int | None = setting(optional(size(16 * MIB)), default=4 * GIB, doc="memory per array task")
    array_parallelism: int = setting(integer(1, 100_000), default=32, doc="most array tasks running at once (%)")
    extra_sbatch_options: tuple[str, ...] = setting(string_list(parse_sbatch_option), default=(),
                                                    doc="more sbatch options, e.g. --constraint=ib")


@dataclass(frozen=True, kw_only=True)
class RestoreSettings:
    tier: RestoreTier = setting(choice(RestoreTier), default=RestoreTier.BULK, doc="Glacier retrieval tier")
    days: int = setting(integer(1, 30_000), default=7, doc="days a restored copy stays readable")
    destination: str = setting(string(), default="glacierrestore", doc="where restores go (relative to the cwd)")
    poll_interval_s: int = setting(integer(1, 86_400), default=900,
                                   doc="seconds between readiness polls while Glacier restores are in progress")
    wait_limit_s: int = setting(integer(60, 30 * 86_400), default=4 * 86_400,
                                doc="give up waiting for Glacier restores after this many seconds (files not ready "
                                    "are reported failed)")
    download_workers: int = setting(integer(1, 1024), default=16,
                                    doc="threads of each restore task (whole small objects, parts of large ones)")



@dataclass(frozen=True, kw_only=True)
class SnapshotSettings:
    chunk_bytes: int = setting(size(1 * MIB, 4 * GIB), default=64 * MIB,
                               doc="catalog records per snapshot chunk in the bucket (uncompressed bytes): the "
                                   "memory and the download unit of a snapshot")
    rebuild_shard_keys: int = setting(integer(1, 10_000_000), default=100_000,
                                      doc="objects per array task of `fs3g catalog rebuild` (one HEAD each; a key range)")


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    """What `fs3g prune` keeps (model/retention.py has the rules). No key set: every snapshot is kept."""

    keep_last: int | None = setting(optional(integer(1, 1_000_000)), default=None,
                                    doc="keep the N newest snapshots")
    keep_daily: int | None = setting(optional(integer(1, 1_000_000)), default=None,
                                     doc="keep the newest snapshot of each of the last N days that have one")
    keep_weekly: int | None = setting(optional(integer(1, 1_000_000)), default=None,
                                      doc="keep the newest snapshot of each of the last N ISO weeks that have one")
    keep_monthly: int | None = setting(optional(integer(1, 1_000_000)), default=None,
                                       doc="keep the newest snapshot of each of the last N months that have one")
    keep_within: Duration | None = setting(optional(parse_duration), default=None,
                               doc="keep every snapshot made within this long before the newest (30d, 12w, 6m, 1y6m)")
    deleted_restorable_days: int | None = setting(optional(integer(0, 36_500)), default=None,
                                                  doc="keep every snapshot younger than N days (wall time), so a "
                                                      "file deleted from disk stays restorable that long after the "
                                                      "last backup that had it")
    backup_lock_stale_hours: int = setting(integer(1, 10_000), default=72,
                                           doc="a backup lock older than this is stale: prune says so and stops "
                                               "until `fs3g prune --break-lock`")

    def rule(self) -> RetentionRule:
        return RetentionRule(self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_within,
                             self.deleted_restorable_days)


@dataclass(frozen=True, kw_only=True)
class ScheduleSettings:
    backup: str | None = setting(optional(parse_schedule), default=None, scope=Scope.LAB,
                                 doc="when `fs3g schedule install` runs the backup: cron (`0 2 * * *`) or `every 6h`")


@dataclass(frozen=True, kw_only=True)
class Policy:
    lab: LabInfo = section(LabInfo, doc="who this policy is for")
    roots: tuple[str, ...] = setting(string_list(absolute_path()), doc="directories to back up", scope=Scope.LAB)
    exclude: tuple[str, ...] = setting(string_list(parse_glob), default=(),
                                       doc="glob patterns never backed up (shell syntax, matched on path bytes)")
    s3: S3Settings = section(S3Settings, doc="where objects go")
    storage: StorageSettings = section(StorageSettings, doc="small/large classes and Glacier")
    shards: ShardBounds = section(ShardBounds, doc="how the planner cuts work into array tasks")
    uploader: UploaderSettings = section(UploaderSettings, doc="threads and buffers of each array task")
    memory_budget_bytes: int = setting(size(64 * MIB), default=2 * GIB, doc="memory one uploader may use")
    retry_rounds: int = setting(integer(0, 10), default=2,
                                doc="times a failed merge resubmits exactly what failed, with its own merge")
    slurm: SlurmSettings = section(SlurmSettings, doc="how jobs are submitted")
    restore: RestoreSettings = section(RestoreSettings, doc="restore defaults")
    schedule: ScheduleSettings = section(ScheduleSettings, doc="the lab's backup schedule")
    snapshots: SnapshotSettings = section(SnapshotSettings, doc="catalog snapshots in the bucket (catalog/)")
    retention: RetentionSettings = section(RetentionSettings, doc="which snapshots `fs3g prune` keeps")
    run_root: str = setting(absolute_path(slurm_safe=True), doc="shared directory for run directories")
    source_files: tuple[str, ...] = field(default=(), metadata={"internal": True})

    @property
    def uploader_memory_ceiling_bytes(self) -> int:
        return self.uploader.memory_ceiling_bytes(self.storage.small_file_threshold_bytes)


# Top-level keys that steer loading rather than describe the policy.
META_KEYS = ("kind", "site")
SECRET_KEY_PATTERN = re.compile(r"secret|passw|token|access_?key|credential|session", re.IGNORECASE)


def schema_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def schema_keys(cls: type = Policy, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Flattened (key.path, doc, default) rows, for documentation and `fs3g validate --list-keys`."""
    rows: list[tuple[str, str, Any]] = []
    for name, f in schema_fields(cls).items():
        path = f"{prefix}{name}"
        if "section" in f.metadata:
            rows.extend(schema_keys(f.metadata["section"], path + "."))
        else:
            default = "(required)" if f.default is dataclasses.MISSING else f.default
            rows.append((path, f.metadata["doc"], default))
    return rows



def policy_to_dict(policy: Policy) -> dict:
    """Plain data (enums as values) for snapshots in run directories."""

    def convert(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, Duration):
            return str(value)
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if not f.metadata.get("internal")}
        return value

    return convert(policy)

