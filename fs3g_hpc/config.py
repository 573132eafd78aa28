"""YAML policies: a declarative schema, site+lab layering, and validation with `file: key.path: message` lines.

A *site* file (``kind: site``) holds a cluster's defaults (Slurm partition and limits, endpoint, run root). A *lab*
file (``kind: lab``, the default) holds one lab's policy and may name its site file with ``site: PATH`` (relative to
the lab file), or inherit it from ``$FS3G_SITE_CONFIG``. Mappings merge key by key; a scalar or a list in the lab file
replaces the site's.

The schema is the dataclasses below: every setting is a field whose metadata carries its parser, scope and doc, so the
valid keys, the defaults and the checks have a single source. Nothing here touches S3 or Slurm.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import posixpath
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from .errors import ConfigError, Problem, UsageError
from .sizes import GIB, KIB, MIB, TIB, format_size, parse_size

SITE_ENV_VAR = "FS3G_SITE_CONFIG"

# S3 limits (AWS documentation, late 2025).
S3_MIN_PART_BYTES = 5 * MIB
S3_MAX_PART_BYTES = 5 * GIB
S3_MAX_PARTS = 10_000
S3_MAX_PUT_BYTES = 5 * GIB
# What the uploader process costs beyond its buffers: interpreter, boto3 clients and their connection pools,
# manifest readers and journals. Measured peak RSS of an idle uploader is ~120 MiB; this leaves headroom.
UPLOADER_OVERHEAD_BYTES = 256 * MIB


class FileKind(Enum):
    LAB = "lab"
    SITE = "site"


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
_IA_MIN_DAYS = 30


class RestoreTier(Enum):
    BULK = "Bulk"
    STANDARD = "Standard"
    EXPEDITED = "Expedited"


class RetryMode(Enum):
    STANDARD = "standard"
    ADAPTIVE = "adaptive"


class AddressingStyle(Enum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


# ---------------------------------------------------------------------------------------------------------------------
# Value parsers: each takes the YAML value and returns the typed value or raises ValueError with a user-facing message.

Parser = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def size(minimum: int = 0, maximum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        n = parse_size(value)
        if n < minimum:
            raise ValueError(f"must be at least {format_size(minimum)}, got {format_size(n)}")
        if maximum is not None and n > maximum:
            raise ValueError(f"must be at most {format_size(maximum)}, got {format_size(n)}")
        return n

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def string(pattern: str | None = None, what: str = "", max_bytes: int | None = None) -> Parser:
    regex = re.compile(pattern) if pattern else None

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        if not value:
            raise ValueError("must not be empty")
        if regex and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        if max_bytes is not None and len(value.encode()) > max_bytes:
            raise ValueError(f"must be at most {max_bytes} bytes")
        return value

    return parse


def choice(enum: type[Enum], allowed: Sequence[Enum] | None = None) -> Parser:
    members = list(allowed or enum)

    def parse(value: Any) -> Enum:
        names = ", ".join(str(m.value) for m in members)
        if not isinstance(value, str):
            raise ValueError(f"expected one of {names}, got {_type_name(value)}")
        for member in members:
            if value == member.value:
                return member
        for member in members:
            if value.lower() == str(member.value).lower():
                raise ValueError(f"{value!r}: write it as {member.value!r}")
        if any(value == m.value for m in enum):
            raise ValueError(f"{value!r} is not allowed here; use one of {names}")
        close = difflib.get_close_matches(value, [str(m.value) for m in members], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{value!r} is not one of {names}{hint}")

    return parse


def optional(parser: Parser) -> Parser:
    def parse(value: Any) -> Any:
        return None if value is None else parser(value)

    return parse


def string_list(item: Parser) -> Parser:
    def parse(value: Any) -> tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_type_name(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from e
        return tuple(out)

    return parse


_SLURM_UNSAFE = re.compile(r"[\s'\"\\%`$]")


def absolute_path(slurm_safe: bool = False) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected an absolute path, got {_type_name(value)}")
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path")
        if "\0" in value:
            raise ValueError("path contains a NUL byte")
        if slurm_safe and _SLURM_UNSAFE.search(value):
            # Slurm expands % in log paths and splits #SBATCH lines on blanks.
            raise ValueError(f"{value!r}: a path used in Slurm job scripts must not contain blanks, quotes, $ or %")
        normal = posixpath.normpath(value)
        return "/" if normal == "//" else normal

    return parse


def parse_bucket(value: Any) -> str:
    """S3's general-purpose bucket naming rules."""
    name = string()(value)
    if not 3 <= len(name) <= 63:
        raise ValueError(f"bucket name {name!r} must be 3 to 63 characters long")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name):
        raise ValueError(
            f"bucket name {name!r} may hold only lowercase letters, digits, dots and hyphens, "
            "and must begin and end with a letter or digit"
        )
    if ".." in name:
        raise ValueError(f"bucket name {name!r} must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"bucket name {name!r} must not be formatted as an IP address")
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            raise ValueError(f"bucket name {name!r} must not begin with {prefix!r}")
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            raise ValueError(f"bucket name {name!r} must not end with {suffix!r}")
    return name


def parse_prefix(value: Any) -> str:
    """A key prefix; stored without leading or trailing '/' so that keys never get an empty `//` segment."""
    if value is None or value == "":
        return ""
    text = string()(value).strip("/")
    if not text:
        return ""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("key prefix must not contain control characters")
    for segment in text.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"key prefix {value!r} has an empty, '.' or '..' segment")
    if len(text.encode()) > 256:
        raise ValueError("key prefix must be at most 256 bytes (S3 keys are limited to 1024)")
    return text


