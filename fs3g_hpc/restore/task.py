"""One restore task: download, verify (SHA-256 tree hash) and put in place one shard of a restore, resuming from its
journal; the body of `fs3g restore-shard`. Where the bytes go and how safely is restore/destination.py's business.

Packed files: the shard's packed units are grouped by pack (one job per pack, taken by the workers like a unit);
restore/packs.py plans the ranged GETs and checks each member; the data streams into a temporary file beside the
target (destination.py's rules: O_NOFOLLOW walk, temporary name, rename only once verified), a symlink member is made
as a symlink, the other links of a unit are linked to its first. A member that fails is recorded by name (CORRUPT,
MISMATCH, NOT_READY for an archived pack, ...) and the rest of the pack goes on.

Large files (per object): restored from a catalog or a snapshot whose record has the tree hash, with no HEAD: the
stage file's listing line (stage.StagedObject) gives the size and the ETag every ranged part is pinned to (IfMatch),
the record the metadata to apply and the hash to check. Without them (a restore from a bucket listing, an older stage
file) one HEAD says the same. With --as-of, an object newer than the snapshot (LastModified after it, or another
size) or gone is read, in a versioned bucket, at the version that was current then (transfer/snapshots
object_version_at: one ListObjectVersions of that key; then the ranged GETs with VersionId, checked against the
snapshot's tree hash); without versioning the file is named as no longer restorable as of that time.

Memory: download_workers x max(small_file_threshold_bytes, 1 MiB) (whole small objects; for large ones, one 1 MiB buffer
per part thread, reused for every piece it reads)
plus the shard's journal (bounded by shards.max_files); packed files add the shard's packed records (grouped by pack)
and, per worker, one member's headers (packs.MAX_HEADER_BYTES) and one piece of a pack's stream (packs.READ_BYTES).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..config import ARCHIVED_CLASSES, Engine, Policy
from ..errors import Fs3gError, UsageError
from ..runs.files import FailureLine, RestoreHeader, ShardStatus
from ..runs.layout import read_json, shard_from_environment
from ..model.keys import KeyClass, object_key
from ..model.objectmeta import TREEHASH_KEY
from ..model.packs import MemberInfo, MemberType, PackRef, absolute_key
from ..model.records import Entry, EntryKind, display_path, packed, read_records
from ..model.s3limits import part_size_for
from ..model.treehash import LEAF_BYTES, TreeHasher
from ..runs.progress import Counters
from ..runs.task import FailureRecorder, ShardTask, ShardWork, run_task
from ..transfer.downloader import (DirectGetter, NotRestored, ObjectMissing, WholeObject, get_range, get_whole,
                                   open_range)
from ..transfer.objects import ObjectAccessError, head_object, object_tag
from ..transfer.snapshots import object_version_at, version_at
from .destination import (NO_LINK_ERRNOS, Destination, DiskFull, FileMeta, pwrite_sparse, start_writeback,
                          unlink_quietly)
from .layout import RestoreLayout, default_client, load_header
from .packs import DataHash, MemberError, MemberFault, Span, SpanReader, Wanted, plan_spans, read_header, symlink_hash
from .paths import Refused, Selection
from .stage import StagedObject, pack_sizes, restore_units, staged_large

log = logging.getLogger(__name__)

JOURNAL_FLUSH_INTERVAL_S = 1.0


class Outcome(str, Enum):
    RESTORED = "restored"
    PRESENT = "already-present"
    FAILED = "failed"
    REFUSED = "refused"
    NOT_READY = "not-ready"
    INTERRUPTED = "interrupted"
    CORRUPT = MemberFault.CORRUPT.value  # a packed member whose bytes are not what was written: not written
    MISMATCH = MemberFault.MISMATCH.value  # the pack holds another member than the catalog or index says


@dataclass(frozen=True)
class PackJob:
    """The packed units of one shard that live in one pack (relative key)."""

    pack: str
    units: list[list[Entry]]


@dataclass
class _Tally:
    restored: int = 0
    present: int = 0
    failed: int = 0
    bytes_restored: int = 0
    bytes_present: int = 0  # for progress only: what the shard has behind it
    linked: int = 0  # restored as a hard link to another restored file
    packed: int = 0  # restored from a pack (the rest of `restored`: per-object, or linked)
    packs: int = 0  # packs read from
    pack_gets: int = 0  # ranged GETs of packs


@dataclass(frozen=True)
class _LargeSource:
    """A large file's object as the download reads it: its size, the ETag (or version) its ranged GETs pin, the
    metadata to apply, the tree hash to check, and its LastModified."""

    size_bytes: int
    etag: str
    meta: FileMeta
    tree_hash: str
    modified_s: float
    version_id: str = ""


_NOT_STAGED = object()  # a large key the stage file does not list (an older stage file): HEAD it


class _ShardRestorer:
    def __init__(self, client: Any, policy: Policy, header: RestoreHeader, layout: RestoreLayout, shard: int,
                 stop: threading.Event, dest: Destination, failures: FailureRecorder):
        self.client, self.policy, self.header, self.layout, self.shard = client, policy, header, layout, shard
        self.dest = dest
        self.halted: str | None = None
        self.bucket = policy.s3.bucket
        self.stop = stop
        self.selection = Selection(header.requests)
        self.overwrite = header.overwrite
        self.from_catalog = header.source.startswith("catalog ")
        self.as_of = header.as_of  # restore --as-of: per-object files are checked against that snapshot
        self.as_root = os.geteuid() == 0
        self.tally = _Tally()
        self.lock = threading.Lock()
        self.parts = ThreadPoolExecutor(policy.restore.download_workers, thread_name_prefix="fs3g-part")
        self.direct = DirectGetter(client, policy.uploader.max_attempts, lean=policy.uploader.engine is Engine.AUTO)
        self._buffers = threading.local()  # per part thread: one LEAF_BYTES buffer, reused
        self.errors: list[BaseException] = []
        stage_file = layout.stage_file(shard)
        stage_record = read_json(stage_file) if stage_file.exists() else {}
        self.stage_refused: dict[str, str] = stage_record.get("refused", {})
        self.pack_bytes: dict[str, int] = pack_sizes(stage_record)  # from the stage's listing; absent: not listed
        self.large_listed = staged_large(stage_record, str(stage_file))  # the same listing's large objects
        self.stage_pending = set(stage_record.get("pending", ()))  # archived objects not readable at the last poll
        self.journal_path = layout.journal(shard)
        self.journal_flushed_s = 0.0
        self.done = self._read_journal()
        self.journal = open(os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a",
                            encoding="ascii")
        self.failures = failures

    def _read_journal(self) -> dict[bytes, tuple[int, int]]:
        done: dict[bytes, tuple[int, int]] = {}
        if self.journal_path.exists():
            for line in self.journal_path.read_text(encoding="ascii").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut short by a kill: that file is checked again
                done[os.fsencode(item["p"])] = (item["s"], item["m"])
        return done

    def close(self) -> None:
        self.parts.shutdown(wait=True, cancel_futures=True)
        self.journal.close()

    def _record(self, entry: Entry, outcome: Outcome, detail: str = "", size: int = 0, mtime_ns: int = 0,
                linked: bool = False) -> None:
        with self.lock:
            if outcome in (Outcome.RESTORED, Outcome.PRESENT):
                if outcome is Outcome.RESTORED:
                    self.tally.restored += 1
                    if linked:
                        self.tally.linked += 1  # no bytes: the data came with its first link
                    else:
                        self.tally.bytes_restored += size
                else:
                    self.tally.present += 1
                    self.tally.bytes_present += size
                self.journal.write(json.dumps({"p": os.fsdecode(entry.path), "s": size, "m": mtime_ns}) + "\n")
                now = time.monotonic()
                if now - self.journal_flushed_s >= JOURNAL_FLUSH_INTERVAL_S:
                    # A record lost to a kill only means that file is checked again (and found in place).
                    self.journal.flush()
                    self.journal_flushed_s = now
                return
            if outcome is not Outcome.INTERRUPTED:
                self.tally.failed += 1
                log.warning("%s: %s: %s", display_path(entry.path), outcome.value, detail)
            self.failures.record(FailureLine(entry.path, detail, outcome.value),
                                 sampled=outcome is not Outcome.INTERRUPTED)

    def run(self, entries: Iterable[Entry]) -> None:
        """`download_workers` threads take units (a file, or the links of one) from the shard in turn: no queue, no
        future per file (at 5,000 small files a second, each synchronisation object costs measurable CPU in futex
        calls)."""
        source = self._work(entries)
        take = threading.Lock()

        def work() -> None:
            while not self.errors:
                with take:
                    unit = next(source, None)
                if unit is None:
                    return
                try:
                    if isinstance(unit, PackJob):
                        self._pack(unit)
                    else:
                        self._unit(unit)
                except BaseException as e:  # _guarded reports every file's failure; this one is ours (the journal's disk)
                    self.errors.append(e)
                    self.stop.set()
                    return

        threads = [threading.Thread(target=work, name=f"fs3g-restore-{i}", daemon=True)
                   for i in range(self.policy.restore.download_workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    @staticmethod
    def _work(entries: Iterable[Entry]) -> Iterator[list[Entry] | PackJob]:
        """Units of per-object files as they come; then the packed ones, one job per pack (held for the shard: its
        records are bounded by shards.max_files)."""
        packs: dict[str, list[list[Entry]]] = {}
        for unit in restore_units(entries):
            if packed(unit[0]):
                packs.setdefault(PackRef.decode(unit[0].location, display_path(unit[0].path)).pack, []).append(unit)
            else:
                yield unit
        for pack, units in packs.items():
            yield PackJob(pack, units)

    def _unit(self, unit: list[Entry]) -> None:
        """The first link of a file that restores is downloaded and verified; the others become hard links to it
        (should it fail, the next one is downloaded instead)."""
        first: Entry | None = None
        for entry in unit:
            if self._guarded(entry, first) and first is None:
                first = entry

    def _guarded(self, entry: Entry, link_to: Entry | None = None) -> bool:
        """Restore one entry (or link it to `link_to`, already restored); True when it is in place."""
        if link_to is None:
            return self._attempt(entry, lambda: self._restore(entry))
        return self._attempt(entry, lambda: self._link(entry, link_to))

    def _attempt(self, entry: Entry, action: Callable[[], object]) -> bool:
        """Run `action` for `entry`; any failure is recorded against the entry by name (False), never raised."""
        if self.halted:
            self._record(entry, Outcome.FAILED, self.halted)
            return False
        if self.stop.is_set():
            self._record(entry, Outcome.INTERRUPTED, "stopped before it started")
            return False
        try:
            action()
            return True
        except MemberError as e:
            self._record(entry, Outcome(e.fault.value), str(e))
        except Refused as e:
            self._record(entry, Outcome.REFUSED, str(e))
        except NotRestored as e:
            key = self._pack_key(entry) if packed(entry) else self._key(entry)[0]
            self._record(entry, Outcome.NOT_READY, self.stage_refused.get(key) or (
                f"{e}; the Glacier restore was requested: run the same restore again once it is ready"))
        except ObjectMissing as e:
            self._record(entry, Outcome.FAILED, str(e))
        except DiskFull as e:
            # Every other file would fail the same way: stop, and name them all as not restored.
            self.halted = "not attempted: the destination is full"
            self.stop.set()
            self._record(entry, Outcome.FAILED, str(e))
        except Exception as e:  # noqa: BLE001 - one file's failure never stops the shard; it is reported by name
            log.debug("restore of %s failed", display_path(entry.path), exc_info=True)
            self._record(entry, Outcome.FAILED, f"{type(e).__name__}: {e}")
        return False

    def _link(self, entry: Entry, first: Entry) -> None:
        """`entry` as a hard link to `first` (restored a moment ago): both names below the destination, neither
        symlink followed; the link is made under a temporary name and renamed over the target."""
        relative = self.selection.relative(entry.path)
        src_fd, src_name = self.dest.parent(self.selection.relative(first.path))
        try:
            dir_fd, name = self.dest.parent(relative)
            try:
                source = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
                if not stat.S_ISREG(source.st_mode):
                    raise Fs3gError(f"its link {display_path(first.path)} is no longer a regular file")
                present = Destination.existing(dir_fd, name)
                if present is not None and (present.st_dev, present.st_ino) == (source.st_dev, source.st_ino):
                    self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                    return
                if present is not None and stat.S_ISDIR(present.st_mode):
                    raise Refused("a directory is in the way")
                if self._blocked(present):
                    raise Refused("a different file exists at the target; restore with --overwrite to replace it")
                tmp = Destination.temp_name(name)
                try:
                    os.link(src_name, tmp, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in NO_LINK_ERRNOS:
                        raise
                    # No hard links here (EMLINK: too many already; or the filesystem has none): a copy of its own.
                    log.warning("%s: cannot be linked (%s); downloaded as a separate file", display_path(entry.path),
                                e.strerror)
                    linked = False
                else:
                    linked = True
                if not linked:
                    if packed(entry):  # a copy of its own, read from its pack like its first link was
                        self._pack(PackJob(PackRef.decode(entry.location, display_path(entry.path)).pack, [[entry]]))
                    else:
                        self._restore(entry)
                    return
                try:
                    made = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
                    if (made.st_dev, made.st_ino) != (source.st_dev, source.st_ino):
                        raise Fs3gError(f"{display_path(first.path)} was replaced while it was linked; not linked")
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    unlink_quietly(dir_fd, tmp)
                    raise
            finally:
                os.close(dir_fd)
        finally:
            os.close(src_fd)
        self._record(entry, Outcome.RESTORED, size=source.st_size, mtime_ns=source.st_mtime_ns, linked=True)

    def _key(self, entry: Entry) -> tuple[str, KeyClass]:
        if entry.kind is EntryKind.SYMLINK:
            klass = KeyClass.SYMLINK
        elif entry.size_bytes <= self.policy.storage.small_file_threshold_bytes:
            klass = KeyClass.SMALL
        else:
            klass = KeyClass.LARGE
        return object_key(self.policy.s3.prefix, klass, entry.path).key, klass

    def _restore(self, entry: Entry) -> None:
        relative = self.selection.relative(entry.path)
        key, klass = self._key(entry)
        dir_fd, name = self.dest.parent(relative)
        try:
            present = Destination.existing(dir_fd, name)
            journaled = self.done.get(entry.path)
            if present is not None and journaled is not None and stat.S_ISREG(present.st_mode) and (
                    present.st_size, present.st_mtime_ns) == journaled:
                self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                return
            if present is not None and stat.S_ISDIR(present.st_mode):
                raise Refused("a directory is in the way")
            if klass is KeyClass.LARGE:
                self._large(entry, key, dir_fd, name, present)
            else:
                self._whole(entry, key, klass, dir_fd, name, present)
        finally:
            os.close(dir_fd)

    def _same_as(self, present: os.stat_result | None, size: int, meta: FileMeta, symlink: bool) -> bool:
        if present is None:
            return False
        kind_ok = stat.S_ISLNK(present.st_mode) if symlink else stat.S_ISREG(present.st_mode)
        return kind_ok and present.st_size == size and meta.mtime_ns is not None and present.st_mtime_ns == meta.mtime_ns

    def _blocked(self, present: os.stat_result | None) -> bool:
        return present is not None and not self.overwrite

    def _whole(self, entry: Entry, key: str, klass: KeyClass, dir_fd: int, name: bytes,
               present: os.stat_result | None) -> None:
        try:
            obj = self._get_whole(key)
        except ObjectMissing:
            if klass is KeyClass.SYMLINK:
                if self.as_of is None:
                    raise
                obj = None
            else:
                # The small-file threshold may have changed since this file was backed up.
                other = object_key(self.policy.s3.prefix, KeyClass.LARGE, entry.path).key
                try:
                    obj = self._get_whole(other)
                    key = other
                except ObjectMissing:
                    if self.as_of is None:
                        raise ObjectMissing(f"{key} is not in the bucket (nor {other})") from None
                    obj = None
        if self.as_of is not None:
            obj = self._as_of_version(entry, key, obj)
        meta = FileMeta.of(obj.metadata, entry, catalog_times=self.from_catalog)
        symlink = klass is KeyClass.SYMLINK
        if self._same_as(present, len(obj.data), meta, symlink) and (
                not symlink or os.readlink(name, dir_fd=dir_fd) == obj.data):
            self._record(entry, Outcome.PRESENT, size=len(obj.data), mtime_ns=meta.mtime_ns or 0)
            return
        if self._blocked(present):
            raise Refused("a different file exists at the target; restore with --overwrite to replace it")
        expected = entry.tree_hash.hex() if entry.tree_hash else obj.metadata.get(TREEHASH_KEY)
        hasher = TreeHasher()
        hasher.update(obj.data)
        self._check_hash(key, expected, hasher.hexdigest())
        tmp = Destination.temp_name(name)
        if symlink:
            os.symlink(obj.data, tmp, dir_fd=dir_fd)
            try:
                self._apply_link_meta(dir_fd, tmp, meta)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                unlink_quietly(dir_fd, tmp)
                raise
        else:
            fd = self._create(dir_fd, tmp)
            try:
                os.ftruncate(fd, len(obj.data))  # before the data: blocks of zeros are left as holes
                pwrite_sparse(fd, obj.data, 0, self.dest.root)
                self._apply_meta(fd, meta)
                os.close(fd)
                fd = -1
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                unlink_quietly(dir_fd, tmp)
                raise
        self._record(entry, Outcome.RESTORED, size=len(obj.data), mtime_ns=meta.mtime_ns or 0)

    def _stale(self, size: int, modified_s: float, entry: Entry) -> bool:
        """The bucket's object is not the one the --as-of snapshot recorded: written after it, or of another size."""
        assert self.as_of is not None
        return modified_s > self.as_of.created_s or size != entry.size_bytes

    def _as_of_version(self, entry: Entry, key: str, obj: WholeObject | None) -> WholeObject:
        """The object as of the restore's snapshot: the current one when it is no newer (and of the recorded size),
        else, in a versioned bucket, the newest version at or before the snapshot (GetObject VersionId); otherwise
        the file can no longer be restored as of that time (ObjectMissing, saying so by name)."""
        as_of = self.as_of
        assert as_of is not None
        if obj is not None and not self._stale(len(obj.data), obj.last_modified_s, entry):
            return obj
        now = "gone from the bucket" if obj is None else "overwritten after it"
        if not as_of.versioned:
            raise ObjectMissing(f"{key}: {now}; bucket versioning is off, so this file can no longer be restored as "
                                f"of snapshot {as_of.snapshot_id}")
        version = version_at(self.client, self.bucket, key, as_of.created_s)
        if version is None:
            raise ObjectMissing(f"{key}: {now}, and no version of it is older than snapshot {as_of.snapshot_id}")
        return get_whole(self.client, self.bucket, key, version)

    def _tag(self, key: str) -> str | None:
        """The tree hash a multipart upload left as a tag (its metadata was fixed before the hash was known)."""
        try:
            return object_tag(self.client, self.bucket, key, TREEHASH_KEY)
        except ObjectAccessError:
            return None  # refused (an archived object on some stores): reported as "no tree hash" by the caller

    def _get_whole(self, key: str) -> WholeObject:
        if self.direct.available:
            return self.direct.get_whole(self.bucket, key)
        return get_whole(self.client, self.bucket, key)

    def _large_source(self, entry: Entry, key: str) -> _LargeSource:
        """Where a large file's bytes are and what they should be: from the stage's listing and the catalog's record
        when it has its tree hash (no request), else from a HEAD. With --as-of, an object newer than the snapshot (or
        gone) is read at the version current then (versioned buckets), else named as lost."""
        staged = self.large_listed.get(key, _NOT_STAGED) if self.from_catalog and entry.tree_hash else _NOT_STAGED
        if staged is not _NOT_STAGED:
            listed = staged if isinstance(staged, StagedObject) else None
            if listed is None and self.as_of is None:
                raise ObjectMissing(f"{key} is not in the bucket")
            source = None if listed is None else _LargeSource(
                listed.size_bytes, listed.etag, FileMeta.of_entry(entry), entry.tree_hash.hex(), listed.modified_s)
            if listed is not None and listed.storage_class in {c.value for c in ARCHIVED_CLASSES} and \
                    key in self.stage_pending:
                raise NotRestored(f"{key} is archived ({listed.storage_class}) and not restored (yet)")
        else:
            head = head_object(self.client, self.bucket, key)
            if head is None and self.as_of is None:
                raise ObjectMissing(f"{key} is not in the bucket")
            if head is not None and head.storage_class in {c.value for c in ARCHIVED_CLASSES} and \
                    not head.restore_ready:
                raise NotRestored(f"{key} is archived ({head.storage_class}) and not restored (yet)")
            source = None if head is None else _LargeSource(
                head.size_bytes, head.etag, FileMeta.of(head.metadata, entry, catalog_times=self.from_catalog),
                entry.tree_hash.hex() if entry.tree_hash else head.metadata.get(TREEHASH_KEY) or self._tag(key) or "",
                head.last_modified_ns / 1e9)
        if self.as_of is None or (source is not None and not self._stale(source.size_bytes, source.modified_s,
                                                                             entry)):
            assert source is not None
            return source
        later = "gone from the bucket" if source is None else "overwritten after it"
        if not self.as_of.versioned:
            raise ObjectMissing(f"{key}: {later}; bucket versioning is off, so this file can no longer be restored "
                                f"as of snapshot {self.as_of.snapshot_id}")
        version = object_version_at(self.client, self.bucket, key, self.as_of.created_s)
        if version is None:
            raise ObjectMissing(f"{key}: {later}, and no version of it is older than snapshot "
                                f"{self.as_of.snapshot_id}")
        # The snapshot's record says what that version held (its metadata and tree hash: checked as it is read).
        return _LargeSource(version.size_bytes, version.etag, FileMeta.of_entry(entry),
                            entry.tree_hash.hex() if entry.tree_hash else "", version.modified_s, version.version_id)

    def _large(self, entry: Entry, key: str, dir_fd: int, name: bytes, present: os.stat_result | None) -> None:
        head = self._large_source(entry, key)
        meta = head.meta
        if self._same_as(present, head.size_bytes, meta, False):
            self._record(entry, Outcome.PRESENT, size=head.size_bytes, mtime_ns=meta.mtime_ns or 0)
            return
        if self._blocked(present):
            raise Refused("a different file exists at the target; restore with --overwrite to replace it")
        expected = head.tree_hash
        if not expected:
            raise Fs3gError(f"{key} carries no SHA-256 tree hash to verify against; not restored")
        size = head.size_bytes
        part = part_size_for(size, self.policy.uploader.buffer_size_bytes)
        tmp = Destination.temp_name(name)
        fd = self._create(dir_fd, tmp)
        try:
            os.ftruncate(fd, size)
            starts = list(range(0, size, part))
            futures = [self.parts.submit(self._part, key, head.etag, fd, start, min(part, size - start),
                                         head.version_id) for start in starts]
            hasher = TreeHasher()
            try:
                for future in futures:
                    hasher.add_leaves(future.result())
            except BaseException:
                self.stop_parts(futures)
                raise
            self._check_hash(key, expected, hasher.hexdigest())
            self._apply_meta(fd, meta)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            unlink_quietly(dir_fd, tmp)
            raise
        self._record(entry, Outcome.RESTORED, size=size, mtime_ns=meta.mtime_ns or 0)

    # -- packed files ------------------------------------------------------------------------------------------------

    def _pack_key(self, entry: Entry) -> str:
        return absolute_key(self.policy.s3.prefix, PackRef.decode(entry.location, display_path(entry.path)).pack)

    def _pack(self, job: PackJob) -> None:
        """The packed units of one pack: each unit's first link read from the pack (coalesced ranged GETs, members
        checked one by one), the unit's other links linked to it. A link whose own name cannot be written (a
        directory or a different file in the way) gives its turn to the next link of its unit, read again."""
        key = absolute_key(self.policy.s3.prefix, job.pack)
        turns = [0] * len(job.units)
        first: list[Entry | None] = [None] * len(job.units)
        active = list(range(len(job.units)))
        while active:
            fetch: dict[PackRef, list[int]] = {}
            retry: list[int] = []
            for u in active:
                entry = job.units[u][turns[u]]
                ready: list[bool] = []
                if self._attempt(entry, lambda: ready.append(self._packed_in_place(entry))):
                    if ready[0]:
                        first[u] = entry
                    else:
                        fetch.setdefault(PackRef.decode(entry.location, display_path(entry.path)), []).append(u)
                elif turns[u] + 1 < len(job.units[u]):
                    turns[u] += 1
                    retry.append(u)
            if fetch:
                outcome = self._read_pack(key, job, fetch, turns)
                for u, ok in outcome.items():
                    if ok:
                        first[u] = job.units[u][turns[u]]
                    elif ok is None and turns[u] + 1 < len(job.units[u]):
                        turns[u] += 1  # this name could not be written: the next link tries
                        retry.append(u)
                    elif ok is False:
                        # The data is bad (or not readable): the unit's other links would get the same bytes.
                        for entry in job.units[u][turns[u] + 1:]:
                            self._record(entry, Outcome.FAILED, f"not restored: its link "
                                                                f"{display_path(job.units[u][turns[u]].path)} failed")
                        turns[u] = len(job.units[u])
            active = retry
        for u, unit in enumerate(job.units):
            done = first[u]
            if done is not None:
                for entry in unit[turns[u] + 1:]:  # the links before it failed by name and were reported
                    self._guarded(entry, done)

    def _packed_in_place(self, entry: Entry) -> bool:
        """Whether a packed entry is in place already (recorded PRESENT); raises Refused when its target cannot be
        written. Read before any request: a rerun reads nothing for what it finds restored. Makes nothing: the
        members are put in place in pack order (a symlink member before anything below its name)."""
        try:
            dir_fd, name = self.dest.parent(self.selection.relative(entry.path), create=False)
        except FileNotFoundError:
            return False
        try:
            present = Destination.existing(dir_fd, name)
            if present is None:
                return False
            if stat.S_ISDIR(present.st_mode):
                raise Refused("a directory is in the way")
            journaled = self.done.get(entry.path)
            if stat.S_ISREG(present.st_mode) and (present.st_size, present.st_mtime_ns) in (
                    journaled, (entry.size_bytes, entry.mtime_ns) if entry.kind is EntryKind.FILE else None):
                self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                return True
            if (entry.kind is EntryKind.SYMLINK and stat.S_ISLNK(present.st_mode) and entry.tree_hash
                    and present.st_mtime_ns == entry.mtime_ns
                    and symlink_hash(os.readlink(name, dir_fd=dir_fd)) == entry.tree_hash.hex()):
                self._record(entry, Outcome.PRESENT, size=present.st_size, mtime_ns=present.st_mtime_ns)
                return True
            if self._blocked(present):
                raise Refused("a different file exists at the target; restore with --overwrite to replace it")
            return False
        finally:
            os.close(dir_fd)

    def _read_pack(self, key: str, job: PackJob, fetch: dict[PackRef, list[int]],
                   turns: list[int]) -> dict[int, bool | None]:
        """Read the wanted members of one pack and write each into place. Per unit: True restored, None its name
        could not be written (the next link may try), False the member's data failed (recorded)."""
        outcome: dict[int, bool | None] = {}
        wanted = []
        for ref, units in fetch.items():
            entries = tuple(job.units[u][turns[u]] for u in units)
            wanted.append(Wanted(ref, entries))
        owner = {id(job.units[u][turns[u]]): u for units in fetch.values() for u in units}
        etag: str | None = None
        spans = plan_spans(wanted, self.pack_bytes.get(job.pack))
        for i, span in enumerate(spans):
            if self.stop.is_set() or self.halted:
                for w in (m for later in spans[i:] for m in later.members):
                    for entry in w.entries:
                        self._attempt(entry, lambda: None)  # records it as not attempted (halted or stopped)
                        outcome[owner[id(entry)]] = False
                return outcome
            try:
                stream = open_range(self.client, self.bucket, key, span.start, span.end, etag)
            except Exception as e:  # noqa: BLE001 - NotRestored, missing, refused: every member of the span says so
                for w in span.members:
                    for entry in w.entries:
                        self._attempt(entry, _raiser(e))
                        outcome[owner[id(entry)]] = False
                continue
            etag = etag or stream.etag
            with self.lock:
                self.tally.pack_gets += 1
                self.tally.packs += i == 0
            with stream:
                reader = SpanReader(stream, span.start, span.end, key)
                self._read_span(key, span, reader, owner, outcome)
        return outcome

    def _read_span(self, key: str, span: Span, reader: SpanReader, owner: dict[int, int],
                   outcome: dict[int, bool | None]) -> None:
        for w in span.members:
            try:
                info = read_header(reader, w, key)
            except Exception as e:  # noqa: BLE001 - this member fails by name; the next starts at its own offset
                for entry in w.entries:
                    self._attempt(entry, _raiser(e))
                    outcome[owner[id(entry)]] = False
                continue
            results = self._write_member(key, w, info, reader)
            for entry, result in zip(w.entries, results):
                outcome[owner[id(entry)]] = result

    def _write_member(self, key: str, w: Wanted, info: MemberInfo, reader: SpanReader) -> list[bool | None]:
        """Stream one member's data into a temporary file beside each of its targets, verify it, then rename it into
        place (or make the symlink). Per target: True, None (its name failed), False (the data failed)."""
        where = f"{key} at {w.ref.header_offset}"
        targets: list[tuple[int, Entry, int, bytes, bytes, int]] = []  # index, entry, dir fd, name, temp, file fd
        results: list[bool | None] = []
        placed: set[int] = set()
        try:
            for index, entry in enumerate(w.entries):
                opened: list[tuple[int, bytes, bytes, int]] = []
                if self._attempt(entry, lambda: opened.append(self._open_target(entry, info))):
                    targets.append((index, entry, *opened[0]))
                    results.append(True)
                else:
                    results.append(None)
            try:
                if info.type is MemberType.SYMLINK:
                    if w.entries[0].tree_hash and symlink_hash(info.link_target) != w.entries[0].tree_hash.hex():
                        raise MemberError(MemberFault.CORRUPT, f"{where}: the target of symlink "
                                                               f"{display_path(info.path)} is not the recorded one")
                else:
                    digest = DataHash(info.size_bytes)
                    offset = 0
                    for piece in reader.pieces(info.size_bytes):
                        digest.update(piece)
                        for *_, fd in targets:
                            pwrite_sparse(fd, piece, offset, self.dest.root)
                        offset += len(piece)
                    digest.verify(info, w.entries[0], where)
            except Exception as e:  # noqa: BLE001 - the member fails for every target; the pack goes on
                for _, entry, *_ in targets:
                    self._attempt(entry, _raiser(e))
                return [False if r else r for r in results]
            for index, entry, dir_fd, name, tmp, fd in targets:
                meta = FileMeta.of_member(info, entry, catalog_times=self.from_catalog)
                if self._attempt(entry, lambda: self._place(info, meta, dir_fd, name, tmp, fd)):
                    placed.add(index)  # renamed: no temporary name left to remove
                    size = len(info.link_target) if info.type is MemberType.SYMLINK else info.size_bytes
                    self._record(entry, Outcome.RESTORED, size=size, mtime_ns=meta.mtime_ns or 0)
                    with self.lock:
                        self.tally.packed += 1
                else:
                    results[index] = None
            return results
        finally:
            for index, _, dir_fd, _, tmp, fd in targets:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                if index not in placed:
                    unlink_quietly(dir_fd, tmp)
                os.close(dir_fd)

    def _open_target(self, entry: Entry, info: MemberInfo) -> tuple[int, bytes, bytes, int]:
        """The target's directory fd, name and temporary name; for a file, its temporary file opened (sized)."""
        dir_fd, name = self.dest.parent(self.selection.relative(entry.path))
        try:
            tmp = Destination.temp_name(name)
            fd = -1
            if info.type is MemberType.FILE:
                fd = self._create(dir_fd, tmp)
                os.ftruncate(fd, info.size_bytes)  # before the data: blocks of zeros are left as holes
            return dir_fd, name, tmp, fd
        except BaseException:
            os.close(dir_fd)
            raise

    def _place(self, info: MemberInfo, meta: FileMeta, dir_fd: int, name: bytes, tmp: bytes, fd: int) -> None:
        """Verified data (or a symlink's target) renamed over the target, with its metadata."""
        if info.type is MemberType.SYMLINK:
            os.symlink(info.link_target, tmp, dir_fd=dir_fd)
            self._apply_link_meta(dir_fd, tmp, meta)
        else:
            self._apply_meta(fd, meta)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    @staticmethod
    def stop_parts(futures: list[Future]) -> None:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                try:
                    f.result()
                except BaseException:  # noqa: BLE001 - the first failure is the one reported
                    pass

    def _part(self, key: str, etag: str, fd: int, start: int, length: int, version_id: str = "") -> list[bytes]:
        """One ranged GET written at its offset; its 1 MiB leaf digests, for the tree hash.

        Through the direct getter the body is read into this thread's buffer of LEAF_BYTES (reused for every piece
        and every part it takes), each piece written from the buffer and hashed as one leaf: one write and one
        SHA-256 call per MiB, no copy (parts start on a leaf boundary: part sizes are whole MiB). hashlib releases
        the GIL, so the leaves of one part are hashed while the other parts' threads receive and write."""
        if self.stop.is_set():
            raise InterruptedError("stopped")
        leaves: list[bytes] = []
        offset = start
        if self.direct.available and not version_id:
            buffer = getattr(self._buffers, "leaf", None)
            if buffer is None:
                buffer = self._buffers.leaf = bytearray(LEAF_BYTES)
            for view in self.direct.get_range_into(self.bucket, key, start, length, etag, buffer):
                pwrite_sparse(fd, view, offset, self.dest.root)
                leaves.append(hashlib.sha256(view).digest())  # a full leaf, or the part's (file's) last
                offset += len(view)
        else:
            leaf = hashlib.sha256()
            fill = 0
            for piece in get_range(self.client, self.bucket, key, start, length, etag, version_id):
                pwrite_sparse(fd, piece, offset, self.dest.root)
                offset += len(piece)
                view = memoryview(piece)
                while view:
                    take = min(LEAF_BYTES - fill, len(view))
                    leaf.update(view[:take])
                    fill += take
                    view = view[take:]
                    if fill == LEAF_BYTES:
                        leaves.append(leaf.digest())
                        leaf, fill = hashlib.sha256(), 0
            if fill:
                leaves.append(leaf.digest())
        if offset != start + length:
            raise Fs3gError(f"{key}: range at {start} returned {offset - start} bytes, expected {length}")
        start_writeback(fd, start, length)
        return leaves

    @staticmethod
    def _check_hash(key: str, expected: str | None, actual: str) -> None:
        if not expected:
            raise Fs3gError(f"{key} carries no SHA-256 tree hash to verify against; not restored")
        if expected != actual:
            raise Fs3gError(f"{key}: SHA-256 tree hash {actual} does not match the recorded {expected}; not restored")

    @staticmethod
    def _create(dir_fd: int, tmp: bytes) -> int:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=dir_fd)

    def _apply_meta(self, fd: int, meta: FileMeta) -> None:
        if self.as_root and meta.uid is not None and meta.gid is not None:
            os.fchown(fd, meta.uid, meta.gid)
        if meta.mode is not None:
            os.fchmod(fd, stat.S_IMODE(meta.mode))  # after chown, which clears set-id bits
        if meta.mtime_ns is not None:
            os.utime(fd, ns=meta.times)

    def _apply_link_meta(self, dir_fd: int, name: bytes, meta: FileMeta) -> None:
        if self.as_root and meta.uid is not None and meta.gid is not None:
            os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
        if meta.mtime_ns is not None:
            os.utime(name, ns=meta.times, dir_fd=dir_fd, follow_symlinks=False)



