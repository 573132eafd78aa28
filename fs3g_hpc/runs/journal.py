"""A backup shard's journal, results/shard-N.journal: append-only JSON lines, one per finished file or multipart
event. The uploader (transfer/uploader.py) writes it; a rerun of the shard, the merge and `status` read it back.

    {"t": "done", "p": path, "s": size, "m": mtime_ns, "k": key, "h": tree hash, "e": ETag, "c": checksum}
    {"t": "mpu", "p": path, "u": upload id, "k": key, "ps": part size, "s": size, "m": mtime_ns}
    {"t": "mpu-end", "p": path, "u": upload id, "how": ...}

Packs (transfer/packer.py):

    {"t": "pack", "k": pack key, "u": upload id, "n": n}          a pack's multipart upload started ("u": "" for a
                                                                   pack sent with one PUT at its end)
    {"t": "packed", "k": pack key, "p": path, "s": size, "m": mtime_ns, "h": tree hash, "sha": sha256,
     "ho": header offset, "do": data offset}                       a member written into the pack's stream
    {"t": "pack-done", "k": pack key, "e": ETag, "b": pack bytes, "c": composite CRC32, "i": index ETag}

A member counts as done only once its pack's "pack-done" line is read (the pack completed and its index written):
until then it is pending, and a pack started and never done is an open pack, whose upload a rerun aborts before it
packs those members again into its next pack number.
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


_json = json.JSONEncoder().encode  # a str as the journal's JSON string (ASCII, escaped as json.dumps does)


@dataclass(frozen=True)
class PackedAt:
    """Where a packed member's bytes are: its member header's and its data's offsets in the pack, its SHA-256."""

    header_offset: int
    data_offset: int
    sha256: str


@dataclass(frozen=True)
class DoneRecord:
    """What the uploader recorded for one backed-up file: the version it read and the object it wrote (for a packed
    member: `key` is its pack's key, `etag` the pack's, and `packed` says where in the pack)."""

    size_bytes: int
    mtime_ns: int
    key: str
    etag: str
    tree_hash: str
    packed: PackedAt | None = None


@dataclass(frozen=True)
class DonePack:
    """A finished pack: its key, ETag, size, composite CRC32 ("" when sent with one PUT) and its index's ETag."""

    key: str
    etag: str
    size_bytes: int
    checksum: str
    index_etag: str


@dataclass(frozen=True)
class OpenPack:
    """A pack whose upload the journal started and did not finish ("" upload id: nothing sent yet)."""

    key: str
    upload_id: str
    n: int


@dataclass
class JournalState:
    """What one shard's journal says: finished files, open multipart uploads, finished and open packs, and the
    pack number its next pack takes."""

    done: dict[bytes, DoneRecord]
    open_uploads: dict[bytes, "OpenUpload"]
    packs: dict[str, DonePack]
    open_packs: dict[str, OpenPack]
    next_pack: int = 0


def read_journal(path: Path) -> JournalState:
    """The journal's state (one shard's worth: bounded by `shards.max_files`); an absent journal is empty."""
    return _parse_journal(path) if path.exists() else JournalState({}, {}, {}, {})


def read_done_records(path: Path) -> dict[bytes, DoneRecord]:
    """The journal's finished files, packed members among them once their pack is done."""
    return read_journal(path).done


def read_open_uploads(path: Path) -> dict[bytes, "OpenUpload"]:
    """Multipart uploads the journal started and did not end (a task killed or stopped mid-file)."""
    return read_journal(path).open_uploads


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload the journal started and did not finish."""

    upload_id: str
    key: str
    part_size: int
    size_bytes: int
    mtime_ns: int


def _parse_journal(path: Path) -> JournalState:
    state = JournalState({}, {}, {}, {})
    done, open_uploads = state.done, state.open_uploads
    pending: dict[str, dict[bytes, DoneRecord]] = {}  # members of packs not done yet, by pack key
    with open(path, encoding="ascii") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the work it described is redone
            kind = record["t"]
            if kind == "pack":
                state.open_packs[record["k"]] = OpenPack(record["k"], record["u"], record["n"])
                pending.setdefault(record["k"], {})
                state.next_pack = max(state.next_pack, record["n"] + 1)
                continue
            if kind == "pack-done":
                pack = DonePack(record["k"], record["e"], record["b"], record.get("c") or "", record["i"])
                state.packs[pack.key] = pack
                state.open_packs.pop(pack.key, None)
                for member, r in pending.pop(pack.key, {}).items():
                    done[member] = DoneRecord(r.size_bytes, r.mtime_ns, r.key, pack.etag, r.tree_hash, r.packed)
                    open_uploads.pop(member, None)
                continue
            file_path = os.fsencode(record["p"])
            if kind == "done":
                done[file_path] = DoneRecord(record["s"], record["m"], record["k"], record["e"], record["h"])
                open_uploads.pop(file_path, None)
            elif kind == "packed":
                pending.setdefault(record["k"], {})[file_path] = DoneRecord(
                    record["s"], record["m"], record["k"], "", record["h"],
                    PackedAt(record["ho"], record["do"], record["sha"]))
            elif kind == "mpu":
                open_uploads[file_path] = OpenUpload(record["u"], record["k"], record["ps"], record["s"], record["m"])
            elif kind == "mpu-end":
                open_uploads.pop(file_path, None)
    return state


class ShardJournal:
    """Append-only JSON lines, one per finished file or multipart event, flushed as written (a `kill -9` loses
    nothing already written; a pack's "packed" lines are flushed with the line that makes them count, its
    "pack-done") and fsynced every `fsync_interval_s`. Reading it back gives what a rerun may skip.

    Memory: one small record per file of the shard (bounded by `shards.max_files`).
    """

    def __init__(self, path: Path, fsync_interval_s: float = 2.0):
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        state = read_journal(path)
        self.done: dict[bytes, DoneRecord] = state.done  # files already backed up
        self.open_uploads: dict[bytes, OpenUpload] = state.open_uploads
        self.open_packs: dict[str, OpenPack] = state.open_packs  # a rerun aborts them and packs their members again
        self.next_pack = state.next_pack
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

    def record_pack_started(self, pack: OpenPack) -> None:
        self._write({"t": "pack", "k": pack.key, "u": pack.upload_id, "n": pack.n})

    def record_packed(self, key: str, path: bytes, size_bytes: int, mtime_ns: int, tree_hash: str,
                      at: PackedAt) -> None:
        # Not flushed one by one: a member counts only once its pack's "pack-done" follows, and that line flushes
        # every one before it (a kill -9 before it redoes the open pack whatever part of its lines were written).
        # The line json.dumps would write for {"t": "packed", "k": ..., "p": ..., "s", "m", "h", "sha", "ho", "do"},
        # formatted directly (one per packed member: the generic encoder cost more than the rest of the line).
        self._file.write('{"t":"packed","k":%s,"p":%s,"s":%d,"m":%d,"h":%s,"sha":%s,"ho":%d,"do":%d}\n' % (
            _json(key), _json(_path_text(path)), size_bytes, mtime_ns, _json(tree_hash), _json(at.sha256),
            at.header_offset, at.data_offset))

    def record_pack_done(self, pack: DonePack) -> None:
        self._write({"t": "pack-done", "k": pack.key, "e": pack.etag, "b": pack.size_bytes, "c": pack.checksum,
                     "i": pack.index_etag})

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