def parse_glob(value: Any) -> str:
    """An exclude pattern: checked here so that a malformed one fails at load, not in the middle of a walk."""
    from . import globs

    return globs.check(string()(value))


def parse_endpoint_url(value: Any) -> str:
    url = string()(value)
    match = re.fullmatch(r"(https?)://([^/?#]+)(/[^?#]*)?", url)
    if not match:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if "@" in match.group(2):
        raise ValueError("credentials do not belong in a policy: remove the user:password part of the URL")
    return url.rstrip("/")


def parse_slurm_time(value: Any) -> str:
    """Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"must be at least 1 minute, got {value}")
        return str(value)
    text = string()(value)
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return "UNLIMITED"
    if not re.fullmatch(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}", text):
        raise ValueError(f"{text!r} is not a Slurm time (e.g. 90, 12:00:00, 2-00:00:00)")
    return text


_SLURM_TOKEN = string(r"[A-Za-z0-9_.,+-]+", "a Slurm name (letters, digits, _ . , + -)")
# Options fs3g sets itself on every job it renders; a policy may not override them.
MANAGED_SBATCH_OPTIONS = {
    "--array": "-a", "--dependency": "-d", "--output": "-o", "--error": "-e", "--job-name": "-J",
    "--parsable": None, "--wrap": None, "--signal": None, "--requeue": None, "--no-requeue": None,
    "--begin": "-b", "--chdir": "-D", "--partition": "-p", "--account": "-A", "--qos": "-q", "--time": "-t",
    "--cpus-per-task": "-c", "--mem": None, "--mem-per-cpu": None, "--export": None, "--wait": "-W",
    "--open-mode": None,
}
_SHORT_TO_LONG = {short: long for long, short in MANAGED_SBATCH_OPTIONS.items() if short}


def parse_sbatch_option(value: Any) -> str:
    text = string()(value)
    match = re.fullmatch(r"(--[a-z][a-z0-9-]*|-[a-zA-Z])(=[^\s'\"\\`$]+)?", text)
    if not match:
        raise ValueError(f"{text!r} is not one sbatch option written as --name or --name=value (no blanks or quotes)")
    name = match.group(1)
    long_name = _SHORT_TO_LONG.get(name, name)
    if long_name in MANAGED_SBATCH_OPTIONS:
        raise ValueError(f"{text!r}: fs3g sets {long_name} itself; use the slurm.* settings instead")
    return text


# ---------------------------------------------------------------------------------------------------------------------
# The schema.


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


@dataclass(frozen=True, kw_only=True)
class ShardBounds:
    max_files: int = setting(integer(1), default=100_000, doc="most entries in one shard")
    max_bytes: int = setting(size(1), default=1 * TIB, doc="most bytes in one shard (one bigger file gets its own)")


@dataclass(frozen=True, kw_only=True)
class UploaderSettings:
    """Uploader bounds. Memory ceiling of one uploader process, in bytes:

        large_workers × large_buffers × buffer_size_bytes      (large-file buffer pools)
      + small_workers × storage.small_file_threshold_bytes     (small files are read whole)
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

    def memory_ceiling_bytes(self, small_file_threshold_bytes: int) -> int:
        return (self.large_workers * self.large_buffers * self.buffer_size_bytes
                + self.small_workers * small_file_threshold_bytes
                + UPLOADER_OVERHEAD_BYTES)


