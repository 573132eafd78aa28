"""Packs: small files and symlinks as members of plain POSIX (pax) tar objects, each with an index beside it.

Keys, under the lab prefix beside smallfile/ largefile/ symlinks/ (model/keys.py):

    [PREFIX/]packs/<run_id>/<shard:06d>-<n:05d>.tar       the pack (storage.pack_storage_class)
    [PREFIX/]packs/<run_id>/<shard:06d>-<n:05d>.tar.idx   its index (always STANDARD)

`run_id` is `<UTC %Y%m%dT%H%M%SZ>-<8 hex>` (one per plan); n counts from 0 per shard per run.

Pack format: what `tarfile.PAX_FORMAT` writes, readable by GNU tar, bsdtar and Python's tarfile. Each member is one
pax extended header ('x' block + records, padded to 512), one ustar header, then the data padded to 512; the archive
ends with two zero blocks (END_OF_ARCHIVE). The pax records carry the exact values: `path` and `linkpath` (raw bytes;
`hdrcharset=BINARY` first when any name is not UTF-8, as POSIX says), `mtime` and `atime` (decimal seconds with 9
digits of nanoseconds, the sign on the whole number: model/objectmeta.format_ns), `uid`, `gid`, `uname`, `gname`,
`size`, and `FS3G.sha256` (hex SHA-256 of the member's data, regular files only). The ustar fields hold what fits
(names truncated to their field, numbers that overflow their octal field as 0); every reader here takes the pax values.

Names: `MemberInfo.path` is the file's absolute path; the tar name is that path without its leading `/` (so `tar -x`
extracts under the current directory, like the keys of model/keys.py), and parsing puts the `/` back. Symlink members
('2') carry the link target bytes exactly; hard-link members ('1') carry the absolute path of the pack's first member
of that inode, written the same way (relative to /), and have no data (size 0).

Index: gzip-compressed JSON lines (`zcat` reads it). Line 1 is an `IndexHeader`, then one `IndexEntry` per member in
pack order. Paths are in model/keys.encode_path form (`%XX` for odd bytes, reversible); a hard link's `link` too, a
symlink's target `%XX`-escaped the same way. `size` is the member's data size in the tar (0 for links).

Safety: packs and indexes read back from a bucket are untrusted. `parse_member_header` and `read_index` check every
field (types, ranges, checksums, record lengths, offsets) and raise PackFormatError, never anything else, naming the
pack and offset or the index line; they do NOT judge whether a name is safe to write (restore/paths.py does that, as
for any name from a bucket). Memory: a header is parsed from the bytes handed in (at most MAX_PAX_BYTES of pax
records); IndexWriter holds the compressed index of one pack; read_index streams one line (MAX_INDEX_LINE_BYTES) at a
time. Pure: no I/O beyond the stream handed in.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import IO, Any, Callable, Iterator

from ..errors import UsageError
from .keys import decode_path, encode_path
from .objectmeta import format_ns_bytes, parse_ns

PACKS_DIR = "packs"
PACK_SUFFIX = ".tar"
INDEX_SUFFIX = ".idx"
BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
INDEX_FORMAT = "fs3g-pack-index"
INDEX_VERSION = 1
SHA256_KEYWORD = "FS3G.sha256"
MAX_PAX_BYTES = 64 * 1024  # pax records of one member: two 4,096-byte names fit many times over
MAX_INDEX_LINE_BYTES = 64 * 1024
RUN_ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}"
PAX_HEADER_NAME = b"././@PaxHeader"

_RUN_ID = re.compile(RUN_ID_PATTERN)
_PACK_TAIL = re.compile(rf"(?:^|/){PACKS_DIR}/({RUN_ID_PATTERN})/([0-9]{{6,}})-([0-9]{{5,}})\.tar")
_INDEX_TAIL = re.compile(rf"(?:^|/){PACKS_DIR}/{RUN_ID_PATTERN}/[0-9]{{6,}}-[0-9]{{5,}}\.tar\.idx")
_SHA256 = re.compile(rb"[0-9a-f]{64}")
_SHA256_TEXT = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(rb"[0-9]{1,20}")
_TIME = re.compile(rb"-?[0-9]{1,20}(?:\.[0-9]{1,9})?")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1
_USTAR_MAGIC = b"ustar\x0000"
_OCTAL_DIGITS = b"01234567"
_BINARY = b"BINARY"
_UTF8_CHARSET = b"ISO-IR 10646 2000 UTF-8"
_KEYWORDS = frozenset((b"path", b"linkpath", b"mtime", b"atime", b"uid", b"gid", b"uname", b"gname", b"size",
                       b"hdrcharset", SHA256_KEYWORD.encode()))
_REQUIRED = (b"path", b"mtime", b"atime", b"uid", b"gid", b"size")


class PackFormatError(UsageError):
    """Anything malformed in a pack, a member header or an index; the message names the pack key and offset or the
    index line."""


class MemberType(Enum):
    FILE = "0"
    HARDLINK = "1"
    SYMLINK = "2"


_TYPES = {t.value.encode(): t for t in MemberType}
_TYPE_BITS = {MemberType.FILE: stat.S_IFREG, MemberType.HARDLINK: stat.S_IFREG, MemberType.SYMLINK: stat.S_IFLNK}
_TYPE_VALUES = {t.value: t for t in MemberType}


@dataclass(frozen=True)
class MemberInfo:
    """One member as written: `path` absolute, `mode` as st_mode; `link_target` the symlink's target bytes or a hard
    link's absolute first path; `sha256` the data's hex SHA-256 (regular files, required)."""

    path: bytes
    type: MemberType
    size_bytes: int
    mtime_ns: int
    atime_ns: int
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    link_target: bytes = b""
    sha256: str = ""


# -- writing -----------------------------------------------------------------------------------------------------------

def padding(size: int) -> bytes:
    """The zero bytes that pad `size` bytes of data to a whole block."""
    return bytes(-size % BLOCK)


def padded(size: int) -> int:
    return size + (-size % BLOCK)


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    """`<length> <keyword>=<value>\n`, the length counting the whole record, its own digits included."""
    size = len(keyword) + len(value) + 3
    if size < 9:
        total = size + 1
    elif size < 98:
        total = size + 2
    elif size < 997:
        total = size + 3
    else:
        digits = len(str(size))
        if len(str(size + digits)) > digits:  # the length counts its own digits, which may make one more
            digits += 1
        total = size + digits
    return b"%d %s=%s\n" % (total, keyword, value)


def _octal(value: int, width: int) -> bytes:
    """An ustar numeric field: octal digits and a NUL, or zeros when it does not fit (the pax record holds it)."""
    digits = width - 1
    if not 0 <= value < 8 ** digits:
        value = 0
    return b"%0*o\0" % (digits, value)


def _field(value: bytes, width: int) -> bytes:
    return value[:width].ljust(width, b"\0")


# name mode uid gid size mtime chksum typeflag linkname magic+version uname gname devmajor devminor prefix+pad
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s167s")
_ZERO_OCTAL_8 = b"0000000\0"


def _ustar_block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes, linkname: bytes,
                 uname: bytes, gname: bytes) -> bytes:
    """One 512-byte ustar header; text fields cut at their width and NUL-padded (the pax records hold them whole)."""
    block = _USTAR.pack(name, _octal(mode, 8), _octal(uid, 8), _octal(gid, 8), _octal(size, 12), _octal(mtime, 12),
                        b" " * 8, typeflag, linkname, _USTAR_MAGIC, uname, gname, _ZERO_OCTAL_8, _ZERO_OCTAL_8, b"")
    # The checksum is the sum of the block's bytes (its own field as spaces). Adler-32's low half is 1 + that sum
    # modulo 65521; a half block sums to at most 256 x 255 = 65,280, so per half it is exact: ~0.4 us against ~6 us
    # for sum() over 512 bytes, twice per member.
    checksum = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    return block[:148] + b"%06o\0 " % checksum + block[156:]


@functools.lru_cache(maxsize=4096)
def _pax_block(pax_bytes: int) -> bytes:
    """The ustar header in front of a member's pax records: only its size field varies."""
    return _ustar_block(PAX_HEADER_NAME, 0o644, 0, 0, pax_bytes, 0, b"x", b"", b"", b"")


