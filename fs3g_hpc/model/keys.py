"""Object keys: the original tool's layout under an optional lab prefix, for any path bytes, reversibly.

    [PREFIX/]smallfile/<path>   files up to the small-file threshold
    [PREFIX/]largefile/<path>   larger files (the lifecycle rule moves this prefix to the archive class)
    [PREFIX/]symlinks/<path>    symlinks; the object's content is the link target

<path> is the absolute path without its leading `/`, so no key has an empty `//` segment. Names are bytes; keys are
UTF-8. Valid UTF-8 is kept as is, except `%`, `\\` and control characters; those and every byte that is not valid
UTF-8 are written `%XX`. Decoding reverses it exactly.

A path whose key would pass S3's 1,024 bytes, or hold a segment over 255 bytes (what SeaweedFS and POSIX-backed
stores accept), goes to `[PREFIX/]<class>/.fs3g-long/<sha256 of the path bytes>`; its exact path bytes are stored
beside it as the object `[PREFIX/]pathmap/<same hash>` and in the object's metadata (`fs3g-path-sha256`), so a restore
from the bucket alone can rebuild it. No boto3 here: keys are pure data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote_to_bytes

from .s3limits import S3_MAX_KEY_BYTES

MAX_SEGMENT_BYTES = 255
LONG_DIR = ".fs3g-long"
PATHMAP_DIR = "pathmap"
PATHMAP_MAX_BYTES = 64 * 1024  # a pathmap object holds one path (PATH_MAX is 4,096 bytes): never read more


class KeyClass(Enum):
    SMALL = "smallfile"
    LARGE = "largefile"
    SYMLINK = "symlinks"


_PLAIN = re.compile(r"[^\x00-\x1f\x7f%\\\udc80-\udcff]*")


def _escape_char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an invalid byte, as surrogateescape decoded it
        return f"%{code - 0xDC00:02X}"
    if code < 0x20 or code == 0x7F or c in "%\\":
        return f"%{code:02X}"
    return c


def encode_path(path: bytes) -> str:
    """Absolute path bytes -> the UTF-8 text used in keys (without the leading `/`)."""
    if not path.startswith(b"/"):
        raise ValueError(f"not an absolute path: {path!r}")
    text = path[1:].decode("utf-8", "surrogateescape")
    if _PLAIN.fullmatch(text):  # the common case, without a call per character
        return text
    return "".join(map(_escape_char, text))


def decode_path(text: str) -> bytes:
    return b"/" + unquote_to_bytes(text)


@dataclass(frozen=True)
class ObjectKey:
    key: str
    long_path_sha256: str | None = None  # set when the key is the hashed form

    @property
    def pathmap_suffix(self) -> str | None:
        return None if self.long_path_sha256 is None else f"{PATHMAP_DIR}/{self.long_path_sha256}"


def _join(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix, *parts) if p)


def object_key(prefix: str, klass: KeyClass, path: bytes) -> ObjectKey:
    encoded = encode_path(path)
    key = _join(prefix, klass.value, encoded)
    if len(key.encode()) <= S3_MAX_KEY_BYTES and all(len(s.encode()) <= MAX_SEGMENT_BYTES for s in encoded.split("/")):
        return ObjectKey(key)
    digest = hashlib.sha256(path).hexdigest()
    return ObjectKey(_join(prefix, klass.value, LONG_DIR, digest), digest)


def pathmap_key(prefix: str, digest: str) -> str:
    return _join(prefix, PATHMAP_DIR, digest)


def parse_key(prefix: str, key: str) -> tuple[KeyClass, bytes | None, str | None]:
    """(class, path, long-path digest) of one of our keys; path is None for the hashed form (see pathmap)."""
    rest = key[len(prefix) + 1:] if prefix else key
    if prefix and not key.startswith(prefix + "/"):
        raise ValueError(f"key {key!r} is not under prefix {prefix!r}")
    head, _, tail = rest.partition("/")
    try:
        klass = KeyClass(head)
    except ValueError:
        raise ValueError(f"key {key!r} is not in smallfile/, largefile/ or symlinks/") from None
    if tail.startswith(LONG_DIR + "/"):
        return klass, None, tail[len(LONG_DIR) + 1:]
    return klass, decode_path(tail), None