@dataclass(frozen=True, kw_only=True)
class SlurmSettings:
    partition: str | None = setting(optional(_SLURM_TOKEN), default=None, doc="partition (cluster default if unset)")
    account: str | None = setting(optional(_SLURM_TOKEN), default=None, doc="account to charge")
    qos: str | None = setting(optional(_SLURM_TOKEN), default=None, doc="quality of service")
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


def parse_schedule(value: Any) -> str:
    from .schedule import Schedule, ScheduleError

    try:
        return Schedule.parse(string()(value)).text
    except ScheduleError as e:
        raise ValueError(str(e)) from e


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
    run_root: str = setting(absolute_path(slurm_safe=True), doc="shared directory for run directories")
    source_files: tuple[str, ...] = field(default=(), metadata={"internal": True})

    @property
    def uploader_memory_ceiling_bytes(self) -> int:
        return self.uploader.memory_ceiling_bytes(self.storage.small_file_threshold_bytes)


# Top-level keys that steer loading rather than describe the policy.
META_KEYS = ("kind", "site")
_SECRET_KEY = re.compile(r"secret|passw|token|access_?key|credential|session", re.IGNORECASE)


def _schema_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def schema_keys(cls: type = Policy, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Flattened (key.path, doc, default) rows, for documentation and `fs3g validate --list-keys`."""
    rows: list[tuple[str, str, Any]] = []
    for name, f in _schema_fields(cls).items():
        path = f"{prefix}{name}"
        if "section" in f.metadata:
            rows.extend(schema_keys(f.metadata["section"], path + "."))
        else:
            default = "(required)" if f.default is dataclasses.MISSING else f.default
            rows.append((path, f.metadata["doc"], default))
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# YAML loading with line numbers.


# Bounds on what one YAML file may make us build. A real policy or price table has a few hundred nodes; aliases let
# a few hundred bytes stand for billions of them ("billion laughs"), and every walk over the data would expand them.
MAX_YAML_FILE_BYTES = 16 * MIB
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded (merge keys included)
MAX_YAML_DEPTH = 64  # nested mappings and lists; the composer recurses per level


class YamlLimitError(yaml.YAMLError):
    """A document over MAX_YAML_NODES or MAX_YAML_DEPTH, or with an alias to itself; refused before it is built."""


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 numbers (`time_limit: 24:00:00` must stay a string, not 86400), that counts
    the document's size with aliases expanded while it composes it, so an alias bomb is refused in linear time."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> its size with aliases expanded (the tree keeps nodes alive)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"the document nests mappings and lists more than {MAX_YAML_DEPTH} levels deep")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:
            if id(node) not in self._expanded:
                raise YamlLimitError("an alias refers to the mapping or list that contains it (a cycle)")
            return node
        if isinstance(node, yaml.SequenceNode):
            count = 1 + sum(self._expanded[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            count = 1 + sum(self._expanded[id(k)] + self._expanded[id(v)] for k, v in node.value)
        else:
            count = 1
        if count > MAX_YAML_NODES:
            raise YamlLimitError(f"the document expands to more than {MAX_YAML_NODES:,} nodes (aliases nested in aliases?); "
                                 "write the values out instead of nesting aliases")
        self._expanded[id(node)] = count
        return node


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if not (tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and regexp.match("1:30"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

KeyPath = tuple[str, ...]


@dataclass
class _Document:
    file: str
    data: dict
    lines: dict[KeyPath, int]


def _node_to_data(loader: _Loader, node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int],
                  problems: list[Problem], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                problems.append(Problem(file, ".".join(path), f"key {key!r} must be a string", line))
                continue
            if key in out:
                problems.append(Problem(file, ".".join(path + (key,)), "duplicate key", line))
                continue
            lines[path + (key,)] = line
            out[key] = _node_to_data(loader, value_node, path + (key,), lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_data(loader, n, path, lines, problems, file) for n in node.value]
    return loader.construct_object(node, deep=True)


def _read_yaml_text(path: Path) -> str:
    """The file's text; ValueError with a one-line reason when it is missing, unreadable, too big or not UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a YAML file") from None
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_YAML_FILE_BYTES:
        raise ValueError(f"larger than {format_size(MAX_YAML_FILE_BYTES)}: not a policy or price table")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}): is this the YAML file you meant?") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, YamlLimitError):
        return f"refused: {e}"
    if isinstance(e, yaml.reader.ReaderError):  # a control character: binary data, not text
        return f"not a text file: character #x{e.character:04x} at byte {e.position} is not allowed in YAML"
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"YAML syntax error: {where}{e.problem or e.context}"
    return f"YAML error: {str(e).splitlines()[0]}"


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The data of one YAML file (a price table, a probe of a file's kind), read with the policies' limits and
    resolvers; UsageError naming the file, in one line, for anything that is not a readable YAML document."""
    try:
        loader = _Loader(_read_yaml_text(Path(path)))
    except ValueError as e:
        raise UsageError(str(e), path=str(path)) from None
    except yaml.YAMLError as e:
        raise UsageError(_yaml_problem(e), path=str(path)) from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise UsageError(_yaml_problem(e), path=str(path)) from None
    finally:
        loader.dispose()


def _load_yaml(path: Path, problems: list[Problem]) -> _Document | None:
    file = str(path)
    try:
        loader = _Loader(_read_yaml_text(path))  # the reader refuses control characters here already
    except ValueError as e:
        problems.append(Problem(file, "", str(e)))
        return None
    except yaml.YAMLError as e:
        problems.append(Problem(file, "", _yaml_problem(e)))
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(Problem(file, "", "file is empty; expected a mapping of policy keys"))
            return None
        lines: dict[KeyPath, int] = {}
        data = _node_to_data(loader, node, (), lines, problems, file)
    except yaml.YAMLError as e:
        problems.append(Problem(file, "", _yaml_problem(e)))
        return None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        problems.append(Problem(file, "", f"expected a mapping of policy keys at the top, got {_type_name(data)}", 1))
        return None
    return _Document(file, data, lines)


# ---------------------------------------------------------------------------------------------------------------------
# Validation.


class _Checker:
    """Collects problems; locates each key path in the file (and line) that set it."""

    def __init__(self, documents: Sequence[_Document]):
        self.documents = documents  # highest precedence first
        self.problems: list[Problem] = []

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        for cut in range(len(path), -1, -1):
            for doc in self.documents:
                if path[:cut] in doc.lines and (cut > 0 or len(self.documents) == 1):
                    return doc.file, doc.lines.get(path[:cut])
        return self.documents[0].file, None

    def add(self, path: KeyPath, message: str, document: _Document | None = None) -> None:
        if document is not None:
            file, line = document.file, document.lines.get(path)
        else:
            file, line = self.locate(path)
        self.problems.append(Problem(file, ".".join(path), message, line))

    def sorted_problems(self) -> tuple[Problem, ...]:
        order = {d.file: i for i, d in enumerate(self.documents)}
        return tuple(sorted(self.problems, key=lambda p: (order.get(p.file, -1), p.line or 0)))

    def check_structure(self, cls: type, data: Any, path: KeyPath, doc: _Document, kind: FileKind) -> None:
        """Unknown keys, secrets, scope and mapping shape, for one file before layering."""
        if not isinstance(data, dict):
            self.add(path, f"expected a mapping, got {_type_name(data)}", doc)
            return
        valid = _schema_fields(cls)
        extra = META_KEYS if not path else ()
        for key, value in data.items():
            key_path = path + (key,)
            if key in extra:
                continue
            f = valid.get(key)
            if f is None:
                if _SECRET_KEY.search(key):
                    self.add(key_path, "credentials do not belong in a policy: use the AWS environment or "
                                       "~/.aws with s3.profile", doc)
                    continue
                names = sorted(valid) + list(extra)
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.add(key_path, f"unknown key; {hint}valid keys: {', '.join(names)}", doc)
            elif "section" in f.metadata:
                self.check_structure(f.metadata["section"], value, key_path, doc, kind)
            elif f.metadata["scope"] is Scope.LAB and kind is FileKind.SITE:
                self.add(key_path, "belongs in a lab policy, not in a site file", doc)

    def build(self, cls: type, data: Mapping[str, Any], path: KeyPath, require: bool) -> Any:
        """Parse every present value; return the dataclass, or None if anything was missing or wrong."""
        values: dict[str, Any] = {}
        complete = True
        for name, f in _schema_fields(cls).items():
            key_path = path + (name,)
            if "section" in f.metadata:
                sub = data.get(name, {})
                if not isinstance(sub, dict):  # already reported by check_structure
                    complete = False
                    continue
                built = self.build(f.metadata["section"], sub, key_path, require)
                complete = complete and built is not None
                values[name] = built
                continue
            if name in data:
                try:
                    values[name] = f.metadata["parse"](data[name])
                except ValueError as e:
                    self.add(key_path, str(e))
                    complete = False
            elif f.default is dataclasses.MISSING:
                complete = False
                if require:
                    self.add(key_path, f"required key is missing ({f.metadata['doc']})")
        return cls(**values) if complete else None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _cross_checks(policy: Policy, checker: _Checker) -> None:
    ceiling = policy.uploader_memory_ceiling_bytes
    up = policy.uploader
    if ceiling > policy.memory_budget_bytes:
        checker.add(("memory_budget_bytes",),
                    f"uploader memory ceiling {up.large_workers} large_workers × {up.large_buffers} large_buffers × "
                    f"{format_size(up.buffer_size_bytes)} + {up.small_workers} small_workers × "
                    f"{format_size(policy.storage.small_file_threshold_bytes)} + "
                    f"{format_size(UPLOADER_OVERHEAD_BYTES)} overhead = {format_size(ceiling)} exceeds the budget "
                    f"{format_size(policy.memory_budget_bytes)}; lower uploader.large_workers, large_buffers or "
                    "buffer_size_bytes, or raise memory_budget_bytes")
    mem = policy.slurm.mem_bytes
    if mem is not None and policy.memory_budget_bytes > mem:
        checker.add(("slurm", "mem_bytes"),
                    f"{format_size(mem)} is less than memory_budget_bytes {format_size(policy.memory_budget_bytes)}; "
                    "the job would be killed for memory: raise slurm.mem_bytes or lower the budget")
    if up.readers_per_file > up.large_buffers:
        checker.add(("uploader", "readers_per_file"),
                    f"{up.readers_per_file} readers need at least as many buffers per file "
                    f"(large_buffers is {up.large_buffers})")
    if policy.storage.small_file_threshold_bytes >= policy.shards.max_bytes:
        checker.add(("shards", "max_bytes"),
                    f"{format_size(policy.shards.max_bytes)} is not above storage.small_file_threshold_bytes "
                    f"({format_size(policy.storage.small_file_threshold_bytes)})")
    archive = policy.storage.archive_storage_class
    if archive in (StorageClass.STANDARD_IA, StorageClass.ONEZONE_IA) and policy.storage.lifecycle_days < _IA_MIN_DAYS:
        checker.add(("storage", "lifecycle_days"),
                    f"S3 refuses transitions to {archive.value} before {_IA_MIN_DAYS} days; got "
                    f"{policy.storage.lifecycle_days}")
    if archive is StorageClass.DEEP_ARCHIVE and policy.restore.tier is RestoreTier.EXPEDITED:
        checker.add(("restore", "tier"), "DEEP_ARCHIVE has no Expedited retrieval; use Standard or Bulk")
    roots = sorted(policy.roots)
    for i, root in enumerate(roots):
        if root in roots[:i]:
            checker.add(("roots",), f"{root!r} is listed twice")
        for other in roots[:i]:
            if root != other and root.startswith(other.rstrip("/") + "/"):
                checker.add(("roots",), f"{root!r} lies inside {other!r}; it would be backed up twice")
    if not policy.roots:
        checker.add(("roots",), "at least one root directory is needed")


@dataclass(frozen=True)
class ValidationResult:
    file: str
    kind: FileKind
    policy: Policy | None  # None for a site file or an invalid lab
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _file_kind(doc: _Document, checker: _Checker) -> FileKind | None:
    raw = doc.data.get("kind", FileKind.LAB.value)
    try:
        return choice(FileKind)(raw)
    except ValueError as e:
        checker.add(("kind",), str(e), doc)
        return None


def validate_file(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> ValidationResult:
    """Validate a lab file (layered on its site file) or a site file on its own."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    lab_path = Path(path)
    doc = _load_yaml(lab_path, problems)
    if doc is None:
        return ValidationResult(str(path), FileKind.LAB, None, tuple(problems))
    checker = _Checker([doc])
    checker.problems.extend(problems)  # duplicate or non-string keys found while loading
    kind = _file_kind(doc, checker)
    if kind is None:
        return ValidationResult(doc.file, FileKind.LAB, None, tuple(checker.problems))
    if kind is FileKind.SITE:
        if "site" in doc.data:
            checker.add(("site",), "only a lab policy names a site file", doc)
        checker.check_structure(Policy, doc.data, (), doc, kind)
        checker.build(Policy, doc.data, (), require=False)
        return ValidationResult(doc.file, kind, None, checker.sorted_problems())

    documents = [doc]
    site_ref = doc.data.get("site")
    site_path: Path | None = None
    if site_ref is not None:
        if not isinstance(site_ref, str) or not site_ref:
            checker.add(("site",), f"expected a path to the site file, got {_type_name(site_ref)}", doc)
        else:
            site_path = (lab_path.parent / site_ref) if not os.path.isabs(site_ref) else Path(site_ref)
    elif env.get(SITE_ENV_VAR):
        site_path = Path(env[SITE_ENV_VAR])
    if site_path is not None:
        site_problems: list[Problem] = []
        site_doc = _load_yaml(site_path, site_problems)
        if site_doc is None:
            origin = "site" if site_ref is not None else f"${SITE_ENV_VAR}"
            for p in site_problems:
                checker.add(("site",) if site_ref is not None else (),
                            f"{origin} file {p.file}: {p.message}", doc)
        else:
            site_checker = _Checker([site_doc])
            site_checker.problems.extend(site_problems)
            if _file_kind(site_doc, site_checker) is not FileKind.SITE:
                site_checker.add(("kind",), "a file named as a site file must say `kind: site`", site_doc)
            site_checker.check_structure(Policy, site_doc.data, (), site_doc, FileKind.SITE)
            checker.problems.extend(site_checker.problems)
            documents.append(site_doc)
    checker.documents = documents
    checker.check_structure(Policy, doc.data, (), doc, kind)
    merged: dict = {}
    for d in reversed(documents):
        merged = _merge(merged, {k: v for k, v in d.data.items() if k not in META_KEYS})
    policy = checker.build(Policy, merged, (), require=True)
    if policy is not None:
        policy = dataclasses.replace(policy, source_files=tuple(d.file for d in documents))
        _cross_checks(policy, checker)
    if checker.problems:
        return ValidationResult(doc.file, kind, None, checker.sorted_problems())
    return ValidationResult(doc.file, kind, policy, ())


def load_policy(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Policy:
    """Load a lab policy; raise ConfigError listing every problem."""
    result = validate_file(path, environ=environ)
    if result.problems:
        raise ConfigError(result.problems)
    if result.policy is None:
        raise ConfigError([Problem(result.file, "kind", "this is a site file; give a lab policy")])
    return result.policy


def policy_from_snapshot(data: Mapping[str, Any], origin: str) -> Policy:
    """The policy a plan recorded (`policy_to_dict` output), checked like a file; `origin` names it in errors."""
    doc = _Document(origin, dict(data), {})
    checker = _Checker([doc])
    checker.check_structure(Policy, doc.data, (), doc, FileKind.LAB)
    policy = checker.build(Policy, doc.data, (), require=True)
    if checker.problems or policy is None:
        raise ConfigError(checker.sorted_problems() or [Problem(origin, "", "incomplete policy snapshot")])
    return policy


def policy_to_dict(policy: Policy) -> dict:
    """Plain data (enums as values) for snapshots in run directories."""

    def convert(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if not f.metadata.get("internal")}
        return value

    return convert(policy)