def _tar_name(path: bytes) -> bytes:
    return path[1:]


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def member_header(info: MemberInfo) -> bytes:
    """The pax extended header and the ustar header of one member (a multiple of 512 bytes); its data, then
    `padding(info.size_bytes)`, follow. ValueError for an info no reader could take back (a programming error)."""
    if not info.path.startswith(b"/") or len(info.path) < 2 or b"\0" in info.path:
        raise ValueError(f"member path must be absolute, without NUL: {info.path!r}")
    if not isinstance(info.type, MemberType):
        raise ValueError(f"not a member type: {info.type!r}")
    if info.type is MemberType.FILE:
        if info.link_target or not _SHA256.fullmatch(info.sha256.encode()):
            raise ValueError(f"a file member needs its hex SHA-256 and no link: {info.path!r}")
    elif info.size_bytes != 0 or not info.link_target or b"\0" in info.link_target or info.sha256:
        raise ValueError(f"a link member has a target, no data and no SHA-256: {info.path!r}")
    if info.type is MemberType.HARDLINK and not info.link_target.startswith(b"/"):
        raise ValueError(f"a hard link's target is the absolute path of its first member: {info.link_target!r}")
    if not (0 <= info.size_bytes <= _INT64_MAX and 0 <= info.uid <= _UINT32_MAX and 0 <= info.gid <= _UINT32_MAX
            and _INT64_MIN <= info.mtime_ns <= _INT64_MAX and _INT64_MIN <= info.atime_ns <= _INT64_MAX):
        raise ValueError(f"a member field is out of range: {info!r}")
    name = _tar_name(info.path)
    link = info.link_target[1:] if info.type is MemberType.HARDLINK else info.link_target
    owner, uname, gname, owner_utf8 = _owner(info.uid, info.gid, info.uname, info.gname)
    records = []
    if not (owner_utf8 and (name.isascii() or _utf8(name)) and (link.isascii() or _utf8(link))):
        records.append(_HDRCHARSET_BINARY)
    records.append(_pax_record(b"path", name))
    if link:
        records.append(_pax_record(b"linkpath", link))
    records += [_pax_record(b"mtime", format_ns_bytes(info.mtime_ns)),
                _pax_record(b"atime", format_ns_bytes(info.atime_ns)), owner,
                _pax_record(b"size", b"%d" % info.size_bytes)]
    if info.sha256:
        records.append(_pax_record(_SHA256_KEYWORD, info.sha256.encode()))
    pax = b"".join(records)
    if len(pax) > MAX_PAX_BYTES:
        raise ValueError(f"pax header of {len(pax)} bytes passes {MAX_PAX_BYTES}: {info.path!r}")
    pax_block = _pax_block(len(pax))
    mtime_s = info.mtime_ns // 1_000_000_000
    member = _ustar_block(name, info.mode & 0o7777, info.uid, info.gid, info.size_bytes, mtime_s,
                          _TYPE_FLAGS[info.type], link, uname, gname)
    return pax_block + pax + padding(len(pax)) + member


