"""The CRC32 checksums S3 checks on every PUT and part, as S3 writes them (base64 of the big-endian CRC32), and the
composite checksum it reports for a multipart object. Pure: no boto3. The CRC32 is ISA-L's when the `fast` extra is
installed (model/zlibs.py: ~3x the standard library's here, 0.47 against 1.5 s of CPU per GiB on a loaded core; both
release the GIL), the same number either way."""

from __future__ import annotations

import base64
from typing import Iterable

from . import zlibs


def crc32_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(zlibs.crc32(data).to_bytes(4, "big")).decode()


def composite_crc32(part_checksums: Iterable[str]) -> str:
    """What S3 reports for a multipart object: the CRC32 of the parts' CRC32s, then `-<parts>`."""
    raw = [base64.b64decode(c) for c in part_checksums]
    return f"{crc32_b64(b''.join(raw))}-{len(raw)}"
