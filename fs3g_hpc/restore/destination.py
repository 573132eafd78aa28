"""The safe writer of a restore: below one directory and nowhere else.

Safety: every path is made relative to the requested directory and refused when a component is empty, `.`, `..` or
holds NUL; the destination is walked one component at a time with O_NOFOLLOW, so a symlink inside it (one a restore
made, or anyone else) is never followed (directories are opened the same way before their metadata is set); data
goes to a temporary file beside the target and is renamed over it only when complete and verified against its
SHA-256 tree hash; a hard link is made under a temporary name, checked to be the restored file's inode, and renamed
likewise; an existing file is left alone unless `overwrite`.

Data comes back sparse: blocks of zeros (SPARSE_BLOCK_BYTES, aligned) are seeked over in a file sized first. Directory
metadata (mode, times, owner as root) is applied through a directory fd opened the same way. No S3 here: the bytes and
their verification come from restore/task.py.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..model.objectmeta import parse_ns
from ..model.packs import MemberInfo
from ..model.records import Entry, display_path
from .paths import Refused, unsafe_reason

# Blocks of zeros this long (and aligned to it) are not written, so that a sparse file comes back sparse: a multiple of
# every common filesystem block size, and few enough comparisons per GiB to cost nothing next to the download.
SPARSE_BLOCK_BYTES = 64 * 1024
_ZERO_BLOCK = bytes(SPARSE_BLOCK_BYTES)
# linkat's errors that mean "no hard link here" (too many links, or none on this filesystem): a copy of its own instead.
NO_LINK_ERRNOS = {errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP}


class DiskFull(Exception):
    pass



class Destination:
    """Writes below one directory and nowhere else: components opened with O_NOFOLLOW, files created beside their
    target under a temporary name and renamed into place."""

    DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.root_fd)

    def parent(self, relative: bytes, *, create: bool = True) -> tuple[int, bytes]:
        """An open fd of the target's directory (created as needed) and the target's name; the caller closes it.
        With `create=False` nothing is made: FileNotFoundError when a directory on the way is missing."""
        reason = unsafe_reason(relative)
        if reason:
            raise Refused(reason)
        *dirs, name = relative.split(b"/")
        fd = os.dup(self.root_fd)
        try:
            for part in dirs:
                try:
                    child = os.open(part, self.DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass  # another thread made it
                    child = os.open(part, self.DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Refused(f"{display_path(part)} in the destination is a symlink or not a directory; "
                                      "not followed") from e
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, name

    @staticmethod
    def existing(dir_fd: int, name: bytes) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def temp_name(name: bytes) -> bytes:
        # Short and fixed-length: the target's own name may already be 255 bytes.
        return b".fs3g-restore-" + secrets.token_hex(8).encode()


@dataclass(frozen=True)
class FileMeta:
    mtime_ns: int | None
    atime_ns: int | None
    mode: int | None
    uid: int | None
    gid: int | None

    @classmethod
    def of(cls, metadata: dict[str, str], entry: Entry, *, catalog_times: bool) -> FileMeta:
        def number(key: str, parse: Callable[[str], int]) -> int | None:
            try:
                return parse(metadata[key])
            except (KeyError, ValueError):
                return None

        # 0 and negative times are times like any other (`touch -d @0`): test for absence, never for truth. A
        # catalog's mtime is the uploaded version's, as an exact integer: it comes first. An entry from a bucket
        # listing knows no times (its fields are 0): there only the object's metadata can say.
        mtime = entry.mtime_ns if catalog_times else number("mtime", parse_ns)
        atime = number("atime", parse_ns)
        if atime is None and catalog_times:
            atime = entry.atime_ns
        return cls(mtime, atime, number("mode", lambda t: int(t, 8)), number("owneruid", int), number("groupuid", int))

    @classmethod
    def of_entry(cls, entry: Entry) -> FileMeta:
        """From a catalog's (or a snapshot's) record alone: what the backup wrote into the object's metadata, read
        from the record instead (a large file restored without a HEAD)."""
        return cls(entry.mtime_ns, entry.atime_ns, entry.mode, entry.uid, entry.gid)

    @classmethod
    def of_member(cls, info: MemberInfo, entry: Entry, *, catalog_times: bool) -> FileMeta:
        """A packed file's: its member header says what an object's metadata says (the catalog's mtime first)."""
        return cls(entry.mtime_ns if catalog_times else info.mtime_ns, info.atime_ns, info.mode, info.uid, info.gid)

    @property
    def times(self) -> tuple[int, int]:
        """(atime, mtime) for os.utime; the mtime stands in for a missing atime. Only when mtime_ns is known."""
        assert self.mtime_ns is not None
        return (self.mtime_ns if self.atime_ns is None else self.atime_ns, self.mtime_ns)



def restore_directory(dest: Destination, relative: bytes, entry: Entry, as_root: bool) -> None:
    dir_fd, name = dest.parent(relative)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)  # an empty directory: no file made it
        except FileExistsError:
            pass
        try:
            fd = os.open(name, Destination.DIR_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused("a symlink or a file is in the way of this directory; not followed") from e
            raise
    finally:
        os.close(dir_fd)
    try:
        if as_root:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, stat.S_IMODE(entry.mode))  # after chown, which clears set-id bits
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
    finally:
        os.close(fd)



def unlink_quietly(dir_fd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _full(e: OSError, root: Path) -> DiskFull:
    return DiskFull(f"no space left on the destination {root} ({e.strerror}); nothing partial was kept: free space "
                    "and run the same restore again (it skips what is already restored)")



_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range's dirty pages, do not wait


@functools.lru_cache(maxsize=1)
def sync_file_range() -> Callable[..., int] | None:
    """libc's sync_file_range(2) (Linux), which the os module does not offer; None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a finished part to disk while the other parts download, so that the fsync before the rename
    waits for little (it took 0.4 s for 1 GiB written in one go). Best effort: a failure here only moves the work
    to the fsync, which reports errors."""
    function = sync_file_range()
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, root: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _full(e, root) from e
        raise


def pwrite_sparse(fd: int, data: bytes | memoryview, offset: int, root: Path) -> None:
    """`data` at `offset`, except its all-zero SPARSE_BLOCK_BYTES-aligned blocks, which are skipped (seeked over):
    the file is new and already sized with ftruncate, so they read back as zeros, and stay holes where the
    filesystem keeps holes. Consecutive data blocks go in one write. (The caller hashes every byte, zeros too.)"""
    view = memoryview(data).cast("B")
    size = len(view)
    pos = 0
    pending = 0  # start of the data not yet written
    while pos < size:
        end = min(size, pos + SPARSE_BLOCK_BYTES - (offset + pos) % SPARSE_BLOCK_BYTES)
        # Data blocks mostly fail on their end bytes; then bytes == bytes is a memcmp (comparing memoryviews walks
        # the elements one by one).
        if view[pos] == 0 and view[end - 1] == 0 and view[pos:end].tobytes() == _ZERO_BLOCK[:end - pos]:
            if pending < pos:
                _pwrite_all(fd, view[pending:pos], offset + pending, root)
            pending = end
        pos = end
    if pending < size:
        _pwrite_all(fd, view[pending:size], offset + pending, root)
