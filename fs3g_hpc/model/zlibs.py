"""The zlib implementation the record files and checksums use: ISA-L's (`isal`, the optional extra `fast`) when it is
installed, the standard library's otherwise. Both write and read the same formats (zlib, gzip); only the
compressed bytes of one input may differ between them, never what they decompress to, and every reader accepts
either. No I/O here beyond the file objects handed in.

`FS3G_NO_ISAL=1` in the environment forces the standard library (the tests run both ways with it).
"""

from __future__ import annotations

import gzip as _std_gzip
import os
import zlib as _std_zlib
from typing import BinaryIO

try:
    if os.environ.get("FS3G_NO_ISAL"):
        raise ImportError("FS3G_NO_ISAL is set")
    from isal import igzip as _igzip, isal_zlib as _isal_zlib
except ImportError:
    _igzip = _isal_zlib = None

ACCELERATED = _isal_zlib is not None
IMPLEMENTATION = "isal" if ACCELERATED else "zlib"

crc32 = _isal_zlib.crc32 if ACCELERATED else _std_zlib.crc32
compress = _isal_zlib.compress if ACCELERATED else _std_zlib.compress
decompress = _isal_zlib.decompress if ACCELERATED else _std_zlib.decompress


def gzip_writer(fileobj: BinaryIO, level: int = 1) -> BinaryIO:
    """A gzip stream written into `fileobj` (mtime 0, so a file's bytes depend only on its content)."""
    if ACCELERATED:
        # ISA-L levels are 0..3; its level 1 is faster than zlib's 1 at a similar ratio.
        return _igzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=min(level, 3), mtime=0)
    return _std_gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0)


def gzip_open_read(path: str | os.PathLike) -> BinaryIO:
    """Read a gzip file (one member or several) as a stream."""
    if ACCELERATED:
        return _igzip.open(path, "rb")
    return _std_gzip.open(path, "rb")
