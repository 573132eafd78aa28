"""The binary record format shared by scans, manifest shards and the catalog.

One record per filesystem entry: a fixed little-endian header then the path's exact bytes, stored as its sort key (any
byte but NUL: newlines, invalid UTF-8 and 4,000-byte paths round-trip unchanged). Files are streams of records compressed with zlib level 1
(gzip container; ISA-L's implementation when the `fast` extra is installed, see model/zlibs.py), streamed a chunk at a
time, so nothing ever holds a whole tree in memory: a reader holds one chunk of `read_chunk` bytes (1 MiB by default;
a k-way merge passes a smaller one, so that its memory is set by its budget, not by how many runs it merges).

Partitions: `directory_partition(parent, n)` spreads the directories over n partitions by a hash of the parent
directory's path; every entry of one directory lands in one partition, so scan runs, the catalog and the diff split
alike (`read_partition` streams one partition of a file without building the other partitions' entries).

Format 3 (written) adds each record's location: empty for a file stored as its own object (the key follows from the
path, model/keys.py), an encoded `model.packs.PackRef` for a file stored as a member of a pack. Formats 1 and 2 are
still read (location b"").

Records sort by `sort_key(path)`: the parent directory, then NUL, then the name, so that the direct children of a
directory are contiguous (small files of one directory stay together) and every writer and reader agrees on one order.
"""

from __future__ import annotations

import heapq
import os
import struct
from enum import Enum
from pathlib import Path
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Callable, Iterable, Iterator, NamedTuple

from . import zlibs

FORMAT_VERSION = 3
_MAGIC = b"FS3GREC3"
_MAGIC_V2 = b"FS3GREC2"  # before the location: still read (location b""), never written
_MAGIC_V1 = b"FS3GREC1"  # before the tree hash: still read, never written
# kind, size, mtime_ns, ctime_ns, atime_ns, mode, uid, gid, dev, ino, nlink, key length, hash length, location length
# (then the key, then the hash: empty in scans and shards, the 32-byte SHA-256 tree hash in the catalog; then the
# location: empty for a per-object file, `model.packs.PackRef.encode()` for a file stored in a pack)
_HEADER = struct.Struct("<BQqqqIIIQQIIBH")
_HEADER_V2 = struct.Struct("<BQqqqIIIQQIIB")
_HEADER_V1 = struct.Struct("<BQqqqIIIQQII")
_LENGTHS = struct.Struct("<IBH")  # the key, hash and location lengths: the last fields of _HEADER
_LENGTHS_AT = _HEADER.size - _LENGTHS.size
MAX_LOCATION_BYTES = (1 << 16) - 1
_COMPRESS_LEVEL = 1


class EntryKind(Enum):
    FILE = 1
    SYMLINK = 2
    DIRECTORY = 3
    SPECIAL = 4  # FIFO, socket, device: listed, never opened


class Entry(NamedTuple):
    """One filesystem entry as the scan saw it: a tuple, cheap to build and compare by the hundred million.

    The first field is the sort key (`sort_key(path)`), so that sorting and merging use `itemgetter(0)` at C speed;
    `path` is derived from it. Build one with `Entry.of(path, ...)` or `Entry.from_stat`.
    """

    key: bytes  # parent + NUL + name; reversible because names never hold NUL
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
    tree_hash: bytes = b""  # the SHA-256 tree hash of what was backed up (catalog records only)
    location: bytes = b""  # where the bytes are: b"" = the per-object key derived from the path; else a PackRef

    @classmethod
    def of(cls, path: bytes, kind: EntryKind, size_bytes: int, mtime_ns: int, ctime_ns: int, atime_ns: int,
           mode: int, uid: int, gid: int, dev: int, ino: int, nlink: int) -> "Entry":
        return _new(cls, (sort_key(path), kind, size_bytes, mtime_ns, ctime_ns, atime_ns, mode, uid, gid, dev, ino,
                          nlink, b"", b""))

    @classmethod
    def from_stat(cls, path: bytes, kind: EntryKind, st: os.stat_result) -> "Entry":
        return _new(cls, (sort_key(path), kind, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns,
                          st.st_mode, st.st_uid, st.st_gid, st.st_dev, st.st_ino, st.st_nlink, b"", b""))

    @property
    def path(self) -> bytes:
        return path_of(self.key)

    @property
    def directory(self) -> bytes:
        """The parent directory's path."""
        return self.key[:self.key.rfind(b"\0")]


