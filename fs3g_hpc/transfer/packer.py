"""One shard's small files and symlinks as packs: pax tar streams sent on the multipart engine (transfer/multipart.py).

In the bucket, under the lab prefix (model/packs.py has the key rules and the format):

    packs/<run_id>/<shard:06d>-<n:05d>.tar        the pack, in storage.pack_storage_class
    packs/<run_id>/<shard:06d>-<n:05d>.tar.idx    its index (gzip JSON lines), always STANDARD

Reading: the shard's small-file threads read consecutive files in batches (up to READ_BATCH_FILES files and a
quarter of the read window each), each file whole, with the same fstat before/after and change-retry as a
per-object small file (ShardUploader.read_small); SHA-256 and the tree hash are computed on those threads on the
bytes read. One writer appends the members IN PLAN ORDER to the current pack: member header + data + padding. A
file changed while read, vanished or unreadable is left out and reported by name, never journaled. A hard link whose inode already has a member in the same pack becomes a hard-link member.

Sending: the pack's bytes fill part buffers of `uploader.buffer_size_bytes`, taken from the shard's ByteBudget (the
same budget as large files' buffers), and are sent as multipart parts by the shard's part pool, CRC32 per part. A
pack closes when the next member would pass `storage.pack_size_bytes` (or at the end of the shard, or when the task
is stopped): END_OF_ARCHIVE, complete (composite CRC32 checked; a pack smaller than one part is one plain PUT), PUT
the index in STANDARD, then journal "pack-done" -- only then are its members done (runs/journal.py).

The pack's byte stream (part buffers, multipart, the closing PUT) is PackStream: the one writer of a pack, which
pack compaction (prune/compact.py) drives too, with members read from other packs instead of the filesystem.

Failures: a pack whose upload or index fails has every member reported FAILED with a reason naming the pack (its
upload aborted); the shard goes on with the next pack number. A kill -9 costs at most the open pack: its members were
journaled "packed" but not "pack-done", so the rerun aborts that upload and packs them again into its next n
(finished packs are never redone, never overwritten: n only grows).

Memory: the read window (batches of at most small_workers x small_file_threshold_bytes planned bytes in all: the
policy's small-file term), part buffers within the shared ByteBudget, and one pack's member list and compressed
index.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

from ..config import Policy, SmallFiles, StorageClass
from ..model.checksums import crc32_b64
from ..model.objectmeta import group_name, user_name
from ..model.packs import (BLOCK, END_OF_ARCHIVE, IndexEntry, IndexWriter, MemberInfo, MemberType, index_key,
                           member_header, pack_key, padding, relative_to_prefix)
from ..model.records import Entry, EntryKind
from ..model.treehash import tree_hash_and_sha256
from ..runs.journal import DonePack, OpenPack, PackedAt
from .lister import abort_upload
from .multipart import Interrupted, MultipartSender, put_checked

if TYPE_CHECKING:
    from .uploader import ShardUploader

log = logging.getLogger(__name__)

PACK_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class PackSettings:
    """What a shard's packer needs beyond the uploader's settings."""

    run_id: str
    shard: int
    pack_size_bytes: int
    storage_class: StorageClass

    @classmethod
    def from_policy(cls, policy: Policy, run_id: str, shard: int) -> "PackSettings | None":
        """The packer's settings, or None when the policy keeps small files as objects (or the plan predates packs:
        it has no run id, and goes on as it was planned)."""
        storage = policy.storage
        if not run_id or storage.small_files is not SmallFiles.PACKS:
            return None
        return cls(run_id, shard, storage.pack_size_bytes, storage.pack_storage_class)


# Files per read task: one future per file cost ~50 futex calls (GIL and condition hand-offs between the 64 small-file
# threads and the packer), 0.7 s of system time for 5,000 files of 10 KiB; a batch pays that once.
READ_BATCH_FILES = 64


class _Read(NamedTuple):
    """A small file (or symlink target) as read by a small-file thread: its bytes, the stat of the version read,
    its tree hash and SHA-256 (hex; one digest for data of one leaf or less)."""

    data: bytes
    st: os.stat_result
    tree_hash: str
    sha256: str


@dataclass
class _Member:
    entry: Entry
    st: os.stat_result
    at: PackedAt  # where its bytes are (a hard-link member: its first link's)


@dataclass
class _Pack:
    key: str
    n: int
    index: IndexWriter
    stream: "PackStream"
    members: list[_Member] = field(default_factory=list)
    first_link: dict[tuple[int, int], _Member] = field(default_factory=dict)

    @property
    def offset(self) -> int:
        return self.stream.offset


class PackStream:
    """The bytes of one pack as they are appended: the one writer of a pack's bytes, used by the backup's packer
    (ShardPacker, below) and by pack compaction (prune/compact.py, whose members come from other packs).

    Bytes fill part buffers of `part_size` (each taken with `acquire()` and given back with `release()`: the
    caller's budget) and are sent as multipart parts on `pool`, CRC32 per part; the upload is created at the first
    full buffer (`on_upload(upload_id)` then, so a journal can abort it after a kill). `finish(members)` writes
    END_OF_ARCHIVE and completes the upload, checked (composite CRC32 or size), or, for a pack smaller than one
    part, sends it as one checked PUT; `abort()` gives the buffer back and aborts the upload. `metadata(members)`
    gives the object's user metadata (members None for a multipart pack: fixed before its members are known)."""

    def __init__(self, client: Any, bucket: str, key: str, storage_class: StorageClass, part_size: int,
                 pool: ThreadPoolExecutor, *, metadata: Callable[[int | None], dict[str, str]],
                 acquire: Callable[[], None], release: Callable[[], None],
                 on_upload: Callable[[str], None] = lambda upload_id: None,
                 on_part_sent: Callable[[], None] = lambda: None):
        self.client, self.bucket, self.key = client, bucket, key
        self.storage_class, self.part_size, self.pool = storage_class, part_size, pool
        self.metadata, self.acquire, self.release = metadata, acquire, release
        self.on_upload, self.on_part_sent = on_upload, on_part_sent
        self.offset = 0
        self.buffer: bytearray | None = None
        self.fill = 0
        self.parts = 0
        self.sender: MultipartSender | None = None

    def write(self, data: bytes | memoryview) -> None:
        fill = self.fill
        if self.buffer is not None and fill + len(data) < self.part_size:  # the common case: it fits, no part ends
            self.buffer[fill:fill + len(data)] = data
            self.fill = fill + len(data)
            self.offset += len(data)
            return
        view = memoryview(data)
        while view:
            if self.buffer is None:
                self.acquire()
                self.buffer = bytearray(self.part_size)
                self.fill = 0
            n = min(len(view), self.part_size - self.fill)
            self.buffer[self.fill:self.fill + n] = view[:n]
            self.fill += n
            self.offset += n
            view = view[n:]
            if self.fill == self.part_size:
                self._send_buffer()

    def _send_buffer(self) -> None:
        """Hand the full (or, at the end, last) buffer to the part pool as the next part."""
        if self.sender is None:
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, Metadata=self.metadata(None),
                StorageClass=self.storage_class.value, ChecksumAlgorithm="CRC32")
            self.sender = MultipartSender(self.client, self.bucket, self.key, response["UploadId"], self.pool,
                                          self.on_part_sent)
            self.on_upload(self.sender.upload_id)
        if self.sender.errors:
            raise self.sender.errors[0]
        buffer, fill = self.buffer, self.fill
        assert buffer is not None
        self.buffer, self.fill = None, 0
        self.parts += 1
        view = memoryview(buffer)[:fill]
        self.sender.submit(self.parts, view, crc32_b64(view), self.release)

    def finish(self, members: int) -> tuple[str, int, str]:
        """END_OF_ARCHIVE, then the object completed and checked: its (ETag, size, CRC32)."""
        self.write(END_OF_ARCHIVE)
        size = self.offset
        if self.sender is None:  # smaller than one part: one plain PUT says the same
            assert self.buffer is not None
            etag, checksum = put_checked(self.client, self.bucket, self.key, memoryview(self.buffer)[:self.fill],
                                         self.metadata(members), self.storage_class)
            self.release_buffer()
        else:
            if self.fill:
                self._send_buffer()
            self.sender.wait()
            etag, checksum = self.sender.complete(size)
        return etag, size, checksum

    def release_buffer(self) -> None:
        if self.buffer is not None:
            self.buffer = None
            self.release()

    def abort(self) -> None:
        """Give the buffer back and abort the upload (after its parts in flight ended); never raises."""
        self.release_buffer()
        if self.sender is not None:
            try:
                self.sender.wait()
            except BaseException:  # noqa: BLE001 - the first error is the one the caller reports
                pass
            try:
                abort_upload(self.client, self.bucket, self.key, self.sender.upload_id)
            except Exception:  # noqa: BLE001 - the rerun (or the merge) aborts it from the journal
                log.warning("could not abort the upload of %s", self.key, exc_info=True)