_SHA256_KEYWORD = SHA256_KEYWORD.encode()
_HDRCHARSET_BINARY = _pax_record(b"hdrcharset", _BINARY)
_TYPE_FLAGS = {t: t.value.encode() for t in MemberType}


@functools.lru_cache(maxsize=1024)
def _owner(uid: int, gid: int, uname: str, gname: str) -> tuple[bytes, bytes, bytes, bool]:
    """The uid, gid, uname and gname pax records of an owner (the same for most members of a shard), the names as
    bytes, and whether both are UTF-8."""
    uname_bytes = uname.encode("utf-8", "surrogateescape")
    gname_bytes = gname.encode("utf-8", "surrogateescape")
    if b"\0" in uname_bytes or b"\0" in gname_bytes or b"\n" in uname_bytes or b"\n" in gname_bytes:
        raise ValueError(f"user or group name holds NUL or a newline: {uname!r} {gname!r}")
    records = b"".join((_pax_record(b"uid", b"%d" % uid), _pax_record(b"gid", b"%d" % gid),
                        _pax_record(b"uname", uname_bytes), _pax_record(b"gname", gname_bytes)))
    return records, uname_bytes, gname_bytes, _utf8(uname_bytes) and _utf8(gname_bytes)


# -- parsing -----------------------------------------------------------------------------------------------------------

def _parse_octal(field: bytes, what: str, where: str) -> int:
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if not digits:
        return 0
    if digits.translate(None, _OCTAL_DIGITS):  # 0-7 only: no base-256, no signs, no spaces inside
        raise PackFormatError(f"ustar {what} field is not octal: {field!r}", key=where)
    return int(digits, 8)


def _check_block(block: bytes, what: str, where: str) -> None:
    stored = _parse_octal(block[148:156], f"{what} checksum", where)
    if sum(block[:148]) + 8 * 32 + sum(block[156:]) != stored:
        raise PackFormatError(f"{what} checksum does not match", key=where)
    if block[257:265] != _USTAR_MAGIC:
        raise PackFormatError(f"{what} is not a ustar header (magic {block[257:265]!r})", key=where)


def _pax_records(data: bytes, where: str) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 8))
        length_text = data[pos:space] if space > pos else b""
        if not length_text.isdigit() or length_text.startswith(b"0"):
            raise PackFormatError(f"pax record at byte {pos} has no valid length", key=where)
        length = int(length_text)
        stop = pos + length
        if length < len(length_text) + 4 or stop > end or data[stop - 1:stop] != b"\n":
            raise PackFormatError(f"pax record at byte {pos} claims {length} bytes that do not end a record",
                                  key=where)
        keyword, eq, value = data[space + 1:stop - 1].partition(b"=")
        if not eq or not keyword:
            raise PackFormatError(f"pax record at byte {pos} has no keyword=value", key=where)
        if keyword not in _KEYWORDS:
            raise PackFormatError(f"pax keyword {keyword!r} is not one fs3g writes", key=where)
        if keyword in records:
            raise PackFormatError(f"pax keyword {keyword.decode()} appears twice", key=where)
        records[keyword] = value
        pos = stop
    return records