# tuple.__new__ skips NamedTuple's Python-level __new__: the hot paths build millions of entries.
_new = tuple.__new__
by_key = itemgetter(0)


def sort_key(path: bytes) -> bytes:
    parent, _, name = path.rpartition(b"/")
    return parent + b"\0" + name


def path_of(key: bytes) -> bytes:
    cut = key.rfind(b"\0")
    return key[:cut] + b"/" + key[cut + 1:]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def display_path(path: bytes) -> str:
    """A path for one log or message line: UTF-8 shown as is, other bytes and control characters escaped."""
    return path.decode("utf-8", "backslashreplace").translate(_CONTROL)


def packed(entry: Entry) -> bool:
    """True when the entry's bytes live in a pack (its location is a `PackRef`), False for a per-object file."""
    return bool(entry[13])


def encode(entry: Entry) -> bytes:
    # `_value_` is a plain attribute; Enum's `value` is a descriptor call, measurable at 10^8 records.
    # struct raises for a location over MAX_LOCATION_BYTES ('H'), so no record is ever written truncated.
    return _HEADER.pack(entry[1]._value_, entry[2], entry[3], entry[4], entry[5], entry[6], entry[7], entry[8],
                        entry[9], entry[10], entry[11], len(entry[0]), len(entry[12]),
                        len(entry[13])) + entry[0] + entry[12] + entry[13]


_kind_values = attrgetter("_value_")


def encode_many(entries: list[Entry]) -> bytes:
    """`b"".join(map(encode, entries))`, built column by column so that the loop over entries runs in C (the
    per-entry Python call of `encode` is most of a plan's encoding time). Holds one column per field of `entries`."""
    if not entries:
        return b""
    (keys, kinds, sizes, mtimes, ctimes, atimes, modes, uids, gids, devs, inos, nlinks, hashes,
     locations) = zip(*entries)
    headers = map(_HEADER.pack, map(_kind_values, kinds), sizes, mtimes, ctimes, atimes, modes, uids, gids, devs,
                  inos, nlinks, map(len, keys), map(len, hashes), map(len, locations))
    return b"".join(chain.from_iterable(zip(headers, keys, hashes, locations)))


class RecordFormatError(ValueError):
    """A record file that is not ours, or is truncated."""


_BUFFERED_RECORDS = 4096  # records joined per compressor call: per-call overhead dominates small records
_READ_CHUNK = 1 << 20
_KINDS = {k.value: k for k in EntryKind}


class RecordWriter:
    """Append records to a new compressed file, created owner-only; `close()` makes it visible atomically."""

    def __init__(self, path: Path):
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        self._stream = zlibs.gzip_writer(self._raw, _COMPRESS_LEVEL)
        self._stream.write(_MAGIC)
        self._pending: list[Entry] = []
        self.count = 0

    def write(self, entry: Entry) -> None:
        self._pending.append(entry)
        self.count += 1
        if len(self._pending) >= _BUFFERED_RECORDS:
            self._drain()

    def write_many(self, entries: list[Entry]) -> None:
        self._drain()
        for i in range(0, len(entries), _BUFFERED_RECORDS):
            self._stream.write(encode_many(entries[i:i + _BUFFERED_RECORDS]))
        self.count += len(entries)

    def write_encoded(self, data: bytes, count: int) -> None:
        """Append `count` records already encoded (`encode`), in order after those written before."""
        self._drain()
        self._stream.write(data)
        self.count += count

    def _drain(self) -> None:
        if self._pending:
            self._stream.write(encode_many(self._pending))
            self._pending = []

    def close(self) -> None:
        self._drain()
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


def read_records(path: Path, read_chunk: int = _READ_CHUNK) -> Iterator[Entry]:
    """Stream the records of one file, in file order, decoding a chunk at a time (format 1, 2 or 3)."""
    where = str(path)
    with zlibs.gzip_open_read(path) as stream:
        magic = stream.read(len(_MAGIC))
        if magic == _MAGIC:
            yield from _read_v3(stream, where, read_chunk)
        elif magic in (_MAGIC_V2, _MAGIC_V1):
            yield from _read_old(stream, where, magic == _MAGIC_V1, read_chunk)
        else:
            raise RecordFormatError(f"{where}: not an fs3g record file (format {FORMAT_VERSION})")


