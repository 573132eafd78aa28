"""Object metadata, as the original tool wrote it, for any file: pure data, no boto3.

Keys (x-amz-meta-*): mtime, ctime, atime (`SECONDS.NANOSECONDS`), mode (octal), owneruid, groupuid, ownername,
groupname, sha256hashtree, creator, metadataversion; `fs3g-path-sha256` for a path stored under its hash.
S3 metadata is ASCII only (botocore refuses anything else before sending), so every value is percent-encoded
beyond printable ASCII (and `%` itself); plain names come out unchanged.
"""

from __future__ import annotations

import grp
import pwd
import re
from functools import lru_cache
from urllib.parse import quote, unquote

from .. import __version__
from .records import Entry

METADATA_VERSION = "2"
CREATOR = f"fs3g-hpc/{__version__}"
TREEHASH_KEY = "sha256hashtree"
PATH_SHA_KEY = "fs3g-path-sha256"
_DECIMAL_SECONDS = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?")
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def encode_value(text: str) -> str:
    return quote(text, safe=_SAFE)


def decode_value(text: str) -> str:
    return unquote(text, errors="surrogateescape")


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch as the decimal number of seconds `[-]SECONDS.NANOSECONDS` (exactly 9 digits):
    -1.5 s is "-1.500000000", never the floor form "-2.500000000" a reader would take for -2.5 s."""
    return format_ns_bytes(ns).decode("ascii")


def format_ns_bytes(ns: int) -> bytes:
    """`format_ns` as bytes (the form pax headers take)."""
    if ns < 0:
        return b"-%d.%09d" % divmod(-ns, 1_000_000_000)
    return b"%d.%09d" % divmod(ns, 1_000_000_000)


def parse_ns(text: str) -> int:
    """`[-+]SECONDS[.FRACTION]` as nanoseconds, exactly (digits past the 9th are dropped); ValueError otherwise.
    The sign applies to the whole number: "-0.5" is -500,000,000 ns."""
    match = _DECIMAL_SECONDS.fullmatch(text.strip())
    if match is None or not (match.group(2) or match.group(3)):
        raise ValueError(f"not a SECONDS.NANOSECONDS time: {text!r}")
    sign, seconds, fraction = match.groups()
    ns = int(seconds or "0") * 1_000_000_000 + int(((fraction or "") + "000000000")[:9])
    return -ns if sign == "-" else ns


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def object_metadata(entry: Entry, tree_hash_hex: str | None, path_sha256: str | None = None) -> dict[str, str]:
    meta = {
        "mtime": format_ns(entry.mtime_ns),
        "ctime": format_ns(entry.ctime_ns),
        "atime": format_ns(entry.atime_ns),
        "mode": f"{entry.mode:o}",
        "owneruid": str(entry.uid),
        "groupuid": str(entry.gid),
        "ownername": encode_value(user_name(entry.uid)),
        "groupname": encode_value(group_name(entry.gid)),
        "creator": CREATOR,
        "metadataversion": METADATA_VERSION,
    }
    if tree_hash_hex is not None:
        meta[TREEHASH_KEY] = tree_hash_hex
    if path_sha256 is not None:
        meta[PATH_SHA_KEY] = path_sha256
    return meta