def _decimal(records: dict[bytes, bytes], keyword: bytes, maximum: int, where: str) -> int:
    value = records[keyword]
    if not _DECIMAL.fullmatch(value) or int(value) > maximum:
        raise PackFormatError(f"pax {keyword.decode()} is not a number up to {maximum}: {value[:40]!r}", key=where)
    return int(value)


def _time(records: dict[bytes, bytes], keyword: bytes, where: str) -> int:
    value = records[keyword]
    if not _TIME.fullmatch(value):
        raise PackFormatError(f"pax {keyword.decode()} is not SECONDS.NANOSECONDS: {value[:40]!r}", key=where)
    ns = parse_ns(value.decode("ascii"))
    if not _INT64_MIN <= ns <= _INT64_MAX:
        raise PackFormatError(f"pax {keyword.decode()} is out of range: {value!r}", key=where)
    return ns


def _name(records: dict[bytes, bytes], keyword: bytes, binary: bool, where: str) -> bytes:
    value = records.get(keyword, b"")
    if b"\0" in value:
        raise PackFormatError(f"pax {keyword.decode()} holds a NUL byte", key=where)
    if not binary and not _utf8(value):
        raise PackFormatError(f"pax {keyword.decode()} is not UTF-8 and hdrcharset is not BINARY", key=where)
    return value


def parse_member_header(data: bytes | memoryview, where: str) -> tuple[MemberInfo, int]:
    """Parse the pax and ustar headers at the start of `data` (what `member_header` writes): the member's info and
    the headers' length (its data starts there). Strict: PackFormatError for anything else; names are not judged."""
    try:
        return _parse_member_header(data, where)
    except PackFormatError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError) as e:  # a check missed above: still the same verdict
        raise PackFormatError(f"malformed member header: {e}", key=where) from None


def _parse_member_header(data: bytes | memoryview, where: str) -> tuple[MemberInfo, int]:
    if len(data) < 2 * BLOCK:
        raise PackFormatError(f"truncated member header: {len(data)} bytes", key=where)
    first = bytes(data[:BLOCK])
    if first == bytes(BLOCK):
        raise PackFormatError("end of archive where a member header was expected", key=where)
    _check_block(first, "pax header", where)
    if first[156:157] != b"x":
        raise PackFormatError(f"expected a pax extended header ('x'), got type {first[156:157]!r}", key=where)
    pax_size = _parse_octal(first[124:136], "pax size", where)
    if pax_size == 0 or pax_size > MAX_PAX_BYTES:
        raise PackFormatError(f"pax header size {pax_size} is not within 1..{MAX_PAX_BYTES}", key=where)
    ustar_at = BLOCK + padded(pax_size)
    length = ustar_at + BLOCK
    if len(data) < length:
        raise PackFormatError(f"truncated member header: {len(data)} of {length} bytes", key=where)
    records = _pax_records(bytes(data[BLOCK:BLOCK + pax_size]), where)
    if any(data[BLOCK + pax_size:ustar_at]):
        raise PackFormatError("pax header padding is not zero", key=where)
    block = bytes(data[ustar_at:length])
    _check_block(block, "ustar header", where)
    member_type = _TYPES.get(block[156:157])
    if member_type is None:
        raise PackFormatError(f"member type {block[156:157]!r} is not a file, hard link or symlink", key=where)
    missing = [k.decode() for k in _REQUIRED if k not in records]
    if missing:
        raise PackFormatError(f"pax header lacks {', '.join(missing)}", key=where)
    charset = records.get(b"hdrcharset")
    if charset not in (None, _BINARY, _UTF8_CHARSET):
        raise PackFormatError(f"pax hdrcharset {charset!r} is neither BINARY nor UTF-8", key=where)
    binary = charset == _BINARY
    name = _name(records, b"path", binary, where)
    if not name or name.startswith(b"/"):
        raise PackFormatError("member path is empty or absolute (fs3g writes names relative to /)", key=where)
    link = _name(records, b"linkpath", binary, where)
    size = _decimal(records, b"size", _INT64_MAX, where)
    ustar_size = _parse_octal(block[124:136], "size", where)
    if ustar_size != (size if size < 8 ** 11 else 0):
        raise PackFormatError(f"ustar size {ustar_size} contradicts pax size {size}", key=where)
    sha = records.get(SHA256_KEYWORD.encode(), b"")
    if member_type is MemberType.FILE:
        if link:
            raise PackFormatError("a file member has a linkpath", key=where)
        if not _SHA256.fullmatch(sha):
            raise PackFormatError(f"a file member needs {SHA256_KEYWORD} (64 lowercase hex digits)", key=where)
    else:
        if size != 0 or not link or sha:
            raise PackFormatError("a link member needs a linkpath, no data and no SHA-256", key=where)
        if member_type is MemberType.HARDLINK:
            if link.startswith(b"/"):
                raise PackFormatError("a hard link's linkpath is absolute (fs3g writes names relative to /)",
                                      key=where)
            link = b"/" + link
    uname = _name(records, b"uname", binary, where) if b"uname" in records else block[265:297].rstrip(b"\0")
    gname = _name(records, b"gname", binary, where) if b"gname" in records else block[297:329].rstrip(b"\0")
    info = MemberInfo(
        path=b"/" + name, type=member_type, size_bytes=size,
        mtime_ns=_time(records, b"mtime", where), atime_ns=_time(records, b"atime", where),
        mode=_parse_octal(block[100:108], "mode", where) & 0o7777 | _TYPE_BITS[member_type],
        uid=_decimal(records, b"uid", _UINT32_MAX, where), gid=_decimal(records, b"gid", _UINT32_MAX, where),
        uname=uname.decode("utf-8", "surrogateescape"), gname=gname.decode("utf-8", "surrogateescape"),
        link_target=link, sha256=sha.decode("ascii"))
    return info, length


