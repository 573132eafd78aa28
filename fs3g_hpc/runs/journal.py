"""A backup shard's journal, results/shard-N.journal: append-only JSON lines, one per finished file or multipart
event. The uploader (transfer/uploader.py) writes it; a rerun of the shard, the merge and `status` read it back.

    {"t": "done", "p": path, "s": size, "m": mtime_ns, "k": key, "h": tree hash, "e": ETag, "c": checksum}
    {"t": "mpu", "p": path, "u": upload id, "k": key, "ps": part size, "s": size, "m": mtime_ns}
    {"t": "mpu-end", "p": path, "u": upload id, "how": ...}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from time import monotonic as time_monotonic

from .layout import FILE_MODE


def _path_text(path: bytes) -> str:
    return os.fsdecode(path)  # surrogateescape: JSON keeps any byte exact


@dataclass(frozen=True)
class DoneRecord:
    """What the uploader recorded for one backed-up file: the version it read and the object it wrote."""

    size_bytes: int
    mtime_ns: int
    key: str
    etag: str
    tree_hash: str


def read_done_records(path: Path) -> dict[bytes, DoneRecord]:
    """The journal's finished files (one shard's worth: bounded by `shards.max_files`)."""
    return _parse_journal(path)[0] if path.exists() else {}


def read_open_uploads(path: Path) -> dict[bytes, "OpenUpload"]:
    """Multipart uploads the journal started and did not end (a task killed or stopped mid-file)."""
    return _parse_journal(path)[1] if path.exists() else {}


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload the journal started and did not finish."""

    upload_id: str
    key: str
    part_size: int
    size_bytes: int
    mtime_ns: int


def _parse_journal(path: Path) -> tuple[dict[bytes, DoneRecord], dict[bytes, "OpenUpload"]]:
    """(finished files, multipart uploads started and not ended) from a shard journal."""
    done: dict[bytes, DoneRecord] = {}
    open_uploads: dict[bytes, OpenUpload] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the work it described is redone
            file_path = os.fsencode(record["p"])
            kind = record["t"]
            if kind == "done":
                done[file_path] = DoneRecord(record["s"], record["m"], record["k"], record["e"], record["h"])
                open_uploads.pop(file_path, None)
            elif kind == "mpu":
                open_uploads[file_path] = OpenUpload(record["u"], record["k"], record["ps"], record["s"], record["m"])
            elif kind == "mpu-end":
                open_uploads.pop(file_path, None)
    return done, open_uploads


class ShardJournal:
    """Append-only JSON lines, one per finished file or multipart event, flushed as written (a `kill -9` loses
    nothing already written) and fsynced every `fsync_interval_s`. Reading it back gives what a rerun may skip.

    Memory: one small record per file of the shard (bounded by `shards.max_files`).
    """

    def __init__(self, path: Path, fsync_interval_s: float = 2.0):
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        self.done: dict[bytes, DoneRecord] = {}  # files already backed up
        self.open_uploads: dict[bytes, OpenUpload] = {}
        if path.exists():
            self.done, self.open_uploads = _parse_journal(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._file = os.fdopen(fd, "a", encoding="ascii")
        self._last_sync = 0.0

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        now = time_monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._file.fileno())
            self._last_sync = now

    def record_done(self, path: bytes, size_bytes: int, mtime_ns: int, key: str, tree_hash: str, etag: str,
                    checksum: str | None) -> None:
        self._write({"t": "done", "p": _path_text(path), "s": size_bytes, "m": mtime_ns, "k": key, "h": tree_hash,
                     "e": etag, "c": checksum})

    def record_upload_started(self, path: bytes, upload: OpenUpload) -> None:
        self._write({"t": "mpu", "p": _path_text(path), "u": upload.upload_id, "k": upload.key,
                     "ps": upload.part_size, "s": upload.size_bytes, "m": upload.mtime_ns})

    def record_upload_ended(self, path: bytes, upload_id: str, how: str) -> None:
        self._write({"t": "mpu-end", "p": _path_text(path), "u": upload_id, "how": how})

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
