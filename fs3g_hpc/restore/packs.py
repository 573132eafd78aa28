"""Reading packed files back: which byte ranges of a pack to GET for the members a shard wants, and the members read
one by one from those streams, each checked before a byte of it is kept.

Layout read (model/packs.py): a pack `packs/<run_id>/<shard>-<n>.tar` is a pax tar; a catalog record's location (a
PackRef) says where its member's headers start (`header_offset`) and where its data starts and ends (`data_offset`,
`data_offset + size`).

Requests: per pack, the wanted members sorted by offset, coalesced into ranged GETs of [header_offset, data_end):
ranges less than COALESCE_GAP_BYTES apart are merged into one; when the wanted bytes are more than half the pack
(its size known from a listing), one GET of the whole span, first wanted header to last wanted byte. Ranges after the
first pass the first one's ETag (IfMatch): one version of the pack.

Checks, per member (`check_member`), before its data is renamed into place by restore/task.py and
restore/destination.py: the headers parse (model/packs.parse_member_header: checksums, lengths, numbers) and are
exactly `data_offset - header_offset` bytes long; the header's path equals the expected one (the catalog's, or the
index's); its type is the expected one (a file or a symlink, never a hard-link member: the data of a hard link is read
at its first link's member); its size is the recorded size; and, once the data has streamed through, its SHA-256
equals the header's FS3G.sha256 and the recorded tree hash (`verify_data`). A member that fails is a MemberError,
typed CORRUPT (the bytes are not what was written) or MISMATCH (the catalog or index and the pack disagree); the
reader then moves on to the next member from the recorded offsets.

Memory: at most MAX_HEADER_BYTES for one member's headers plus READ_BYTES of data in flight, whatever the span's
length: a span is parsed from the stream member by member, never read whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Iterator, Protocol

from ..model.packs import MemberInfo, MemberType, PackFormatError, PackRef, parse_member_header
from ..model.records import Entry, EntryKind, display_path
from ..model.treehash import LEAF_BYTES, TreeHasher

COALESCE_GAP_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024  # pax + ustar headers of one member: paths and link targets are at most 4 KiB each
READ_BYTES = 1024 * 1024


class MemberFault(str, Enum):
    CORRUPT = "corrupt"  # the pack's bytes are not what was written (headers unreadable, SHA-256 differs)
    MISMATCH = "mismatch"  # the pack holds another member there than the catalog (or the index) says


class MemberError(Exception):
    def __init__(self, fault: MemberFault, message: str):
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True)
class Wanted:
    """One member to read: where it is, and the entries its data becomes (usually one). The member must carry the
    name of one of them; a hard link (nlink > 1 in its record) may find its data under another link's name, the one
    the pack holds it under (its data is then identified by its SHA-256 alone)."""

    ref: PackRef
    entries: tuple[Entry, ...]

    def names_member(self, path: bytes) -> bool:
        return any(e.path == path for e in self.entries) or any(e.nlink > 1 for e in self.entries)

    @property
    def expected_path(self) -> bytes:
        return self.entries[0].path


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    members: tuple[Wanted, ...]

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_spans(wanted: Iterable[Wanted], pack_bytes: int | None = None,
               gap_bytes: int = COALESCE_GAP_BYTES) -> list[Span]:
    """The ranged GETs for the wanted members of one pack (pure): members by offset, ranges closer than `gap_bytes`
    joined; when the wanted bytes pass half of `pack_bytes`, one span from the first to the last."""
    members = sorted(wanted, key=lambda w: w.ref.header_offset)
    if not members:
        return []
    total = sum(w.ref.data_end - w.ref.header_offset for w in members)
    if pack_bytes and total * 2 > pack_bytes:
        return [Span(members[0].ref.header_offset, max(w.ref.data_end for w in members), tuple(members))]
    spans: list[Span] = []
    start, end, group = members[0].ref.header_offset, members[0].ref.data_end, [members[0]]
    for w in members[1:]:
        if w.ref.header_offset - end < gap_bytes:
            end = max(end, w.ref.data_end)
            group.append(w)
        else:
            spans.append(Span(start, end, tuple(group)))
            start, end, group = w.ref.header_offset, w.ref.data_end, [w]
    spans.append(Span(start, end, tuple(group)))
    return spans


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...


class SpanReader:
    """The bytes of one span, from its stream, by absolute pack offset: skip forward, read exactly, or stream a
    length in pieces. Holds at most one piece."""

    def __init__(self, stream: Readable, start: int, end: int, where: str):
        self.stream, self.pos, self.end, self.where = stream, start, end, where

    def _read(self, size: int) -> bytes:
        piece = self.stream.read(min(size, self.end - self.pos))
        if not piece:
            raise MemberError(MemberFault.CORRUPT, f"{self.where}: the pack ends at {self.pos}, before {self.end}")
        self.pos += len(piece)
        return piece

    def skip_to(self, offset: int) -> None:
        if offset < self.pos:
            raise MemberError(MemberFault.MISMATCH, f"{self.where}: members overlap at {offset}")
        while self.pos < offset:
            self._read(min(READ_BYTES, offset - self.pos))

    def exactly(self, size: int) -> bytes:
        pieces = []
        while size:
            piece = self._read(size)
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def pieces(self, size: int) -> Iterator[bytes]:
        while size:
            piece = self._read(min(size, READ_BYTES))
            size -= len(piece)
            yield piece


def read_header(reader: SpanReader, w: Wanted, where: str) -> MemberInfo:
    """The member's headers at `w.ref.header_offset`, parsed and checked against what the catalog (or the index)
    recorded; the reader is left at its data."""
    ref = w.ref
    length = ref.data_offset - ref.header_offset
    reader.skip_to(ref.header_offset)
    if length <= 0 or length > MAX_HEADER_BYTES or length % 512:
        raise MemberError(MemberFault.MISMATCH, f"{where}: recorded headers of {length} bytes at {ref.header_offset}")
    data = reader.exactly(length)
    try:
        info, used = parse_member_header(data, f"{where} at {ref.header_offset}")
    except PackFormatError as e:
        raise MemberError(MemberFault.CORRUPT, str(e)) from e
    if used != length:
        raise MemberError(MemberFault.MISMATCH, f"{where}: the headers at {ref.header_offset} are {used} bytes, "
                                                f"the record says {length}")
    check_member(info, w, where)
    return info


def check_member(info: MemberInfo, w: Wanted, where: str) -> None:
    """The member is the one recorded: same name, type and size (MISMATCH otherwise)."""
    entry = w.entries[0]
    if not w.names_member(info.path):
        raise MemberError(MemberFault.MISMATCH, f"{where} at {w.ref.header_offset} holds "
                                                f"{display_path(info.path)}, not {display_path(w.expected_path)}")
    expected = MemberType.SYMLINK if entry.kind is EntryKind.SYMLINK else MemberType.FILE
    if info.type is not expected:
        raise MemberError(MemberFault.MISMATCH, f"{where} at {w.ref.header_offset}: a {info.type.name.lower()} "
                                                f"member, expected a {expected.name.lower()}")
    if info.type is MemberType.FILE and (info.size_bytes != w.ref.size_bytes or info.size_bytes != entry.size_bytes):
        raise MemberError(MemberFault.MISMATCH, f"{where} at {w.ref.header_offset}: {info.size_bytes} bytes, the "
                                                f"record says {entry.size_bytes}")
    if info.type is MemberType.FILE and not info.sha256:
        raise MemberError(MemberFault.CORRUPT, f"{where} at {w.ref.header_offset}: no FS3G.sha256 in its header")


class DataHash:
    """SHA-256 and the SHA-256 tree hash of a member's data as it streams (one digest when it is a single leaf)."""

    def __init__(self, size: int):
        self.sha = hashlib.sha256()
        self.tree = TreeHasher() if size > LEAF_BYTES else None

    def update(self, piece: bytes) -> None:
        self.sha.update(piece)
        if self.tree is not None:
            self.tree.update(piece)

    def verify(self, info: MemberInfo, entry: Entry, where: str) -> None:
        """CORRUPT unless the data's SHA-256 is the header's FS3G.sha256 and its tree hash the recorded one."""
        sha = self.sha.hexdigest()
        tree = self.tree.hexdigest() if self.tree is not None else sha
        if sha != info.sha256:
            raise MemberError(MemberFault.CORRUPT, f"{where}: SHA-256 of {display_path(info.path)} is {sha}, its "
                                                   f"header says {info.sha256}; not restored")
        if entry.tree_hash and entry.tree_hash.hex() != tree:
            raise MemberError(MemberFault.CORRUPT, f"{where}: tree hash of {display_path(info.path)} is {tree}, "
                                                   f"the record says {entry.tree_hash.hex()}; not restored")


def symlink_hash(target: bytes) -> str:
    """The tree hash a symlink's record carries: that of its target's bytes."""
    hasher = TreeHasher()
    hasher.update(target)
    return hasher.hexdigest()