# -- where a packed file's bytes are -----------------------------------------------------------------------------------

_REF = struct.Struct("<BQIQ")  # version, header offset, header length, data size; then the pack key (UTF-8)
_REF_VERSION = 1


@dataclass(frozen=True)
class PackRef:
    """A member's place: the pack key relative to the lab prefix, its header's offset, its data's offset and size.
    `encode()` is what a catalog record's location holds (model/records.py)."""

    pack: str
    header_offset: int
    data_offset: int
    size_bytes: int

    @property
    def data_end(self) -> int:
        return self.data_offset + self.size_bytes

    def encode(self) -> bytes:
        return _REF.pack(_REF_VERSION, self.header_offset, self.data_offset - self.header_offset,
                         self.size_bytes) + self.pack.encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> "PackRef":
        if len(data) <= _REF.size:
            raise PackFormatError(f"pack location of {len(data)} bytes is too short", key=where)
        version, header_offset, header_length, size = _REF.unpack_from(data)
        if version != _REF_VERSION:
            raise PackFormatError(f"pack location version {version} is not {_REF_VERSION}", key=where)
        try:
            pack = bytes(data[_REF.size:]).decode("ascii")
        except UnicodeDecodeError:
            raise PackFormatError("pack location names no pack key", key=where) from None
        if not _is_relative_pack_key(pack):
            raise PackFormatError(f"pack location names {pack!r}, not a pack key", key=where)
        if (header_offset % BLOCK or header_length < 2 * BLOCK or header_length % BLOCK
                or header_offset + header_length + size > _INT64_MAX):
            raise PackFormatError(f"pack location offsets are not those of a member: {header_offset} "
                                  f"+{header_length} size {size}", key=where)
        return cls(pack, header_offset, header_offset + header_length, size)


# -- keys --------------------------------------------------------------------------------------------------------------

def absolute_key(prefix: str, relative: str) -> str:
    """The bucket key of a key relative to the lab prefix."""
    return f"{prefix}/{relative}" if prefix else relative


def relative_to_prefix(prefix: str, key: str) -> str:
    """A bucket key relative to the lab prefix; ValueError for a key outside it."""
    if not prefix:
        return key
    if not key.startswith(prefix + "/") or len(key) == len(prefix) + 1:
        raise ValueError(f"key {key!r} is not under prefix {prefix!r}")
    return key[len(prefix) + 1:]


def pack_key(prefix: str, run_id: str, shard: int, n: int) -> str:
    """`[PREFIX/]packs/<run_id>/<shard:06d>-<n:05d>.tar`."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} is not <UTC %Y%m%dT%H%M%SZ>-<8 hex>")
    if shard < 0 or n < 0:
        raise ValueError(f"shard {shard} and pack number {n} must not be negative")
    return absolute_key(prefix, f"{PACKS_DIR}/{run_id}/{shard:06d}-{n:05d}{PACK_SUFFIX}")


def index_key(pack: str) -> str:
    """The key of a pack's index (`<pack key>.idx`)."""
    if not is_pack_key(pack):
        raise ValueError(f"{pack!r} is not a pack key")
    return pack + INDEX_SUFFIX