class ShardPacker:
    """Packs one shard's small files and symlinks (see the module's docstring); driven by ShardUploader.run."""

    def __init__(self, up: ShardUploader, settings: PackSettings):
        self.up = up
        self.settings = settings
        self.part_size = up.settings.buffer_size_bytes
        self.pack: _Pack | None = None
        self.next_n = up.journal.next_pack
        # A pack's writes wait for buffers even while the task stops (stops are checked between members), so a
        # stopped task still closes the pack it has. At most `large_buffers` of its buffers at a time: one large
        # file's share of the budget, so the large files of the shard keep theirs.
        self._never = threading.Event()
        self._buffers = threading.Semaphore(up.settings.large_buffers)

    # -- driver ------------------------------------------------------------------------------------------------------

    def run(self, entries: Iterable[Entry], pool: ThreadPoolExecutor) -> None:
        self._abort_open_packs()
        s = self.up.settings
        # The read window holds at most the policy's small-file term (small_workers x small_file_threshold_bytes of
        # planned bytes), in batches of consecutive files so that up to small_workers threads read at once.
        window_bytes = s.small_workers * s.small_file_threshold_bytes
        batch_bytes = max(1, window_bytes // 4)
        window: deque[tuple[list[Entry], int, Future]] = deque()
        in_flight = 0
        batch: list[Entry] = []
        planned = 0
        try:
            for entry in entries:
                if self.up.stop.is_set():
                    break
                if batch and (len(batch) >= READ_BATCH_FILES or planned + entry.size_bytes > batch_bytes):
                    while window and (len(window) >= s.small_workers or in_flight + planned > window_bytes):
                        in_flight -= self._take_batch(*window.popleft())
                    window.append((batch, planned, pool.submit(self._read_batch, batch)))
                    in_flight += planned
                    batch, planned = [], 0
                batch.append(entry)
                planned += entry.size_bytes
            if batch and not self.up.stop.is_set():
                window.append((batch, planned, pool.submit(self._read_batch, batch)))
                batch = []
            while window and not self.up.stop.is_set():
                self._take_batch(*window.popleft())
        finally:
            # Stopped: what was read but not appended, or not read yet, is the rerun's.
            for entries_read, _, future in window:
                future.cancel()
                for entry in entries_read:
                    self.up.report_exception(entry, Interrupted())
            for entry in batch:
                self.up.report_exception(entry, Interrupted())
            if self.pack is not None:
                self._close()

    def _read_batch(self, batch: list[Entry]) -> list[_Read | BaseException]:
        """On a small-file thread: each file of the batch read whole and hashed (hashlib releases the GIL, so the
        hashes run beside the packer's appends), or the exception that stopped it."""
        out: list[_Read | BaseException] = []
        for entry in batch:
            try:
                data, st = self.up.read_small(entry)
                out.append(_Read(data, st, *tree_hash_and_sha256(data)))
            except Exception as e:  # noqa: BLE001 - reported by name by the packer's thread; the shard goes on
                out.append(e)
        return out

    def _take_batch(self, batch: list[Entry], planned: int, future: Future) -> int:
        results = future.result()  # _read_batch never raises
        for number, (entry, result) in enumerate(zip(batch, results)):
            if self.up.stop.is_set():
                for rest in batch[number:]:
                    self.up.report_exception(rest, Interrupted())
                break
            self._take(entry, result)
        return planned

    def _abort_open_packs(self) -> None:
        """A rerun: the packs the journal started and never finished are aborted; their members go into new ones."""
        journal = self.up.journal
        for pack in list(journal.open_packs.values()):
            if pack.upload_id:
                log.info("aborting the unfinished pack %s (upload %s)", pack.key, pack.upload_id)
                try:
                    abort_upload(self.up.client, self.up.settings.bucket, pack.key, pack.upload_id)
                except Exception:  # noqa: BLE001 - the merge aborts it again from the journal
                    log.warning("could not abort the unfinished pack %s", pack.key, exc_info=True)
            journal.open_packs.pop(pack.key, None)

    def _take(self, entry: Entry, read: _Read | BaseException) -> None:
        if isinstance(read, BaseException):
            self.up.report_exception(entry, read)
            return
        if entry.kind is EntryKind.FILE and read.st.st_size > self.up.settings.small_file_threshold_bytes:
            # Grown past the threshold since the plan: a large file keeps its own object.
            self.up.guarded_send_whole(entry, read.st, read.data)
            return
        try:
            self._append(entry, read)
        except Exception as e:  # noqa: BLE001 - the pack failed: every member (this one too) is reported
            self._fail_pack(e, entry)

    # -- members -----------------------------------------------------------------------------------------------------

    def _append(self, entry: Entry, read: _Read) -> None:
        data, st, tree, sha256 = read.data, read.st, read.tree_hash, read.sha256
        path = entry.path
        symlink = entry.kind is EntryKind.SYMLINK
        pack = self.pack
        first = None
        if not symlink and st.st_nlink > 1 and pack is not None:
            first = pack.first_link.get((st.st_dev, st.st_ino))
            if first is not None and (first.st.st_size, first.st.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                first = None
        if symlink:
            info = self._info(path, st, MemberType.SYMLINK, 0, link=data)
        elif first is not None:
            info = self._info(path, st, MemberType.HARDLINK, 0, link=first.entry.path)
        else:
            info = self._info(path, st, MemberType.FILE, len(data), sha256=sha256)
        header = member_header(info)
        body = 0 if info.type is not MemberType.FILE else len(data)
        total = len(header) + body + -body % BLOCK
        if info.type is MemberType.FILE and total + len(END_OF_ARCHIVE) > self.settings.pack_size_bytes:
            # One member alone would pass the pack size (a threshold above it): never packed, its own object.
            self.up.guarded_send_whole(entry, st, data)
            return
        if pack is not None and pack.members and pack.offset + total + len(END_OF_ARCHIVE) > \
                self.settings.pack_size_bytes:
            self._close()
            pack = None
            first = None
            if info.type is MemberType.HARDLINK:  # its first link is in the pack just closed: this one has data
                info = self._info(path, st, MemberType.FILE, len(data), sha256=sha256)
                header = member_header(info)
                body = len(data)
        if pack is None:
            pack = self._open()
        stream = pack.stream
        header_offset = stream.offset
        stream.write(header)
        data_offset = stream.offset
        if body:
            stream.write(data)
            stream.write(padding(body))
        at = PackedAt(header_offset, data_offset, info.sha256) if first is None else first.at
        member = _Member(entry, st, at)
        pack.members.append(member)
        if info.type is MemberType.FILE and st.st_nlink > 1:
            pack.first_link.setdefault((st.st_dev, st.st_ino), member)
        pack.index.add(IndexEntry.of(info, header_offset, data_offset))
        with self.up.journal_lock:
            self.up.journal.record_packed(pack.key, path, st.st_size, st.st_mtime_ns, tree, at)

    def _info(self, path: bytes, st: os.stat_result, kind: MemberType, size: int, *, link: bytes = b"",
              sha256: str = "") -> MemberInfo:
        return MemberInfo(path=path, type=kind, size_bytes=size, mtime_ns=st.st_mtime_ns,
                          atime_ns=st.st_atime_ns, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                          uname=user_name(st.st_uid), gname=group_name(st.st_gid), link_target=link, sha256=sha256)

    # -- the pack's stream -------------------------------------------------------------------------------------------

    def _open(self) -> _Pack:
        s, up = self.settings, self.up
        n = self.next_n
        self.next_n += 1
        key = pack_key(up.settings.prefix, s.run_id, s.shard, n)

        def started(upload_id: str) -> None:
            with up.journal_lock:
                up.journal.record_pack_started(OpenPack(key, upload_id, n))

        stream = PackStream(up.client, up.settings.bucket, key, s.storage_class, self.part_size, up.part_pool,
                            metadata=lambda members: self._metadata(n, members), acquire=self._take_buffer,
                            release=self._give_back, on_upload=started,
                            on_part_sent=lambda: up.totals.add(parts_sent=1))
        pack = _Pack(key, n, IndexWriter(relative_to_prefix(up.settings.prefix, key), s.run_id), stream)
        started("")  # before any byte is sent: a rerun never reuses this n
        self.pack = pack
        return pack

    def _take_buffer(self) -> None:
        self._buffers.acquire()
        try:
            self.up.budget.acquire(self.part_size, self._never)
        except BaseException:
            self._buffers.release()
            raise

    def _metadata(self, n: int, members: int | None) -> dict[str, str]:
        meta = {"fs3g-run-id": self.settings.run_id, "fs3g-shard": str(self.settings.shard),
                "fs3g-pack": str(n), "fs3g-pack-format": PACK_FORMAT_VERSION}
        if members is not None:  # a multipart pack's metadata is fixed before its members are known
            meta["fs3g-members"] = str(members)
        return meta

    def _close(self) -> None:
        pack = self.pack
        assert pack is not None
        self.pack = None
        if not pack.members:
            pack.stream.release_buffer()
            return
        up = self.up
        try:
            etag, size, checksum = pack.stream.finish(len(pack.members))
            index = pack.index.finish(size)
            index_etag, _ = put_checked(up.client, up.settings.bucket, index_key(pack.key), index, {},
                                        StorageClass.STANDARD)
        except Exception as e:  # noqa: BLE001 - every member is reported, naming the pack
            self._fail_members(pack, e)
            return
        with up.journal_lock:
            up.journal.record_pack_done(DonePack(pack.key, etag, size, checksum, index_etag))
        up.totals.add(files_done=len(pack.members), bytes_done=sum(m.st.st_size for m in pack.members))

    def _give_back(self) -> None:
        self.up.budget.release(self.part_size)
        self._buffers.release()

    def _fail_pack(self, e: BaseException, entry: Entry) -> None:
        """The current pack cannot be finished: it and `entry` are reported; the next member opens a new pack."""
        pack = self.pack
        self.pack = None
        if pack is None:
            self.up.report_exception(entry, e)
            return
        self._fail_members(pack, e, () if any(m.entry.path == entry.path for m in pack.members) else (entry,))

    def _fail_members(self, pack: _Pack, e: BaseException, also: tuple[Entry, ...] = ()) -> None:
        pack.stream.abort()
        log.warning("pack %s failed (%d members): %s", pack.key, len(pack.members), e)
        for entry in [*(m.entry for m in pack.members), *also]:
            self.up.report_exception(entry, e, context=f"pack {pack.key}")