def directory_partition(directory: bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) of every entry whose parent directory is `directory` (a stable hash)."""
    return zlibs.crc32(directory) % partitions if partitions > 1 else 0


def read_partition(path: Path, partition: int, partitions: int, read_chunk: int = _READ_CHUNK) -> Iterator[Entry]:
    """The records of `path` whose parent directory is in `partition` (of `partitions`), in file order.

    Entries of other partitions are skipped by their key alone; the hash is computed once per directory, which a
    sorted file keeps contiguous (an unsorted one costs one hash per change of directory, and still filters right)."""
    if partitions <= 1:
        yield from read_records(path, read_chunk)
        return
    where = str(path)
    with zlibs.gzip_open_read(path) as stream:
        magic = stream.read(len(_MAGIC))
        if magic != _MAGIC:
            stream.close()
            yield from filter_partition(read_records(path, read_chunk), partition, partitions)
            return
        kinds = _KINDS
        unpack_from, header_size = _HEADER.unpack_from, _HEADER.size
        lengths_from, lengths_at = _LENGTHS.unpack_from, _LENGTHS_AT
        crc32 = zlibs.crc32
        prefix, keep = b"\0\0", False  # no key starts with two NULs
        buffer = b""
        while True:
            chunk = stream.read(read_chunk)
            if not chunk:
                if buffer:
                    raise RecordFormatError(f"{where}: truncated record stream")
                return
            buffer = buffer + chunk if buffer else chunk
            chunk = b""  # the chunk lives on in `buffer` only: one copy per open reader, not two
            pos, end = 0, len(buffer)
            while pos + header_size <= end:
                n, h, l = lengths_from(buffer, pos + lengths_at)
                key_start = pos + header_size
                key_end = key_start + n
                stop = key_end + h + l
                if stop > end:
                    break
                if not buffer.startswith(prefix, key_start, key_end):
                    cut = buffer.rfind(b"\0", key_start, key_end)
                    if cut < 0:
                        raise RecordFormatError(f"{where}: record key without a directory")
                    prefix = buffer[key_start:cut + 1]
                    keep = crc32(prefix[:-1]) % partitions == partition
                if keep:
                    (kind, size, mtime, ctime, atime, mode, uid, gid, dev, ino,
                     nlink) = unpack_from(buffer, pos)[:11]
                    try:
                        kind_enum = kinds[kind]
                    except KeyError:
                        raise RecordFormatError(f"{where}: unknown entry kind {kind}") from None
                    hash_end = key_end + h
                    yield _new(Entry, (buffer[key_start:key_end], kind_enum, size, mtime, ctime, atime, mode, uid,
                                       gid, dev, ino, nlink, buffer[key_end:hash_end] if h else b"",
                                       buffer[hash_end:stop] if l else b""))
                pos = stop
            buffer = buffer[pos:]


def filter_partition(entries: Iterable[Entry], partition: int, partitions: int) -> Iterator[Entry]:
    """The entries of `entries` whose parent directory is in `partition` (one hash per change of directory)."""
    prefix, keep = b"\0\0", False
    crc32 = zlibs.crc32
    for entry in entries:
        key = entry[0]
        if not key.startswith(prefix):
            prefix = key[:key.rfind(b"\0") + 1]
            keep = crc32(prefix[:-1]) % partitions == partition
        if keep:
            yield entry


def decode_records(data: bytes, where: str) -> list[Entry]:
    """The records of `data`, a whole number of records as `encode` writes them (format 3)."""
    entries = list(_decode_v3(data, where))
    return entries


def _decode_v3(buffer: bytes, where: str) -> Iterator[Entry]:
    kinds = _KINDS
    unpack_from, header_size = _HEADER.unpack_from, _HEADER.size
    pos, end = 0, len(buffer)
    while pos < end:
        if pos + header_size > end:
            raise RecordFormatError(f"{where}: truncated record")
        kind, size, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink, n, h, l = unpack_from(buffer, pos)
        key_end = pos + header_size + n
        hash_end = key_end + h
        stop = hash_end + l
        if stop > end:
            raise RecordFormatError(f"{where}: truncated record")
        try:
            kind_enum = kinds[kind]
        except KeyError:
            raise RecordFormatError(f"{where}: unknown entry kind {kind}") from None
        yield _new(Entry, (buffer[pos + header_size:key_end], kind_enum, size, mtime, ctime, atime, mode, uid,
                           gid, dev, ino, nlink, buffer[key_end:hash_end] if h else b"",
                           buffer[hash_end:stop] if l else b""))
        pos = stop


def _read_v3(stream, where: str, read_chunk: int = _READ_CHUNK) -> Iterator[Entry]:
    kinds = _KINDS
    unpack_from, header_size = _HEADER.unpack_from, _HEADER.size
    buffer = b""
    while True:
        chunk = stream.read(read_chunk)
        if not chunk:
            if buffer:
                raise RecordFormatError(f"{where}: truncated record stream")
            return
        buffer = buffer + chunk if buffer else chunk
        chunk = b""  # the chunk lives on in `buffer` only: one copy per open reader, not two
        pos, end = 0, len(buffer)
        while pos + header_size <= end:
            kind, size, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink, n, h, l = unpack_from(buffer, pos)
            key_end = pos + header_size + n
            hash_end = key_end + h
            stop = hash_end + l
            if stop > end:
                break
            try:
                kind_enum = kinds[kind]
            except KeyError:
                raise RecordFormatError(f"{where}: unknown entry kind {kind}") from None
            yield _new(Entry, (buffer[pos + header_size:key_end], kind_enum, size, mtime, ctime, atime, mode, uid,
                               gid, dev, ino, nlink, buffer[key_end:hash_end] if h else b"",
                               buffer[hash_end:stop] if l else b""))
            pos = stop
        buffer = buffer[pos:]


def _read_old(stream, where: str, v1: bool, read_chunk: int = _READ_CHUNK) -> Iterator[Entry]:
    """Formats 1 (no tree hash) and 2 (no location): every location is b""."""
    kinds = _KINDS
    header = _HEADER_V1 if v1 else _HEADER_V2
    unpack_from, header_size = header.unpack_from, header.size
    buffer = b""
    while True:
        chunk = stream.read(read_chunk)
        if not chunk:
            if buffer:
                raise RecordFormatError(f"{where}: truncated record stream")
            return
        buffer = buffer + chunk if buffer else chunk
        chunk = b""  # the chunk lives on in `buffer` only: one copy per open reader, not two
        pos, end = 0, len(buffer)
        while pos + header_size <= end:
            if v1:
                kind, size, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink, n = unpack_from(buffer, pos)
                h = 0
            else:
                kind, size, mtime, ctime, atime, mode, uid, gid, dev, ino, nlink, n, h = unpack_from(buffer, pos)
            key_end = pos + header_size + n
            stop = key_end + h
            if stop > end:
                break
            try:
                kind_enum = kinds[kind]
            except KeyError:
                raise RecordFormatError(f"{where}: unknown entry kind {kind}") from None
            yield _new(Entry, (buffer[pos + header_size:key_end], kind_enum, size, mtime, ctime, atime, mode, uid,
                               gid, dev, ino, nlink, buffer[key_end:stop] if h else b"", b""))
            pos = stop
        buffer = buffer[pos:]


def write_records(path: Path, entries: Iterable[Entry]) -> int:
    with RecordWriter(path) as writer:
        for entry in entries:
            writer.write(entry)
        return writer.count


KeyFn = Callable[[Entry], bytes]


# What one k-way merge holds in read chunks, whatever k is (each reader gets its share, at most 1 MiB, at least
# MIN_MERGE_CHUNK): 8 MiB from 8 runs up to the default fan-in of 64, plus per run its reader's ~150 KiB of input
# and decompressor state (zlibs.GzipReader).
MERGE_BUFFER_BYTES = 8 * 1024 * 1024
MIN_MERGE_CHUNK = 128 * 1024


def merge_chunk(streams: int) -> int:
    """The read chunk of each of `streams` files merged at once."""
    return max(MIN_MERGE_CHUNK, min(_READ_CHUNK, MERGE_BUFFER_BYTES // max(1, streams)))


def merge_sorted(paths: Iterable[Path], key: KeyFn = by_key) -> Iterator[Entry]:
    """One sorted stream from several sorted record files (open files = len(paths); see `merge_runs`); the read
    chunks together stay near MERGE_BUFFER_BYTES."""
    paths = list(paths)
    if len(paths) == 1:
        return read_records(paths[0])
    chunk = merge_chunk(len(paths))
    return heapq.merge(*(read_records(p, chunk) for p in paths), key=key)


def merge_runs(paths: list[Path], work_dir: Path, key: KeyFn = by_key, fan_in: int = 64) -> list[Path]:
    """Merge sorted runs in groups until at most `fan_in` remain, bounding open files and memory per merge."""
    level = 0
    while len(paths) > fan_in:
        merged: list[Path] = []
        for i in range(0, len(paths), fan_in):
            group = paths[i:i + fan_in]
            out = work_dir / f"{group[0].stem}-m{level}-{i // fan_in}.rec"
            write_records(out, merge_sorted(group, key))
            for p in group:
                p.unlink()
            merged.append(out)
        paths = merged
        level += 1
    return paths


class RunSpiller:
    """External sort, first half: buffer at most `run_records` entries, then write them sorted as a run file.

    Memory ≈ run_records × ~300 bytes. `sorted_stream(spiller.finish(), ...)` is the second half.
    """

    def __init__(self, work_dir: Path, tag: str, run_records: int, key: KeyFn = by_key):
        self.work_dir = work_dir
        self.tag = tag
        self.run_records = run_records
        self.key = key
        self.buffer: list[Entry] = []
        self.runs: list[Path] = []

    def add(self, entry: Entry) -> None:
        self.buffer.append(entry)
        if len(self.buffer) >= self.run_records:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        self.buffer.sort(key=self.key)
        path = self.work_dir / f"run-{self.tag}-{len(self.runs):05d}.rec"
        with RecordWriter(path) as writer:
            writer.write_many(self.buffer)
        self.runs.append(path)
        self.buffer = []

    def finish(self) -> list[Path]:
        self.flush()
        return self.runs

    def sorted(self) -> Iterator[Entry]:
        """Every entry added, in key order: from memory when they fit in one run (never written: the buffer is there
        anyway), else merged from the run files (sorted_stream)."""
        if not self.runs:
            return iter(self.take_sorted())
        return sorted_stream(self.finish(), self.work_dir, self.key)

    def take_sorted(self) -> list[Entry]:
        """The buffered entries, sorted, without writing them (the caller keeps them instead of a run file)."""
        entries, self.buffer = self.buffer, []
        entries.sort(key=self.key)
        return entries


def sorted_stream(runs: list[Path], work_dir: Path, key: KeyFn = by_key, fan_in: int = 64) -> Iterator[Entry]:
    """External sort, second half: every entry of `runs` in `key` order, with at most `fan_in` files open."""
    return merge_sorted(merge_runs(runs, work_dir, key, fan_in), key)


# -- hard links --------------------------------------------------------------------------------------------------------

def hard_link_identity(entry: Entry) -> tuple[int, int, int, int, bytes]:
    """What makes two catalog records links of one file: the inode, and the same size, mtime and tree hash (a
    record left from an inode number since reused for another file then never passes for a link of it)."""
    return entry.dev, entry.ino, entry.size_bytes, entry.mtime_ns, entry.tree_hash


def hard_link_sort_key(entry: Entry) -> bytes:
    """Sorts the members of one link group together (by `hard_link_identity`), then by path."""
    return struct.pack(">QQQQB", entry.dev, entry.ino, entry.size_bytes, entry.mtime_ns + (1 << 63),
                       len(entry.tree_hash)) + entry.tree_hash + entry.key


def group_hard_links(entries: Iterable[Entry],
                     identity: Callable[[Entry], object] = hard_link_identity) -> Iterator[list[Entry]]:
    """Consecutive entries of one `identity`, as lists: the link groups of a stream sorted so that they are
    contiguous. Holds one group at a time."""
    group: list[Entry] = []
    current: object = None
    for entry in entries:
        mark = identity(entry)
        if group and mark != current:
            yield group
            group = []
        group.append(entry)
        current = mark
    if group:
        yield group
