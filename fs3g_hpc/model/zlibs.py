"""The zlib implementation the record files and checksums use: ISA-L's (`isal`, the optional extra `fast`) when it is
installed, the standard library's otherwise. Both write and read the same formats (zlib, gzip); only the
compressed bytes of one input may differ between them, never what they decompress to, and every reader accepts
either. No I/O here beyond the file objects handed in.

`FS3G_NO_ISAL=1` in the environment forces the standard library (the tests run both ways with it).

Reading: `gzip_open_read` decompresses with the chosen implementation's decompressor, handing it at most
`GZIP_INPUT_CHUNK` (64 KiB) of compressed input at a time. The libraries' own gzip readers each hold a read buffer of
compressed input (128 KiB for the standard library's, 512 KiB for ISA-L's igzip): a k-way merge of 50 scan runs held
~25 MiB in them with ISA-L, so the memory of a merge grew with the number of runs (the tree), not with its budget.
Memory per open reader: 64 KiB of input + the decompressor's state (a 32 KiB window and its tables) + what the
caller asks for.
"""

from __future__ import annotations

import gzip as _std_gzip
import os
import zlib as _std_zlib
from typing import Any, BinaryIO

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
_decompressobj = _isal_zlib.decompressobj if ACCELERATED else _std_zlib.decompressobj
_errors: tuple[type[BaseException], ...] = (_std_zlib.error,) + ((_isal_zlib.error,) if ACCELERATED else ())

GZIP_INPUT_CHUNK = 64 * 1024
_GZIP_ONLY = 31  # wbits: a gzip header and trailer (CRC-32 and length checked), nothing else


def gzip_writer(fileobj: BinaryIO, level: int = 1) -> BinaryIO:
    """A gzip stream written into `fileobj` (mtime 0, so a file's bytes depend only on its content)."""
    if ACCELERATED:
        # ISA-L levels are 0..3; its level 1 is faster than zlib's 1 at a similar ratio.
        return _igzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=min(level, 3), mtime=0)
    return _std_gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0)


class GzipReader:
    """A gzip file (one member or several) read as a stream of its uncompressed bytes, `input_chunk` bytes of
    compressed input at a time. `read(n)` returns n bytes, fewer only at the end. Errors as the gzip module's: a
    truncated stream is an EOFError, damaged or foreign data a gzip.BadGzipFile (an OSError)."""

    def __init__(self, path: str | os.PathLike, input_chunk: int = GZIP_INPUT_CHUNK):
        self._file = open(path, "rb", buffering=0)
        self._input_chunk = input_chunk
        self._decompressor: Any = None  # of the current member; None between members
        self._input = b""  # compressed input not yet consumed

    def read(self, size: int) -> bytes:
        pieces: list[bytes] = []
        need = size
        while need > 0:
            if self._decompressor is None:
                if not self._input:
                    self._input = self._file.read(self._input_chunk)
                    if not self._input:
                        break  # the end of the file, between members
                self._decompressor = _decompressobj(_GZIP_ONLY)
            d = self._decompressor
            data = self._input or self._file.read(self._input_chunk)
            try:
                piece = d.decompress(data, need)
            except _errors as e:
                raise _std_gzip.BadGzipFile(f"{getattr(self._file, 'name', '')}: not gzip or damaged: {e}") from None
            if d.eof:
                self._input = d.unused_data  # the next member, if any
                self._decompressor = None
            else:
                self._input = d.unconsumed_tail
                if not piece and not data:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            if piece:
                pieces.append(piece)
                need -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    @property
    def pending_input(self) -> int:
        """Bytes of compressed input read from the file and not yet consumed (at most `input_chunk`)."""
        return len(self._input)

    def close(self) -> None:
        self._file.close()
        self._decompressor = None
        self._input = b""

    def __enter__(self) -> "GzipReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gzip_open_read(path: str | os.PathLike, input_chunk: int = GZIP_INPUT_CHUNK) -> GzipReader:
    """Read a gzip file (one member or several) as a stream (see GzipReader)."""
    return GzipReader(path, input_chunk)
