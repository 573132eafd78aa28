"""The binary record format shared by scans, manifest shards and the catalog.

One record per filesystem entry: a fixed little-endian header then the path's exact bytes (any byte but NUL: newlines,
invalid UTF-8 and 4,000-byte paths round-trip unchanged). Files are streams of records compressed with zlib level 1
(gzip container), read and written one record at a time, so nothing ever holds a whole tree in memory.

Records sort by `sort_key(path)`: the parent directory, then NUL, then the name, so that the direct children of a
directory are contiguous (small files of one directory stay together) and every writer and reader agrees on one order.
"""

from __future__ import annotations

import gzip
import heapq
import os
import struct
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

FORMAT_VERSION = 1
_MAGIC = b"FS3GREC1"
# kind, size, mtime_ns, ctime_ns, atime_ns, mode, uid, gid, dev, ino, nlink, path length
_HEADER = struct.Struct("<BQqqqIIIQQII")
_COMPRESS_LEVEL = 1


class EntryKind(Enum):
    FILE = 1
    SYMLINK = 2
    DIRECTORY = 3
    SPECIAL = 4  # FIFO, socket, device: listed, never opened


@dataclass(frozen=True, slots=True)
class Entry:
    path: bytes  # absolute, exact bytes
    kind: EntryKind
    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    mode: int
    uid: int
    gid: int
    dev: int
    ino: int
    nlink: int

    @classmethod
    def from_stat(cls, path: bytes, kind: EntryKind, st: os.stat_result) -> "Entry":
        return cls(path, kind, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns, st.st_mode, st.st_uid,
                   st.st_gid, st.st_dev, st.st_ino, st.st_nlink)

    @property
    def key(self) -> bytes:
        return sort_key(self.path)


def sort_key(path: bytes) -> bytes:
    parent, _, name = path.rpartition(b"/")
    return parent + b"\0" + name


def encode(entry: Entry) -> bytes:
    return _HEADER.pack(entry.kind.value, entry.size_bytes, entry.mtime_ns, entry.ctime_ns, entry.atime_ns,
                        entry.mode, entry.uid, entry.gid, entry.dev, entry.ino, entry.nlink,
                        len(entry.path)) + entry.path


def _read_exact(stream: BinaryIO, n: int, where: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise RecordFormatError(f"{where}: truncated record stream")
    return data


class RecordFormatError(ValueError):
    """A record file that is not ours, or is truncated."""


def _check_magic(stream: BinaryIO, where: str) -> None:
    if stream.read(len(_MAGIC)) != _MAGIC:
        raise RecordFormatError(f"{where}: not an fs3g record file (format {FORMAT_VERSION})")


class RecordWriter:
    """Append records to a new compressed file, created owner-only; `close()` makes it visible atomically."""

    def __init__(self, path: Path):
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        self._stream = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=_COMPRESS_LEVEL, mtime=0)
        self._stream.write(_MAGIC)
        self.count = 0

    def write(self, entry: Entry) -> None:
        self._stream.write(encode(entry))
        self.count += 1

    def write_encoded(self, encoded: list[bytes]) -> None:
        self._stream.write(b"".join(encoded))
        self.count += len(encoded)

    def close(self) -> None:
        self._stream.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._stream.close()
        self._raw.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_records(path: Path) -> Iterator[Entry]:
    """Stream the records of one file, in file order."""
    where = str(path)
    with gzip.open(path, "rb") as stream:
        _check_magic(stream, where)  # type: ignore[arg-type]
        size = _HEADER.size
        while True:
            head = stream.read(size)
            if not head:
                return
            if len(head) != size:
                raise RecordFormatError(f"{where}: truncated record stream")
            kind, size_bytes, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink, n = _HEADER.unpack(head)
            entry_path = _read_exact(stream, n, where)  # type: ignore[arg-type]
            yield Entry(entry_path, EntryKind(kind), size_bytes, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink)


_BATCH = 4096  # records joined per compressor call: per-call overhead dominates small records


def write_records(path: Path, entries: Iterable[Entry]) -> int:
    with RecordWriter(path) as writer:
        batch: list[bytes] = []
        for entry in entries:
            batch.append(encode(entry))
            if len(batch) >= _BATCH:
                writer.write_encoded(batch)
                batch = []
        writer.write_encoded(batch)
        return writer.count


def merge_sorted(paths: Iterable[Path]) -> Iterator[Entry]:
    """One sorted stream from several sorted record files (open files = len(paths); see `merge_runs`)."""
    return heapq.merge(*(read_records(p) for p in paths), key=lambda e: e.key)


def merge_runs(paths: list[Path], work_dir: Path, fan_in: int = 64) -> list[Path]:
    """Merge sorted runs in groups until at most `fan_in` remain, bounding open files and memory per merge."""
    level = 0
    while len(paths) > fan_in:
        merged: list[Path] = []
        for i in range(0, len(paths), fan_in):
            group = paths[i:i + fan_in]
            out = work_dir / f"merge-{level}-{i // fan_in}.rec"
            write_records(out, merge_sorted(group))
            for p in group:
                p.unlink()
            merged.append(out)
        paths = merged
        level += 1
    return paths