def is_pack_key(key: str) -> bool:
    """A pack's key, full or relative to the prefix (its last three segments are packs/<run_id>/NNNNNN-NNNNN.tar)."""
    match = _PACK_TAIL.search(key)
    return match is not None and match.end() == len(key)


def is_index_key(key: str) -> bool:
    match = _INDEX_TAIL.search(key)
    return match is not None and match.end() == len(key)


def _is_relative_pack_key(key: str) -> bool:
    match = _PACK_TAIL.fullmatch(key)
    return match is not None and not key.startswith("/")


def run_id_of(pack: str) -> str:
    """The run id in a pack key; ValueError for a key that is not a pack's."""
    match = _PACK_TAIL.search(pack)
    if match is None or match.end() != len(pack):
        raise ValueError(f"{pack!r} is not a pack key")
    return match.group(1)


def run_time_ns(run_id: str) -> int | None:
    """When a run was planned, from the `<UTC %Y%m%dT%H%M%SZ>` its id starts with (ns since the epoch); None for
    anything else. A packed copy dates from it when copies of one path are ranked (compare, restore from indexes)."""
    try:
        when = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(when.timestamp()) * 1_000_000_000


# -- index -------------------------------------------------------------------------------------------------------------

def _get(data: dict, name: str, kind: type, where: str, minimum: int | None = None,
         maximum: int | None = None) -> Any:
    if name not in data:
        raise PackFormatError(f"index field {name!r} is missing", key=where)
    value = data[name]
    if type(value) is not kind:  # bool is not an int here, nor a float
        raise PackFormatError(f"index field {name!r} is not a {kind.__name__}: {str(value)[:40]!r}", key=where)
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise PackFormatError(f"index field {name!r} is out of range: {value}", key=where)
    return value


