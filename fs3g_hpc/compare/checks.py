"""The checks of `fs3g compare`: what a pair of records says (kind, size, mtime), and the checks that cost I/O (a HEAD
for the mtime in bucket mode, reading a file for its SHA-256 tree hash); the discrepancy types, their categories and
the summary that counts them.

A packed file compares like any other: from the catalog its record holds size, mtime and tree hash; from the bucket
(`packed_entry`) its pack's index gives size, mtime and the SHA-256 of the data, so it needs no HEAD, and
`--check-sha256` reads the local file once (the plain SHA-256 above 1 MiB, where it differs from the tree hash).

Every check holds one pair at a time: a file is hashed through one `READ_PIECE_BYTES` buffer, so memory per check is
bounded whatever the file's size. Anything unreadable becomes a cannot-check discrepancy with its reason, never a pass.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from ..config import Policy
from ..model.entries import KEY_CLASS, EntryClass
from ..model.keys import KeyClass, object_key
from ..model.mtimes import mtime_matches, mtime_text_matches, text_ns
from ..model.objectmeta import TREEHASH_KEY, format_ns
from ..model.packs import PackRef
from ..model.records import Entry, EntryKind, display_path, packed
from ..model.sizes import MIB, format_size
from ..model.treehash import LEAF_BYTES, TreeHasher

READ_PIECE_BYTES = 1 * MIB


class Category(Enum):
    MISSING_IN_S3 = "missing-in-s3"  # on disk, not backed up
    CHANGED = "changed"  # on both sides, but size, mtime (or the SHA-256 tree hash) differ
    ONLY_IN_S3 = "only-in-s3"  # backed up, gone from disk
    CANNOT_CHECK = "cannot-check"  # on both sides, but one side could not be read: never silently passed


# (local entry, stored tree hash in hex, class): a file whose tree hash is to be read elsewhere.
HashSink = Callable[["Entry", str, "EntryClass"], None]


class Against(Enum):
    CATALOG = "catalog"
    BUCKET = "bucket"


@dataclass(frozen=True)
class Discrepancy:
    category: Category
    klass: EntryClass
    path: bytes
    detail: str = ""

    def line(self) -> str:
        """`<category> <class> <path>`, then a tab and the detail when there is one (the path may hold spaces;
        display_path escapes tabs and newlines, so the tab is unambiguous)."""
        text = f"{self.category.value} {self.klass.value} {display_path(self.path)}"
        return f"{text}\t{self.detail}" if self.detail else text

    def to_json(self) -> dict[str, str]:
        # fsdecode (surrogateescape) + json's \udcXX escapes keep any byte sequence exact, as scan.ScanIssue does.
        return {"category": self.category.value, "class": self.klass.value, "path": os.fsdecode(self.path),
                "display_path": display_path(self.path), "detail": self.detail}

    @classmethod
    def from_json(cls, item: dict) -> "Discrepancy":
        return cls(Category(item["category"]), EntryClass(item["class"]), os.fsencode(item["path"]),
                   item.get("detail", ""))


def _zero_counts() -> dict[EntryClass, dict[Category, int]]:
    return {k: {c: 0 for c in Category} for k in EntryClass}


@dataclass
class CompareSummary:
    against: Against
    source: str  # the catalog file, or s3://bucket/prefix
    check_sha256: bool
    paths: tuple[bytes, ...]
    counts: dict[EntryClass, dict[Category, int]] = field(default_factory=_zero_counts)
    local_entries: int = 0  # files and symlinks on disk, in the compared subtrees
    backed_up_entries: int = 0  # entries of the catalog or objects of the bucket, in the compared subtrees
    hashed_files: int = 0
    hashed_bytes: int = 0
    object_requests: int = 0  # HEAD, GetObjectTagging and GET requests (listings not counted)
    unreadable: int = 0  # directories or entries the scan could not read

    def add(self, d: Discrepancy) -> None:
        self.counts[d.klass][d.category] += 1

    def total(self, category: Category | None = None) -> int:
        return sum(n for per in self.counts.values() for c, n in per.items() if category in (None, c))

    @property
    def ok(self) -> bool:
        return self.total() == 0

    def table_lines(self) -> list[str]:
        what = "size + mtime" + (" + SHA-256 tree hash" if self.check_sha256 else "")
        cats = list(Category)
        width = max(len(c.value) for c in cats)
        lines = [f"compare: {', '.join(display_path(p) for p in self.paths)}",
                 f"  against {self.against.value} {self.source} ({what})",
                 "  " + f"{'':8}" + "".join(f"{c.value:>{width + 2}}" for c in cats)]
        for klass in EntryClass:
            lines.append("  " + f"{klass.value:8}" + "".join(f"{self.counts[klass][c]:>{width + 2},}" for c in cats))
        lines.append("  " + f"{'total':8}" + "".join(f"{self.total(c):>{width + 2},}" for c in cats))
        hashed = (f"; hashed {self.hashed_files:,} files ({format_size(self.hashed_bytes)})"
                  if self.check_sha256 else "")
        lines.append(f"  compared {self.local_entries:,} entries on disk with {self.backed_up_entries:,} backed up"
                     f"{hashed}; {self.object_requests:,} object requests")
        if self.unreadable:
            lines.append(f"  unreadable on disk: {self.unreadable:,} (their backed-up entries are cannot-check)")
        lines.append("  result: no discrepancy" if self.ok else f"  result: {self.total():,} discrepancies")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "against": self.against.value, "source": self.source, "check_sha256": self.check_sha256,
            "paths": [os.fsdecode(p) for p in self.paths],
            "counts": {k.value: {c.value: n for c, n in per.items()} for k, per in self.counts.items()},
            "totals": {c.value: self.total(c) for c in Category}, "discrepancies": self.total(),
            "local_entries": self.local_entries, "backed_up_entries": self.backed_up_entries,
            "hashed_files": self.hashed_files, "hashed_bytes": self.hashed_bytes,
            "object_requests": self.object_requests, "unreadable": self.unreadable, "ok": self.ok,
        }

    @classmethod
    def from_json(cls, data: dict) -> "CompareSummary":
        summary = cls(Against(data["against"]), data["source"], data["check_sha256"],
                      tuple(os.fsencode(p) for p in data["paths"]))
        for klass, per in data["counts"].items():
            for category, n in per.items():
                summary.counts[EntryClass(klass)][Category(category)] = n
        for name in ("local_entries", "backed_up_entries", "hashed_files", "hashed_bytes", "object_requests",
                     "unreadable"):
            setattr(summary, name, data[name])
        return summary


_KIND_NAMES = {EntryKind.FILE: "file", EntryKind.SYMLINK: "symlink", EntryKind.DIRECTORY: "directory",
               EntryKind.SPECIAL: "special file"}


def quick_verdict(local: Entry, remote: Entry, klass: EntryClass, *, mtime_known: bool) -> Discrepancy | None:
    """What a pair's records alone say: changed by kind, size, or (when the remote side knows it) mtime.
    None means "no difference seen yet"; a further check may still find one."""
    if local.kind is not remote.kind:
        return Discrepancy(Category.CHANGED, klass, local.path,
                           f"was a {_KIND_NAMES[remote.kind]}, now a {_KIND_NAMES[local.kind]}")
    if local.size_bytes != remote.size_bytes:
        return Discrepancy(Category.CHANGED, klass, local.path, f"size {remote.size_bytes} -> {local.size_bytes}")
    if mtime_known and local.mtime_ns != remote.mtime_ns and not mtime_matches(local.mtime_ns, remote.mtime_ns):
        return Discrepancy(Category.CHANGED, klass, local.path,
                           f"mtime {format_ns(remote.mtime_ns)} -> {format_ns(local.mtime_ns)}")
    return None


# --- bucket listings as records --------------------------------------------------------------------------------------

KEY_CLASSES = (KeyClass.SMALL, KeyClass.LARGE, KeyClass.SYMLINK)


def listed_entry(path: bytes, klass: KeyClass, size_bytes: int, last_modified_ns: int = 0) -> Entry:
    """An object of the listing as a record, so it sorts and spills like the scan's. The key class travels in the
    `dev` field, the listing's LastModified in `ctime_ns` (listings carry no mtime: 0 until a HEAD reads the
    metadata)."""
    kind = EntryKind.SYMLINK if klass is KeyClass.SYMLINK else EntryKind.FILE
    return Entry.of(path, kind, size_bytes, 0, last_modified_ns, 0, 0, 0, 0, KEY_CLASSES.index(klass), 0, 0)


def packed_entry(path: bytes, kind: EntryKind, size_bytes: int, mtime_ns: int, sha256: bytes, ref: PackRef,
                 planned_ns: int) -> Entry:
    """A member of a pack, from its index, as a record: the mtime is the index's (no HEAD needed), `tree_hash`
    holds the member's SHA-256 (of the data; of the target for a symlink), `location` the member's place, `ctime_ns`
    its run's plan time (the copy's date when copies of one path are ranked) and `dev` the key class it is reported
    under (small file or symlink)."""
    klass = KeyClass.SYMLINK if kind is EntryKind.SYMLINK else KeyClass.SMALL
    entry = Entry.of(path, kind, size_bytes, mtime_ns, planned_ns, 0, 0, 0, 0, KEY_CLASSES.index(klass), 0, 0)
    return entry._replace(tree_hash=sha256, location=ref.encode())


def listed_class(entry: Entry) -> KeyClass:
    return KEY_CLASSES[entry.dev]


# --- reading the local side ------------------------------------------------------------------------------------------

class NotComparable(Exception):
    """A file that could not be hashed as the version the scan saw; the message says why."""


def local_tree_hash(entry: Entry, piece_bytes: int = READ_PIECE_BYTES,
                    stop: threading.Event | None = None, *, whole_sha256: bool = False) -> tuple[str, int]:
    """(hex tree hash, bytes read) of what the uploader would store: the file's data, or a symlink's target bytes.
    `stop` ends a long read early (Ctrl-C must not wait for a terabyte file). `whole_sha256`: the plain SHA-256 of
    the data instead (what a pack's index holds; the same as the tree hash up to 1 MiB)."""
    path = entry.path
    new_hasher: Callable[[], Any] = hashlib.sha256 if whole_sha256 else TreeHasher
    if entry.kind is EntryKind.SYMLINK:
        target = os.readlink(path)
        hasher = new_hasher()
        hasher.update(target)
        return hasher.hexdigest(), len(target)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOATIME)  # a compare must not change the atime the next backup records
    except PermissionError:
        fd = os.open(path, flags)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise NotComparable("no longer a regular file")
        if (before.st_size, before.st_mtime_ns) != (entry.size_bytes, entry.mtime_ns):
            raise NotComparable("changed during the compare; run it again")
        hasher = new_hasher()
        buffer = bytearray(piece_bytes)
        view = memoryview(buffer)
        total = 0
        while True:
            n = os.readv(fd, [buffer])
            if n == 0:
                break
            if stop is not None and stop.is_set():
                raise NotComparable("interrupted")
            hasher.update(view[:n])  # hashlib releases the GIL on large updates: the workers hash in parallel
            total += n
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or total != before.st_size:
            raise NotComparable("changed while it was read; run the compare again")
        return hasher.hexdigest(), total
    finally:
        os.close(fd)


