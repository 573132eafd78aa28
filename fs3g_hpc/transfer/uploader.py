"""The threaded buffered uploader: one shard's entries to S3.

Small files (and symlinks), `storage.small_files: objects`: a pool of `small_workers` threads, each reading a whole
file and sending it with one PUT (through transfer/lean.py's per-object engine unless `uploader.engine: botocore`).
With `packs`, they go to the shard's packer (transfer/packer.py) instead, which reads them on the same threads and
streams them into packs, concurrently with the large files.
Large files: `large_workers` files in flight; for each, `readers_per_file` reader threads fill that file's buffers with
consecutive parts (one reader = a strictly sequential read) while a shared pool of upload threads sends full buffers as
multipart parts (transfer/multipart.py, the engine packs use too), so the disk is read sequentially and the network
in parallel.

Memory ceiling (the policy's formula): large files' and packs' part buffers never hold more than
`large_workers × large_buffers × buffer_size_bytes` in all (one global byte budget; a file whose parts must grow past
the buffer size gets fewer, bigger buffers), small files at most `small_workers × small_file_threshold` (files read
at once, for objects or packs alike).

Integrity: every PUT and part carries a CRC32 the server checks; a checksum rejection (a part damaged in flight) is
sent again from the buffer. A completed multipart object is checked against the composite CRC32 of its parts (or its
size). The SHA-256 tree hash is computed while reading: in the metadata of single-PUT objects, and as the object tag
`sha256hashtree` of multipart objects (whose metadata is fixed before the data is read; a tag costs one request and,
unlike a self-copy, works on archived objects and never rewrites the data).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Iterator

import botocore.exceptions

from ..config import Engine, Policy, StorageClass
from ..runs.journal import OpenUpload, ShardJournal
from ..model.checksums import crc32_b64
from ..model.keys import KeyClass, ObjectKey, object_key, pathmap_key
from ..model.objectmeta import TREEHASH_KEY, object_metadata
from ..model.records import Entry, EntryKind, display_path
from ..model.s3limits import ObjectTooLarge, part_size_for
from ..model.sizes import MIB
from ..model.treehash import TreeHasher, leaf_digests
from .multipart import ByteBudget, FileChanged, Interrupted, MultipartSender, UploadError, client_error_code, \
    put_checked
from .packer import PackSettings, ShardPacker
from .lean import lean_client
from .target import classify

log = logging.getLogger(__name__)

class Outcome(Enum):
    UPLOADED = "uploaded"
    ALREADY_DONE = "already done"
    CHANGED = "changed while read"
    VANISHED = "vanished"
    UNREADABLE = "unreadable"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class UploadSettings:
    bucket: str
    prefix: str
    small_file_threshold_bytes: int
    large_storage_class: StorageClass
    small_workers: int
    large_workers: int
    large_buffers: int
    buffer_size_bytes: int
    readers_per_file: int
    change_retries: int = 2
    packs: PackSettings | None = None  # small files and symlinks go into packs (transfer/packer.py)
    engine: Engine = Engine.AUTO  # single PUTs of whole files: transfer/lean.py where it can serve them

    @classmethod
    def from_policy(cls, policy: Policy, packs: PackSettings | None = None) -> "UploadSettings":
        up, storage = policy.uploader, policy.storage
        large_class = storage.archive_storage_class if storage.upload_large_to_archive else StorageClass.STANDARD
        return cls(policy.s3.bucket, policy.s3.prefix, storage.small_file_threshold_bytes, large_class,
                   up.small_workers, up.large_workers, up.large_buffers, up.buffer_size_bytes, up.readers_per_file,
                   packs=packs, engine=up.engine)

    @property
    def buffer_budget_bytes(self) -> int:
        return self.large_workers * self.large_buffers * self.buffer_size_bytes


@dataclass
class Totals:
    """Counters shared by the workers (under `lock`), read by the progress reporter."""

    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    parts_sent: int = 0
    parts_reused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class FileReport:
    path: bytes
    outcome: Outcome
    detail: str = ""
    # Whether a retry round may mend it: throttling, 5xx, a lost connection, a file changed while read may; access
    # denied, no such bucket, refused credentials, a vanished or unreadable file, a name S3 refuses may not.
    retryable: bool = True


class ShardUploader:
    """Uploads the entries of one shard; `run()` returns the per-file problems (successes go to the journal)."""

    def __init__(self, client: Any, settings: UploadSettings, journal: ShardJournal, stop: threading.Event,
                 report: Callable[[FileReport], None], totals: Totals):
        self.client = client
        self.settings = settings
        self.journal = journal
        self.stop = stop
        self.report = report
        self.totals = totals
        self.budget = ByteBudget(settings.buffer_budget_bytes)
        # The PUTs of whole files (the per-object path) without botocore's pipeline; None: the client's put_object.
        self.putter = lean_client(client) if settings.engine is Engine.AUTO else None
        self.part_pool = ThreadPoolExecutor(max(1, settings.large_workers * settings.large_buffers),
                                            thread_name_prefix="fs3g-part")
        self.journal_lock = threading.Lock()
        self._started_uploads: dict[str, tuple[bytes, str]] = {}  # upload id -> (path, key): to abort at the end
        self._uploads_lock = threading.Lock()

    # -- driver ------------------------------------------------------------------------------------------------------

    def run(self, entries: Callable[[], Iterable[Entry]], *, large_files: int | None = None) -> None:
        """Upload the shard's entries (`entries()` streams them; with packs it is read twice: once by the packer for
        the small files and symlinks, once here for the rest, so that both run concurrently -- unless the plan
        counted no large file in the shard (`large_files` 0): then once, by the packer)."""
        s = self.settings
        small_slots = threading.Semaphore(s.small_workers * 2)
        large_slots = threading.Semaphore(s.large_workers)
        packer_errors: list[BaseException] = []
        with ThreadPoolExecutor(s.small_workers, thread_name_prefix="fs3g-small") as small_pool, \
                ThreadPoolExecutor(s.large_workers, thread_name_prefix="fs3g-large") as large_pool:
            packing = None
            if s.packs is not None:
                packer = ShardPacker(self, s.packs)

                def pack() -> None:
                    try:
                        packer.run(self._pending(entries(), small=True), small_pool)
                    except BaseException as e:  # noqa: BLE001 - raised in the driver's thread below
                        packer_errors.append(e)

                packing = threading.Thread(target=pack, name="fs3g-packer")
                packing.start()
            others = entries() if packing is None or large_files != 0 else ()
            for entry in self._pending(others, small=None if packing is None else False):
                large = self._large(entry)
                slots, pool, work = ((large_slots, large_pool, self._large_file) if large
                                     else (small_slots, small_pool, self._small_entry))
                while not slots.acquire(timeout=0.5):
                    if self.stop.is_set():
                        break
                else:
                    future = pool.submit(self._guarded, work, entry)
                    future.add_done_callback(lambda _f, sem=slots: sem.release())
            if packing is not None:
                packing.join()
        self.part_pool.shutdown(wait=True)
        if packer_errors:
            raise packer_errors[0]

    def _large(self, entry: Entry) -> bool:
        return entry.kind is EntryKind.FILE and entry.size_bytes > self.settings.small_file_threshold_bytes

    def _pending(self, entries: Iterable[Entry], small: bool | None) -> Iterator[Entry]:
        """The entries not yet done (the done ones counted as skipped); `small`: only the small files and symlinks
        (True), only the others (False), or all (None)."""
        done = self.journal.done
        for entry in entries:
            if self.stop.is_set():
                return
            if small is not None and self._large(entry) == small:
                continue
            if done and entry.path in done:  # a first run has none: no path decoded for the lookup
                self.totals.add(files_skipped=1, files_done=1, bytes_done=entry.size_bytes)
                continue
            yield entry

    def _guarded(self, work: Callable[[Entry], None], entry: Entry) -> None:
        try:
            work(entry)
        except Exception as e:  # noqa: BLE001 - one file's failure must not stop the shard; it is reported by name
            self.report_exception(entry, e)

    def guarded_send_whole(self, entry: Entry, st: os.stat_result, data: bytes) -> None:
        """A file read whole that a pack does not take: its own object, keyed by its size as any file (failures
        reported by name)."""
        self._guarded(lambda e: self._send_file(e, st, data), entry)

    def report_exception(self, entry: Entry, e: BaseException, *, context: str = "") -> None:
        """Report why `entry` was not backed up (the one mapping of exceptions to outcomes, packs included);
        `context` (a pack's key) prefixes the reason."""
        def why(detail: str) -> str:
            return f"{context}: {detail}" if context else detail

        if isinstance(e, Interrupted):
            self.report(FileReport(entry.path, Outcome.INTERRUPTED,
                                   why("stopped before it finished; a rerun resumes")))
        elif isinstance(e, FileChanged):
            self._fail(entry, Outcome.CHANGED, why(str(e)))
        elif isinstance(e, FileNotFoundError):
            self._fail(entry, Outcome.VANISHED, why("no longer exists"), retryable=False)
        elif isinstance(e, OSError):
            # Permissions and names the filesystem refuses stay so; EIO or ESTALE on a parallel filesystem may pass.
            permanent = isinstance(e, PermissionError) or e.errno in (errno.ENAMETOOLONG, errno.ELOOP)
            self._fail(entry, Outcome.UNREADABLE, why(e.strerror or str(e)), retryable=not permanent)
        elif isinstance(e, UploadError):
            self._fail(entry, Outcome.FAILED, why(str(e)), retryable=e.retryable)
        elif isinstance(e, botocore.exceptions.BotoCoreError):
            self._fail(entry, Outcome.FAILED, why(f"{type(e).__name__}: {e}"), retryable=classify(e).retryable)
        elif isinstance(e, botocore.exceptions.ClientError):
            self._fail(entry, Outcome.FAILED, why(f"S3 {client_error_code(e)}: {e}"), retryable=classify(e).retryable)
        else:
            log.error("unexpected error on %s", display_path(entry.path), exc_info=e)
            # The same code on the same file fails the same way: a retry round would only repeat it.
            self._fail(entry, Outcome.FAILED, why(f"internal error {type(e).__name__}: {e}"), retryable=False)

    def _fail(self, entry: Entry, outcome: Outcome, detail: str, *, retryable: bool = True) -> None:
        self.totals.add(files_failed=1)
        self.report(FileReport(entry.path, outcome, detail, retryable))

    def _done(self, entry: Entry, st: os.stat_result, key: str, tree_hash: str, etag: str,
              checksum: str | None) -> None:
        with self.journal_lock:
            self.journal.record_done(entry.path, st.st_size, st.st_mtime_ns, key, tree_hash, etag, checksum)
        self.totals.add(files_done=1, bytes_done=st.st_size)

    # -- keys and requests ---------------------------------------------------------------------------------------------

    def _key(self, klass: KeyClass, entry: Entry) -> ObjectKey:
        key = object_key(self.settings.prefix, klass, entry.path)
        if key.long_path_sha256 is not None:
            # The exact path of a hashed key, stored beside it so a restore from the bucket alone can rebuild it.
            body = entry.path
            (self.putter or self.client).put_object(
                Bucket=self.settings.bucket, Key=pathmap_key(self.settings.prefix, key.long_path_sha256), Body=body,
                ChecksumCRC32=crc32_b64(body))
        return key

    def _put(self, key: str, data: bytes, metadata: dict[str, str], storage_class: StorageClass) -> tuple[str, str]:
        return put_checked(self.client, self.settings.bucket, key, data, metadata, storage_class, putter=self.putter)

    # -- small files and symlinks --------------------------------------------------------------------------------------

    def read_small(self, entry: Entry) -> tuple[bytes, os.stat_result]:
        """A small file's bytes (or a symlink's target) and the stat of the version read: the file is read whole,
        fstat before and after; one that changed meanwhile is read again (`change_retries` times), then FileChanged."""
        if entry.kind is EntryKind.SYMLINK:
            target = os.readlink(entry.path)
            st = os.lstat(entry.path)
            if not stat.S_ISLNK(st.st_mode):
                raise UploadError("no longer a symlink")
            return target, st
        retries = self.settings.change_retries
        for attempt in range(retries + 1):
            if self.stop.is_set():
                raise Interrupted()
            fd, before = _open_regular(entry.path)
            try:
                data = _read_all(fd, before.st_size)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if _same_version(before, after) and len(data) == after.st_size:
                return data, after
        raise FileChanged(f"size or mtime changed while it was read ({retries + 1} tries)")

    def _small_entry(self, entry: Entry) -> None:
        data, st = self.read_small(entry)
        if entry.kind is EntryKind.SYMLINK:
            self._send_whole(entry, st, data, KeyClass.SYMLINK, StorageClass.STANDARD)
            return
        self._send_file(entry, st, data)

    def _send_file(self, entry: Entry, st: os.stat_result, data: bytes) -> None:
        klass = KeyClass.SMALL if st.st_size <= self.settings.small_file_threshold_bytes else KeyClass.LARGE
        self._send_whole(entry, st, data, klass,
                         StorageClass.STANDARD if klass is KeyClass.SMALL else self.settings.large_storage_class)

    def _send_whole(self, entry: Entry, st: os.stat_result, data: bytes, klass: KeyClass,
                    storage_class: StorageClass) -> None:
        hasher = TreeHasher()
        hasher.update(data)
        tree = hasher.hexdigest()
        key = self._key(klass, entry)
        meta = object_metadata(_as_entry(entry, st), tree, key.long_path_sha256)
        etag, checksum = self._put(key.key, data, meta, storage_class)
        self._done(entry, st, key.key, tree, etag, checksum)

    # -- large files ---------------------------------------------------------------------------------------------------

    def _large_file(self, entry: Entry) -> None:
        s = self.settings
        retries = s.change_retries
        for attempt in range(retries + 1):
            if self.stop.is_set():
                raise Interrupted()
            fd, before = _open_regular(entry.path)
            try:
                size = before.st_size
                try:
                    part_size = part_size_for(size, s.buffer_size_bytes)
                except ObjectTooLarge as e:  # a file too large for S3 stays so: no retry round will mend it
                    raise UploadError(str(e), retryable=False) from e
                if part_size > self.budget.total:
                    raise UploadError(
                        f"needs {part_size}-byte parts but large-file buffers may hold {self.budget.total} bytes in "
                        "all; raise uploader.large_workers × large_buffers × buffer_size_bytes (and the memory budget)",
                        retryable=False)
                parts = max(1, math.ceil(size / part_size))
                per_file_pool = s.large_buffers * s.buffer_size_bytes
                buffers = max(1, min(parts, per_file_pool // part_size))
                self.budget.acquire(buffers * part_size, self.stop)
                try:
                    if size <= part_size:  # one part: a plain PUT says the same with one request
                        data = _read_all(fd, size)
                        after = os.fstat(fd)
                        if _same_version(before, after) and len(data) == size:
                            self._send_whole(entry, after, data, KeyClass.LARGE, s.large_storage_class)
                            return
                    else:
                        if self._multipart(entry, fd, before, part_size, buffers):
                            return
                finally:
                    self.budget.release(buffers * part_size)
            finally:
                os.close(fd)
            if attempt == retries:
                raise FileChanged(f"size or mtime changed while it was read ({retries + 1} tries)")

    def _multipart(self, entry: Entry, fd: int, before: os.stat_result, part_size: int, buffers: int) -> bool:
        """Send one large file as a multipart upload; False when the file changed while read (caller retries)."""
        s = self.settings
        size = before.st_size
        key = self._key(KeyClass.LARGE, entry)
        uploaded: dict[int, tuple[str, str | None, int]] = {}
        upload = self._resumable(entry, key.key, before, part_size)
        if upload is not None:
            uploaded = self._list_parts(key.key, upload.upload_id)
        else:
            meta = object_metadata(_as_entry(entry, before), None, key.long_path_sha256)
            response = self.client.create_multipart_upload(Bucket=s.bucket, Key=key.key, Metadata=meta,
                                                           StorageClass=s.large_storage_class.value,
                                                           ChecksumAlgorithm="CRC32")
            upload = OpenUpload(response["UploadId"], key.key, part_size, size, before.st_mtime_ns)
            with self.journal_lock:
                self.journal.record_upload_started(entry.path, upload)
        with self._uploads_lock:
            self._started_uploads[upload.upload_id] = (entry.path, key.key)

        sender = MultipartSender(self.client, s.bucket, key.key, upload.upload_id, self.part_pool,
                                 lambda: self.totals.add(parts_sent=1))
        pipeline = _PartPipeline(self, sender, fd, size, part_size, buffers, uploaded)
        try:
            pipeline.run()
        except Interrupted:
            with self._uploads_lock:  # kept open on purpose: the rerun continues it
                self._started_uploads.pop(upload.upload_id, None)
            raise
        except BaseException:
            self._abort(entry.path, key.key, upload.upload_id, "failed")
            raise
        after = os.fstat(fd)
        if not _same_version(before, after):
            self._abort(entry.path, key.key, upload.upload_id, "changed")
            return False
        etag, expected = sender.complete(size)  # on failure the upload stays listed: abort_leftovers ends it
        with self._uploads_lock:
            self._started_uploads.pop(upload.upload_id, None)
        with self.journal_lock:
            self.journal.record_upload_ended(entry.path, upload.upload_id, "completed")
        tree = pipeline.tree_hash()
        self.client.put_object_tagging(Bucket=s.bucket, Key=key.key,
                                       Tagging={"TagSet": [{"Key": TREEHASH_KEY, "Value": tree}]})
        self._done(entry, after, key.key, tree, etag, expected)
        self.totals.add(parts_reused=pipeline.reused)
        return True

    def _resumable(self, entry: Entry, key: str, st: os.stat_result, part_size: int) -> OpenUpload | None:
        """The journal's open upload of this file if the file is the one it was started for; else abort it."""
        upload = self.journal.open_uploads.pop(entry.path, None)
        if upload is None:
            return None
        if (upload.key, upload.size_bytes, upload.mtime_ns, upload.part_size) == (key, st.st_size, st.st_mtime_ns,
                                                                                  part_size):
            log.info("%s: resuming multipart upload %s", key, upload.upload_id)
            return upload
        self._abort(entry.path, upload.key, upload.upload_id, "file changed since it was started")
        return None

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, str | None, int]]:
        parts: dict[int, tuple[str, str | None, int]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": key, "UploadId": upload_id}
        while True:
            response = self.client.list_parts(**kwargs)
            for p in response.get("Parts", []):
                parts[p["PartNumber"]] = (str(p["ETag"]), p.get("ChecksumCRC32"), p["Size"])
            if not response.get("IsTruncated"):
                return parts
            kwargs["PartNumberMarker"] = response["NextPartNumberMarker"]

    def _abort(self, path: bytes, key: str, upload_id: str, why: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as e:
            if client_error_code(e) != "NoSuchUpload":
                raise
        with self._uploads_lock:
            self._started_uploads.pop(upload_id, None)
        with self.journal_lock:
            self.journal.record_upload_ended(path, upload_id, f"aborted: {why}")

    def abort_leftovers(self, interrupted: bool) -> None:
        """At the end of a shard: no multipart upload of its files stays open, except (when interrupted) those the
        journal will resume."""
        leftovers = dict(self._started_uploads)
        if not interrupted:
            leftovers.update({u.upload_id: (p, u.key) for p, u in self.journal.open_uploads.items()})
        for upload_id, (path, key) in leftovers.items():
            log.info("aborting leftover multipart upload %s of %s", upload_id, key)
            self._abort(path, key, upload_id, "left open at the end of the shard")


class _PartPipeline:
    """Reads one file's parts into `buffers` buffers and hands them to its MultipartSender; parts the server already
    holds with the same CRC32 (a resumed upload) are read for the tree hash but not sent again."""

    def __init__(self, up: ShardUploader, sender: MultipartSender, fd: int, size: int, part_size: int,
                 buffers: int, uploaded: dict[int, tuple[str, str | None, int]]):
        self.up = up
        self.sender = sender
        self.fd = fd
        self.size = size
        self.part_size = part_size
        self.uploaded = uploaded
        self.free: list[bytearray] = [bytearray(part_size) for _ in range(buffers)]
        self.free_cond = threading.Condition()
        self.errors = sender.errors  # one list: a failed read or a failed send stops the file alike
        self.hasher = TreeHasher()
        self.pending_leaves: dict[int, list[bytes]] = {}
        self.next_leaf_part = 1
        self.lock = threading.Lock()
        self.reused = 0

    def _take_buffer(self) -> bytearray:
        with self.free_cond:
            while not self.free:
                if self.up.stop.is_set() or self.errors:
                    raise Interrupted() if not self.errors else self.errors[0]
                self.free_cond.wait(timeout=0.5)
            return self.free.pop()

    def _give_buffer(self, buffer: bytearray) -> None:
        with self.free_cond:
            self.free.append(buffer)
            self.free_cond.notify()

    def _leaves_in_order(self, number: int, leaves: list[bytes]) -> None:
        with self.lock:
            self.pending_leaves[number] = leaves
            while self.next_leaf_part in self.pending_leaves:
                self.hasher.add_leaves(self.pending_leaves.pop(self.next_leaf_part))
                self.next_leaf_part += 1

    def run(self) -> None:
        up = self.up
        readers = ThreadPoolExecutor(up.settings.readers_per_file, thread_name_prefix="fs3g-read")
        try:
            reads: list[Future] = []
            for number, offset in enumerate(range(0, self.size, self.part_size), start=1):
                if up.stop.is_set():
                    raise Interrupted()
                if self.errors:
                    raise self.errors[0]
                buffer = self._take_buffer()
                length = min(self.part_size, self.size - offset)
                reads.append(readers.submit(self._read_part, number, offset, length, buffer))
            for f in reads:
                f.result()
        finally:
            readers.shutdown(wait=True)
            try:
                self.sender.wait()
            except BaseException:  # noqa: BLE001 - raised below
                pass
        if self.errors:
            raise self.errors[0]
        if up.stop.is_set() and len(self.sender.results) < -(-self.size // self.part_size):
            raise Interrupted()

    def _read_part(self, number: int, offset: int, length: int, buffer: bytearray) -> None:
        try:
            view = memoryview(buffer)[:length]
            got = 0
            while got < length:  # pread: readers of one file never share a file position
                n = os.preadv(self.fd, [view[got:]], offset + got)
                if n == 0:
                    raise FileChanged("file shrank while it was read")
                got += n
            self._leaves_in_order(number, leaf_digests(view))
            checksum = crc32_b64(view)
            held = self.uploaded.get(number)
            reuse = held is not None and held[2] == length and (
                held[1] == checksum if held[1] is not None
                else held[0].strip('"') == hashlib.md5(view, usedforsecurity=False).hexdigest())
        except BaseException as e:  # the buffer goes back, and the file's thread stops waiting for one
            self.errors.append(e)
            self._give_buffer(buffer)
            raise
        if reuse:
            self.sender.reuse(number, held[0], checksum)  # type: ignore[index]
            with self.lock:
                self.reused += 1
            self._give_buffer(buffer)
            return
        self.sender.submit(number, view, checksum, lambda: self._give_buffer(buffer))

    def tree_hash(self) -> str:
        return self.hasher.hexdigest()


def _open_regular(path: bytes) -> tuple[int, os.stat_result]:
    """Open without following a symlink that replaced the file since the plan; it must still be a regular file.

    O_NOATIME (allowed to the owner and to root) keeps the backup from changing the atime it records and restores.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        fd = os.open(path, flags)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UploadError("no longer a regular file")
    return fd, st


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    remaining = size + 1  # one byte more than expected: a file that grew is noticed
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 8 * MIB))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_ino == b.st_ino


def _as_entry(entry: Entry, st: os.stat_result) -> Entry:
    """The entry with the metadata of the version actually read."""
    return Entry.from_stat(entry.path, entry.kind, st)