def _unknown(data: dict, known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise PackFormatError(f"index fields {', '.join(map(repr, extra[:5]))} are not ones fs3g writes", key=where)


@dataclass(frozen=True)
class IndexHeader:
    """The first line of an index: which pack it describes, how many members, the pack's total size."""

    pack: str  # relative to the lab prefix
    members: int
    pack_bytes: int
    run_id: str
    format: str = INDEX_FORMAT
    version: int = INDEX_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "version": self.version, "pack": self.pack, "members": self.members,
                "pack_bytes": self.pack_bytes, "run_id": self.run_id}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "IndexHeader":
        if not isinstance(data, dict):
            raise PackFormatError("index header is not a JSON object", key=where)
        if data.get("format") != INDEX_FORMAT:
            raise PackFormatError(f"not an fs3g pack index (format {str(data.get('format'))[:40]!r})", key=where)
        version = _get(data, "version", int, where)
        if version != INDEX_VERSION:
            raise PackFormatError(f"index version {version} is not {INDEX_VERSION}; a newer fs3g wrote it",
                                  key=where)
        _unknown(data, ("format", "version", "pack", "members", "pack_bytes", "run_id"), where)
        pack = _get(data, "pack", str, where)
        if not _is_relative_pack_key(pack):
            raise PackFormatError(f"index header names {pack[:200]!r}, not a pack key", key=where)
        run_id = _get(data, "run_id", str, where)
        if run_id != run_id_of(pack):
            raise PackFormatError(f"index run_id {run_id[:40]!r} is not the pack's", key=where)
        pack_bytes = _get(data, "pack_bytes", int, where, len(END_OF_ARCHIVE), _INT64_MAX)
        if pack_bytes % BLOCK:
            raise PackFormatError(f"pack_bytes {pack_bytes} is not a whole number of blocks", key=where)
        members = _get(data, "members", int, where, 0, pack_bytes // (2 * BLOCK))
        return cls(pack, members, pack_bytes, run_id)


def _decode_text(decode: Callable[[str], bytes], text: str, name: str, where: str) -> bytes:
    try:
        return decode(text)
    except ValueError:  # a lone surrogate JSON let through: no bytes to give back
        raise PackFormatError(f"index field {name!r} is not text fs3g writes", key=where) from None


def _encode_link(member_type: MemberType, link: bytes) -> str:
    # encode_path escapes what follows the leading "/"; a symlink target is escaped the same way, without it
    return encode_path(link) if member_type is MemberType.HARDLINK else encode_path(b"/" + link)


def _decode_link(member_type: MemberType, text: str) -> bytes:
    return decode_path(text) if member_type is MemberType.HARDLINK else decode_path(text)[1:]


_ENTRY_FIELDS = ("path", "type", "header_offset", "data_offset", "size", "mtime_ns", "mode", "sha256", "link", "uid",
                 "gid")


@dataclass(frozen=True)
class IndexEntry:
    """One member of a pack, in pack order: its absolute path, type, where its header and data are, and what the
    restore checks it against. `link` is a symlink's target or a hard link's absolute first path; `sha256` is set for
    files only; `size_bytes` is the member's data in the tar (0 for links)."""

    path: bytes
    type: MemberType
    header_offset: int
    data_offset: int
    size_bytes: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    sha256: str = ""
    link: bytes = b""

    @property
    def data_end(self) -> int:
        return self.data_offset + self.size_bytes

    def ref(self, pack: str) -> PackRef:
        return PackRef(pack, self.header_offset, self.data_offset, self.size_bytes)

    @classmethod
    def of(cls, info: MemberInfo, header_offset: int, data_offset: int) -> "IndexEntry":
        return cls(info.path, info.type, header_offset, data_offset, info.size_bytes, info.mtime_ns, info.mode,
                   info.uid, info.gid, info.sha256, info.link_target)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": encode_path(self.path), "type": self.type.value,
                                "header_offset": self.header_offset, "data_offset": self.data_offset,
                                "size": self.size_bytes, "mtime_ns": self.mtime_ns, "mode": self.mode}
        if self.sha256:
            data["sha256"] = self.sha256
        if self.link:
            data["link"] = _encode_link(self.type, self.link)
        data["uid"] = self.uid
        data["gid"] = self.gid
        return data

    def line(self) -> bytes:
        """`to_json()` as one index line, the same bytes as `_line(self.to_json())`, formatted directly: the JSON
        encoder's generic walk was a fifth of a packed member's CPU."""
        head = b'{"path":%s,"type":"%s","header_offset":%d,"data_offset":%d,"size":%d,"mtime_ns":%d,"mode":%d' % (
            _json_text(encode_path(self.path)), self.type.value.encode(), self.header_offset, self.data_offset,
            self.size_bytes, self.mtime_ns, self.mode)
        sha = b',"sha256":"%s"' % self.sha256.encode() if self.sha256 else b""
        link = b',"link":%s' % _json_text(_encode_link(self.type, self.link)) if self.link else b""
        return b'%s%s%s,"uid":%d,"gid":%d}\n' % (head, sha, link, self.uid, self.gid)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "IndexEntry":
        if not isinstance(data, dict):
            raise PackFormatError("index entry is not a JSON object", key=where)
        _unknown(data, _ENTRY_FIELDS, where)
        member_type = _TYPE_VALUES.get(_get(data, "type", str, where))
        if member_type is None:
            raise PackFormatError(f"index entry type {str(data['type'])[:10]!r} is not 0, 1 or 2", key=where)
        path = _decode_text(decode_path, _get(data, "path", str, where), "path", where)
        if len(path) < 2 or b"\0" in path:
            raise PackFormatError("index entry path is empty or holds NUL", key=where)
        header_offset = _get(data, "header_offset", int, where, 0, _INT64_MAX)
        data_offset = _get(data, "data_offset", int, where, 0, _INT64_MAX)
        size = _get(data, "size", int, where, 0, _INT64_MAX)
        if header_offset % BLOCK or data_offset % BLOCK or data_offset - header_offset < 2 * BLOCK:
            raise PackFormatError(f"index offsets {header_offset}/{data_offset} are not a member's", key=where)
        sha = data.get("sha256", "")
        link_text = data.get("link", "")
        if member_type is MemberType.FILE:
            if not isinstance(sha, str) or not _SHA256_TEXT.fullmatch(sha) or "link" in data:
                raise PackFormatError("index file entry needs a sha256 (64 lowercase hex) and no link", key=where)
            link = b""
        else:
            if "sha256" in data or size != 0 or not isinstance(link_text, str) or not link_text:
                raise PackFormatError("index link entry needs a link, size 0 and no sha256", key=where)
            link = _decode_text(lambda text: _decode_link(member_type, text), link_text, "link", where)
            if b"\0" in link:
                raise PackFormatError("index entry link holds NUL", key=where)
        return cls(path, member_type, header_offset, data_offset, size, _get(data, "mtime_ns", int, where,
                   _INT64_MIN, _INT64_MAX), _get(data, "mode", int, where, 0, _UINT32_MAX),
                   _get(data, "uid", int, where, 0, _UINT32_MAX), _get(data, "gid", int, where, 0, _UINT32_MAX),
                   sha, link)


def _line(item: Any) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _json_text(text: str) -> bytes:
    """A JSON string as `_line` writes it (UTF-8, not ASCII-escaped; surrogates escaped as JSON does)."""
    return json.dumps(text, ensure_ascii=False).encode()


