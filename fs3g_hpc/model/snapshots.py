"""Catalog snapshots in the bucket: names, keys and the manifest's format. Pure rules, no I/O.

    [PREFIX/]catalog/<snapshot-id>/chunk-NNNNNN.rec.gz   the catalog's record stream (model/records.py), cut into
                                                         chunks of at most `snapshots.chunk_bytes` of records; each
                                                         chunk is a complete record file (gzip, magic, records)
    [PREFIX/]catalog/<snapshot-id>/manifest.json         written last: a snapshot without it is no snapshot

A snapshot id is `<UTC %Y%m%dT%H%M%SZ>-<8 hex>`: ids sort by time, and two merges in one second still differ.
The manifest (SnapshotManifest) records the time, the lab, the policy's roots, the counts, whether the bucket was
versioned, the tool version, and per chunk its name, entries, size, SHA-256 and first path (encode_path form).
Optional `supersedes: <id>` (written by pack compaction, prune/compact.py): this snapshot is that one's records with
some packed members' locations moved to new packs; retention (model/retention.py) forgets the superseded one. Code
that predates the field reads it as an unknown key (kept in `extra`), so old and new code read both.
Names read from a bucket are untrusted: `parse_snapshot_id` and `SnapshotManifest.from_json` check every field.
Memory: a manifest holds one small line per chunk (200 M entries at 64 MiB per chunk: a few hundred lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import UsageError

SNAPSHOT_DIR = "catalog"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fs3g-snapshot"
MANIFEST_VERSION = 1
MANIFEST_MAX_BYTES = 64 * 1024 * 1024  # never read more of a manifest than this (it is one line per chunk)
_ID = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{8})")
_CHUNK = re.compile(r"chunk-(\d{6})\.rec\.gz")
_SHA = re.compile(r"[0-9a-f]{64}")
_STAMP = "%Y%m%dT%H%M%SZ"


class SnapshotError(UsageError):
    """A snapshot that is malformed, incomplete or fails its checksums (the message names the key)."""


def new_snapshot_id(now: datetime, suffix: str) -> str:
    """`<UTC stamp>-<suffix>`; `suffix` is 8 lower-case hex characters (random, from the caller)."""
    sid = f"{now.astimezone(timezone.utc).strftime(_STAMP)}-{suffix}"
    parse_snapshot_id(sid)
    return sid


def parse_snapshot_id(text: str) -> str:
    if _ID.fullmatch(text) is None:
        raise SnapshotError(f"not a snapshot id: {text!r} (expected YYYYMMDDTHHMMSSZ-xxxxxxxx)")
    return text


def is_snapshot_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def snapshot_time(sid: str) -> datetime:
    match = _ID.fullmatch(sid)
    if match is None:
        raise SnapshotError(f"not a snapshot id: {sid!r}")
    return datetime.strptime(match.group(1), _STAMP).replace(tzinfo=timezone.utc)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def snapshots_prefix(prefix: str) -> str:
    """The key prefix all snapshots of a lab are under, ending in `/`."""
    return _join(prefix, SNAPSHOT_DIR) + "/"


def snapshot_prefix(prefix: str, sid: str) -> str:
    return _join(prefix, SNAPSHOT_DIR, parse_snapshot_id(sid)) + "/"


def chunk_name(n: int) -> str:
    return f"chunk-{n:06d}.rec.gz"


def chunk_key(prefix: str, sid: str, name: str) -> str:
    if _CHUNK.fullmatch(name) is None:
        raise SnapshotError(f"not a chunk name: {name!r}")
    return snapshot_prefix(prefix, sid) + name


def manifest_key(prefix: str, sid: str) -> str:
    return snapshot_prefix(prefix, sid) + MANIFEST_NAME


def select_snapshot(ids: list[str], as_of: str | None) -> str | None:
    """The snapshot a command uses: the newest (as_of None), the one named, or the newest at or before a time
    (ISO 8601, a date, or a snapshot-id stamp). None when there is none."""
    ids = sorted(i for i in ids if is_snapshot_id(i))
    if as_of is None:
        return ids[-1] if ids else None
    if is_snapshot_id(as_of):
        return as_of if as_of in ids else None
    when = parse_as_of(as_of)
    before = [i for i in ids if snapshot_time(i) <= when]
    return before[-1] if before else None


def parse_as_of(text: str) -> datetime:
    """A point in time for --as-of: ISO 8601 (`2026-12-01`, `2026-12-01T12:00`, with or without a zone; UTC when
    none) or a stamp `20261201T120000Z`."""
    t = text.strip()
    try:
        if re.fullmatch(r"\d{8}T\d{6}Z", t):
            return datetime.strptime(t, _STAMP).replace(tzinfo=timezone.utc)
        value = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {text!r}: not a time or snapshot id",
                         hint="give a snapshot id from `fs3g snapshots`, or a time such as 2026-12-01T12:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    if not re.search(r"T\d", t) and len(t) == 10:  # a date alone: the end of that day
        value = value.replace(hour=23, minute=59, second=59)
    return value


@dataclass(frozen=True)
class ChunkInfo:
    name: str
    entries: int
    size_bytes: int  # the compressed object's size
    sha256: str
    first_path: str  # encode_path form of the chunk's first record, "" for an empty catalog's only chunk

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "entries": self.entries, "size": self.size_bytes, "sha256": self.sha256,
                "first": self.first_path}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ChunkInfo":
        if not isinstance(data, dict):
            raise SnapshotError(f"{where}: a chunk line is not an object")
        name, sha = data.get("name"), data.get("sha256")
        if not isinstance(name, str) or _CHUNK.fullmatch(name) is None:
            raise SnapshotError(f"{where}: bad chunk name {name!r}")
        if not isinstance(sha, str) or _SHA.fullmatch(sha) is None:
            raise SnapshotError(f"{where}: chunk {name}: bad sha256")
        entries, size = data.get("entries"), data.get("size")
        for label, value in (("entries", entries), ("size", size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SnapshotError(f"{where}: chunk {name}: bad {label} {value!r}")
        first = data.get("first", "")
        if not isinstance(first, str):
            raise SnapshotError(f"{where}: chunk {name}: bad first path")
        return cls(name, entries, size, sha, first)


@dataclass(frozen=True)
class SnapshotCounts:
    files: int = 0
    file_bytes: int = 0
    symlinks: int = 0
    directories: int = 0
    entries: int = 0

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.file_bytes, "symlinks": self.symlinks,
                "directories": self.directories, "entries": self.entries}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "SnapshotCounts":
        if not isinstance(data, dict):
            raise SnapshotError(f"{where}: counts is not an object")
        values = {}
        for name, attr in (("files", "files"), ("bytes", "file_bytes"), ("symlinks", "symlinks"),
                           ("directories", "directories"), ("entries", "entries")):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SnapshotError(f"{where}: counts.{name} is {value!r}")
            values[attr] = value
        return cls(**values)


@dataclass(frozen=True)
class SnapshotManifest:
    """manifest.json: what a snapshot is. Written last; read as untrusted input."""

    snapshot_id: str
    created: str  # ISO 8601 UTC
    lab: str
    roots: tuple[str, ...]
    counts: SnapshotCounts
    chunks: tuple[ChunkInfo, ...]
    tool_version: str
    versioned: bool
    record_format: int
    run_id: str = ""  # the run directory whose merge wrote it ("" for a rebuild)
    source: str = "merge"  # merge | rebuild | compact
    supersedes: str = ""  # the snapshot this one replaces (pack compaction), "" for none
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "snapshot_id": self.snapshot_id,
                "created": self.created, "lab": self.lab, "roots": list(self.roots), "counts": self.counts.to_json(),
                "tool_version": self.tool_version, "versioned": self.versioned, "record_format": self.record_format,
                "run": self.run_id, "source": self.source, "chunks": [c.to_json() for c in self.chunks],
                **({"supersedes": self.supersedes} if self.supersedes else {}), **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "SnapshotManifest":
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise SnapshotError(f"{where}: not an fs3g snapshot manifest")
        if data.get("version") != MANIFEST_VERSION:
            raise SnapshotError(f"{where}: snapshot manifest version {data.get('version')!r} is not "
                                f"{MANIFEST_VERSION}", hint="upgrade fs3g-hpc to read it")
        sid = data.get("snapshot_id")
        if not isinstance(sid, str) or not is_snapshot_id(sid):
            raise SnapshotError(f"{where}: bad snapshot_id {sid!r}")
        chunks = data.get("chunks")
        if not isinstance(chunks, list) or not chunks:
            raise SnapshotError(f"{where}: no chunk list")
        parsed = tuple(ChunkInfo.from_json(c, where) for c in chunks)
        if [c.name for c in parsed] != [chunk_name(i) for i in range(len(parsed))]:
            raise SnapshotError(f"{where}: chunks are not numbered 0..{len(parsed) - 1}")
        roots = data.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise SnapshotError(f"{where}: bad roots")
        counts = SnapshotCounts.from_json(data.get("counts"), where)
        if sum(c.entries for c in parsed) != counts.entries:
            raise SnapshotError(f"{where}: chunk entries do not add up to counts.entries")
        supersedes = data.get("supersedes", "")
        if not isinstance(supersedes, str) or (supersedes and (not is_snapshot_id(supersedes) or supersedes == sid)):
            raise SnapshotError(f"{where}: bad supersedes {supersedes!r}")
        known = {"format", "version", "snapshot_id", "created", "lab", "roots", "counts", "tool_version",
                 "versioned", "record_format", "run", "source", "chunks", "supersedes"}
        return cls(sid, str(data.get("created", "")), str(data.get("lab", "")), tuple(roots), counts, parsed,
                   str(data.get("tool_version", "")), bool(data.get("versioned", False)),
                   int(data.get("record_format", 0)), str(data.get("run", "")), str(data.get("source", "merge")),
                   supersedes, {k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class CatalogOrigin:
    """`<run_root>/<lab>/catalog-snapshot.json`: the snapshot the local catalog is (written by the merge that wrote
    both, or by the planner that downloaded it), and the catalog file's size then, so a truncated file shows."""

    snapshot_id: str
    catalog_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "catalog_bytes": self.catalog_bytes}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "CatalogOrigin":
        if not isinstance(data, dict) or not is_snapshot_id(str(data.get("snapshot_id", ""))) or \
                not isinstance(data.get("catalog_bytes"), int):
            raise SnapshotError(f"{where}: not a catalog origin record")
        return cls(data["snapshot_id"], data["catalog_bytes"])