# --- the checks that cost I/O ----------------------------------------------------------------------------------------

class Checker:
    """The per-pair work that runs in the pool: HEAD for the mtime (bucket mode), the stored and local tree hashes
    (check_sha256). Anything unreadable becomes a cannot-check discrepancy with the reason, never a pass."""

    def __init__(self, *, against: Against, check_sha256: bool, policy: Policy, client: Callable[[], Any],
                 summary: CompareSummary, hash_sink: HashSink | None = None):
        self.against = against
        self.hash_sink = hash_sink
        self.check_sha256 = check_sha256
        self.bucket = policy.s3.bucket
        self.prefix = policy.s3.prefix
        self._client = client
        self._summary = summary
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def count(self, requests: int = 0, hashed_bytes: int = -1) -> None:
        with self._lock:
            self._summary.object_requests += requests
            if hashed_bytes >= 0:
                self._summary.hashed_files += 1
                self._summary.hashed_bytes += hashed_bytes

    def __call__(self, local: Entry, remote: Entry, klass: EntryClass) -> Discrepancy | None:
        from ..transfer.objects import ObjectAccessError

        def cannot(reason: str) -> Discrepancy:
            return Discrepancy(Category.CANNOT_CHECK, klass, local.path, reason)

        try:
            whole_sha256 = False
            if self.against is Against.BUCKET and packed(remote):
                # A member of a pack: its index gave the size and mtime (quick_verdict compared them) and the
                # SHA-256 of its data, which is the tree hash up to one 1 MiB leaf (and always for a symlink).
                if not self.check_sha256:
                    return None
                stored = remote.tree_hash.hex()
                whole_sha256 = local.kind is EntryKind.FILE and remote.size_bytes > LEAF_BYTES
            elif self.against is Against.BUCKET:
                key = object_key(self.prefix, listed_class(remote), remote.path).key
                info = self._head(key)
                if info is None:
                    return cannot("object gone from the bucket since it was listed")
                mtime_text = info.metadata.get("mtime")
                if mtime_text is None:
                    return cannot("object has no mtime metadata (not written by fs3g?)")
                try:
                    stored_mtime_ns = text_ns(mtime_text)
                    same_mtime = mtime_text_matches(mtime_text, local.mtime_ns)
                except ValueError:
                    return cannot(f"object has an unreadable mtime {mtime_text!r}")
                if not same_mtime:
                    return Discrepancy(Category.CHANGED, klass, local.path,
                                       f"mtime {format_ns(stored_mtime_ns)} -> {format_ns(local.mtime_ns)}")
                if not self.check_sha256:
                    return None
                stored = info.metadata.get(TREEHASH_KEY) or self._tag(key, info.storage_class)
            elif remote.tree_hash:
                stored = remote.tree_hash.hex()
            else:  # a catalog written before records held the hash: ask the bucket
                stored = self._stored_hash(remote, klass)
                if stored == "":
                    return cannot("the catalog lists it but the bucket has no object for it")
            if not stored:
                return cannot("no SHA-256 tree hash stored with the object")
            if self.hash_sink is not None and not whole_sha256:  # hashed later, by an array task
                self.hash_sink(local, stored.strip().lower(), klass)
                return None
            digest, read_bytes = local_tree_hash(local, stop=self.stop, whole_sha256=whole_sha256)
            self.count(hashed_bytes=read_bytes)
            if digest != stored.strip().lower():
                return Discrepancy(Category.CHANGED, klass, local.path,
                                   "SHA-256 differs" if whole_sha256 else "SHA-256 tree hash differs")
            return None
        except ObjectAccessError as e:
            return cannot(e.message)
        except NotComparable as e:
            return cannot(str(e))
        except FileNotFoundError:
            return cannot("vanished during the compare")
        except OSError as e:
            return cannot(f"cannot read: {e.strerror or e}")

    def _head(self, key: str) -> Any:
        from ..transfer.objects import head_object

        self.count(requests=1)
        return head_object(self._client(), self.bucket, key)

    def _tag(self, key: str, storage_class: str) -> str | None:
        from ..transfer.objects import ObjectAccessError, object_tag

        self.count(requests=1)
        try:
            return object_tag(self._client(), self.bucket, key, TREEHASH_KEY)
        except ObjectAccessError as e:
            where = f" (object in {storage_class})" if storage_class not in ("STANDARD", "") else ""
            raise ObjectAccessError(f"tree hash tag unreadable: {e.message}{where}", code=e.code) from e

    def _stored_hash(self, remote: Entry, klass: EntryClass) -> str | None:
        """The stored hash of a catalog entry's object; "" when there is no object. A file whose class changed with
        the threshold since its backup is looked up under the other file class too."""
        classes = [KEY_CLASS[klass]]
        if klass is not EntryClass.SYMLINK:
            classes.append(KeyClass.LARGE if klass is EntryClass.SMALL else KeyClass.SMALL)
        for key_class in classes:
            key = object_key(self.prefix, key_class, remote.path).key
            info = self._head(key)
            if info is not None:
                return info.metadata.get(TREEHASH_KEY) or self._tag(key, info.storage_class)
        return ""
