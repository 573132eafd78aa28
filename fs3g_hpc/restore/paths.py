"""Which backed-up paths a restore takes and where each one goes below the destination, and the rule every such path
passes before anything is written (no empty, `.` or `..` component, no NUL, never absolute). Pure: no I/O."""

from __future__ import annotations

import os
from typing import Iterable

from ..errors import UsageError
from ..model.records import display_path


class Refused(Exception):
    """A path the restore will not write: it would leave the destination or pass through a symlink."""



def unsafe_reason(relative: bytes) -> str | None:
    """Why a relative path may not be written under the destination, or None when it is safe."""
    if not relative:
        return "empty path"
    if relative.startswith(b"/"):
        return "absolute path"
    if b"\0" in relative:
        return "NUL byte in path"
    for part in relative.split(b"/"):
        if part in (b"", b".", b".."):
            return f"path component {part.decode() or '(empty)'!r} would leave or confuse the destination"
    return None


def _normal_request(path: str | bytes) -> bytes:
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raise UsageError("restore paths are absolute paths of the backed-up tree", path=os.fsdecode(raw))
    return os.path.normpath(raw).replace(b"//", b"/")


class Selection:
    """Which backed-up paths a restore takes, and where each one goes below the destination.

    One requested path P: a file below P goes to DEST/<its path relative to P>; P itself, when it is a file, to
    DEST/<its name>. Several: relative to their longest common directory. None: the policy's roots, likewise.
    """

    def __init__(self, requests: Iterable[str | bytes]):
        self.requests = sorted({_normal_request(p) for p in requests})
        if not self.requests:
            raise UsageError("nothing to restore: no paths and no roots")
        if len(self.requests) == 1:
            self.base = self.requests[0]
        else:
            self.base = os.path.commonpath(self.requests)

    def covers(self, path: bytes) -> bool:
        return any(path == r or path.startswith(r if r == b"/" else r + b"/") for r in self.requests)

    def relative(self, path: bytes) -> bytes:
        if path == self.base:
            relative = os.path.basename(path)
        elif self.base == b"/":
            relative = path[1:]
        elif path.startswith(self.base + b"/"):
            relative = path[len(self.base) + 1:]
        else:
            raise Refused(f"not under {display_path(self.base)}")
        reason = unsafe_reason(relative)
        if reason:
            raise Refused(reason)
        return relative