@dataclass(frozen=True)
class AsOf:
    """A restore's point in time (restore.json "as_of"): the snapshot it selected from, when that snapshot was
    written, and whether the bucket kept older versions then. A per-object file is the snapshot's version when the
    bucket's object is no newer than `created` and has the recorded size; otherwise, with versioning, the newest
    version at or before `created` is read (GetObject VersionId); without, the file can no longer be restored as of
    this time."""

    snapshot_id: str
    created: str  # the manifest's ISO 8601 UTC time
    versioned: bool

    @property
    def created_s(self) -> float:
        return datetime.fromisoformat(self.created).timestamp()

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "created": self.created, "versioned": self.versioned}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "AsOf":
        if not isinstance(data, dict) or not is_snapshot_id(str(data.get("snapshot", ""))) or \
                not isinstance(data.get("created"), str) or not isinstance(data.get("versioned"), bool):
            raise SnapshotError(f"{where}: bad as_of {data!r}")
        try:
            datetime.fromisoformat(data["created"])
        except ValueError:
            raise SnapshotError(f"{where}: as_of.created {data['created']!r} is not a time") from None
        return cls(data["snapshot"], data["created"], data["versioned"])

    @classmethod
    def of(cls, manifest: SnapshotManifest) -> "AsOf":
        return cls(manifest.snapshot_id, manifest.created, manifest.versioned)