# Index lines handed to the compressor at once: one call per line cost ~5 us, more than compressing it.
INDEX_LINES_PER_COMPRESS = 256


class IndexWriter:
    """Build one pack's index as members are written (in pack order); `finish(pack_bytes)` returns the compressed
    object. Memory: the compressed entries of one pack. The header (which needs the final counts) is its own gzip
    member in front: `zcat` and gzip readers see one stream of lines."""

    def __init__(self, pack: str, run_id: str):
        if not _is_relative_pack_key(pack) or run_id_of(pack) != run_id:
            raise ValueError(f"{pack!r} is not a pack key (relative to the prefix) of run {run_id!r}")
        self.pack, self.run_id = pack, run_id
        self.members = 0
        self._end = 0  # the padded end of the last member's data
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip container
        self._chunks: list[bytes] = []
        self._lines: list[bytes] = []  # not compressed yet: at most INDEX_LINES_PER_COMPRESS

    def add(self, entry: IndexEntry) -> None:
        if entry.header_offset < self._end or entry.header_offset % BLOCK:
            raise ValueError(f"member at {entry.header_offset} overlaps the one before (ends at {self._end})")
        self._lines.append(entry.line())
        if len(self._lines) >= INDEX_LINES_PER_COMPRESS:
            self._compress()
        self._end = entry.data_offset + padded(entry.size_bytes)
        self.members += 1

    def _compress(self) -> None:
        self._chunks.append(self._compressor.compress(b"".join(self._lines)))
        self._lines = []

    def header(self, pack_bytes: int) -> IndexHeader:
        return IndexHeader(self.pack, self.members, pack_bytes, self.run_id)

    def finish(self, pack_bytes: int) -> bytes:
        if pack_bytes < self._end + len(END_OF_ARCHIVE) or pack_bytes % BLOCK:
            raise ValueError(f"pack of {pack_bytes} bytes cannot hold members up to {self._end} and the end blocks")
        head = gzip.compress(_line(self.header(pack_bytes).to_json()), mtime=0)
        self._compress()
        return head + b"".join(self._chunks) + self._compressor.flush()


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key appears twice")
    return data


def _index_lines(stream: IO[bytes], where: str) -> Iterator[tuple[int, Any]]:
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as text:
            number = 0
            while True:
                line = text.readline(MAX_INDEX_LINE_BYTES + 1)
                if not line:
                    return
                number += 1
                at = f"{where} line {number}"
                if len(line) > MAX_INDEX_LINE_BYTES or not line.endswith(b"\n"):
                    raise PackFormatError("index line is too long or unterminated", key=at)
                try:
                    item = json.loads(line, object_pairs_hook=_json_object)
                except (ValueError, RecursionError) as e:
                    raise PackFormatError(f"index line is not JSON: {str(e)[:80]}", key=at) from None
                yield number, item
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise PackFormatError(f"index is not gzip or is truncated: {e}", key=where) from None


def read_index(stream: IO[bytes], where: str, *, pack: str | None = None) -> tuple[IndexHeader, Iterator[IndexEntry]]:
    """The header and a stream of the entries of one index (the compressed object, read as it comes). Untrusted:
    every field is checked, members must not overlap and must lie inside pack_bytes, their count must match;
    PackFormatError naming `where` and the line otherwise. `pack` (relative key), when given, must be the header's.
    Names are decoded, never judged."""
    lines = _index_lines(stream, where)
    first = next(lines, None)
    if first is None:
        raise PackFormatError("index is empty", key=where)
    header = IndexHeader.from_json(first[1], f"{where} line 1")
    if pack is not None and header.pack != pack:
        raise PackFormatError(f"index describes {header.pack!r}, not {pack!r}", key=f"{where} line 1")
    return header, _index_entries(header, lines, where)


def _index_entries(header: IndexHeader, lines: Iterator[tuple[int, Any]], where: str) -> Iterator[IndexEntry]:
    end = 0
    limit = header.pack_bytes - len(END_OF_ARCHIVE)
    count = 0
    for number, item in lines:
        at = f"{where} line {number}"
        entry = IndexEntry.from_json(item, at)
        if entry.header_offset < end:
            raise PackFormatError(f"member at {entry.header_offset} is not after the one before (ends at {end})",
                                  key=at)
        end = entry.data_offset + padded(entry.size_bytes)
        if end > limit:
            raise PackFormatError(f"member ends at {end}, past the pack's {header.pack_bytes} bytes", key=at)
        count += 1
        if count > header.members:
            raise PackFormatError(f"more members than the header's {header.members}", key=at)
        yield entry
    if count != header.members:
        raise PackFormatError(f"{count} members, the header says {header.members}", key=where)