def _raiser(error: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise error
    return action


@dataclass(frozen=True)
class RestoreShardResult:
    state: ShardStatus
    restored: int
    present: int
    failed: int
    signal_name: str | None


def restore_shard(run_dir: Path, shard: int | None, *, environ: dict[str, str] | None = None,
                  on_requeue: Callable[[], None] | None = None,
                  client_factory: Callable[[Policy], Any] | None = None) -> RestoreShardResult:
    """Download, verify and put in place one shard of a restore (on runs/task.run_task); resumes from its journal
    when run again."""
    env = dict(os.environ if environ is None else environ)
    layout, header, policy = load_header(run_dir)
    shard = shard_from_environment(shard, header.shard_count, env, layout.header_file, "the restore")
    try:
        dest = Destination(Path(header.destination))
    except OSError as e:
        raise UsageError(f"cannot use the destination: {e.strerror}", path=header.destination) from e

    def restore(task: ShardTask) -> ShardWork:
        restorer = _ShardRestorer((client_factory or default_client)(policy), policy, header, layout, task.index,
                                  task.stop, dest, task.failures)
        planned, tally = task.summary, restorer.tally

        def counters() -> Counters:
            return Counters(tally.restored + tally.present + tally.failed, planned.files,
                            tally.bytes_restored + tally.bytes_present, planned.bytes, tally.failed)

        try:
            with task.progress(counters):
                restorer.run(read_records(layout.shard_file(task.index)))
        finally:
            restorer.close()
        return ShardWork(tally.failed, {"restored": tally.restored, "already_present": tally.present,
                                        "failed": tally.failed, "bytes_restored": tally.bytes_restored,
                                        "linked": tally.linked, "packed": tally.packed, "packs": tally.packs,
                                        "pack_gets": tally.pack_gets})

    try:
        result = run_task(layout, header, shard, restore, label="restore shard", environ=env, on_requeue=on_requeue)
    finally:
        dest.close()
    return RestoreShardResult(result.status, result.count("restored"), result.count("already_present"),
                              result.count("failed"), result.signal)
