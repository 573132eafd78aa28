"""The multipart engine shared by large files (transfer/uploader.py) and packs (transfer/packer.py): one home for
sending a checked PUT, sending parts in parallel from caller-owned buffers, and completing an upload.

Integrity: every PUT and part carries a CRC32 the server checks; a checksum rejection (a body damaged in flight) is
sent again from the same buffer (up to RESEND_ATTEMPTS sends). A completed upload is checked against the composite
CRC32 of its parts, or, where the store does not report one, its size (one HEAD).

Memory: the buffers belong to the caller (counted in its ByteBudget); a sender holds one (ETag, CRC32) per part.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import botocore.exceptions

from ..config import StorageClass
from ..model.checksums import composite_crc32, crc32_b64

log = logging.getLogger(__name__)

# Codes a server gives for a body that does not match its checksum: the data was damaged on the way, so send again.
CHECKSUM_ERRORS = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "InvalidChecksum"}
RESEND_ATTEMPTS = 3


class UploadError(Exception):
    """One file (or pack) could not be backed up; the message says why (the shard goes on). `retryable` says
    whether a retry round may mend it (a checksum damaged in flight may; a file too large for S3 never will)."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class FileChanged(UploadError):
    pass


class Interrupted(Exception):
    """The task was asked to stop; the state is saved for a rerun."""


def client_error_code(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


class Body(io.RawIOBase):
    """A read-only, seekable view of a buffer, so botocore can send (and re-send) a part without copying it: read()
    answers views of it (valid while the caller owns the buffer: until the part's release)."""

    def __init__(self, view: memoryview):
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._view)

    def __bool__(self) -> bool:
        # An empty body must still count as a body: botocore would otherwise frame it differently from its length.
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> memoryview:  # type: ignore[override]
        """A view of the buffer, not a copy: botocore hashes it (the SigV4 payload hash, over http) and urllib3 sends
        it in blocks as views, so a part's bytes are never copied in Python (a 1 GiB upload copied them twice,
        2 GiB in 16 KiB bytes objects). Empty (falsy) at the end, as read() must be."""
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = self._view[self._pos:end]
        self._pos = end
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos


class ByteBudget:
    """Bytes of multipart buffers in use across all large files and packs of a shard: the policy's memory ceiling,
    enforced. Served in order of request, so that a large file asking for all its buffers at once is not starved by
    a pack asking for one part's buffer at a time."""

    def __init__(self, total: int):
        self.total = total
        self._free = total
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, n: int, stop: threading.Event) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._free < n:
                    if stop.is_set():
                        raise Interrupted()
                    self._cond.wait(timeout=0.5)
                self._free -= n
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, n: int) -> None:
        with self._cond:
            self._free += n
            self._cond.notify_all()


def put_checked(client: Any, bucket: str, key: str, data: bytes | memoryview, metadata: dict[str, str],
                storage_class: StorageClass, *, putter: Any = None) -> tuple[str, str]:
    """One PUT with our CRC32; a checksum rejection is sent again. Returns the ETag and the CRC32. `putter` (a
    transfer/lean.py LeanClient of `client`) sends it without botocore's per-request pipeline, to the same effect."""
    checksum = crc32_b64(data)
    put_object = client.put_object if putter is None else putter.put_object
    for attempt in range(1, RESEND_ATTEMPTS + 1):
        try:
            response = put_object(Bucket=bucket, Key=key, Body=data if isinstance(data, bytes) else Body(data),
                                  Metadata=metadata, StorageClass=storage_class.value, ChecksumCRC32=checksum)
        except botocore.exceptions.ClientError as e:
            if client_error_code(e) in CHECKSUM_ERRORS and attempt < RESEND_ATTEMPTS:
                log.warning("%s: damaged in flight (%s), sending again", key, client_error_code(e))
                continue
            raise
        echoed = response.get("ChecksumCRC32")
        if echoed is not None and echoed != checksum:
            raise UploadError(f"S3 stored CRC32 {echoed}, expected {checksum}")
        return str(response.get("ETag", "")).strip('"'), checksum
    raise AssertionError("unreachable")


class MultipartSender:
    """The parts of one multipart upload, sent in parallel by the shard's part pool; `complete()` ends the upload
    and checks it. The caller fills each buffer and gets it back through `release` once its part is sent (or
    failed); the first error is kept in `errors` and raised by `wait()`."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str, pool: ThreadPoolExecutor,
                 on_part_sent: Callable[[], None] = lambda: None):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.upload_id = upload_id
        self.pool = pool
        self.on_part_sent = on_part_sent
        self.results: dict[int, tuple[str, str]] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self._sends: list[Future] = []

    def reuse(self, number: int, etag: str, checksum: str) -> None:
        """A part the server already holds with the same content (a resumed upload)."""
        with self.lock:
            self.results[number] = (etag, checksum)

    def submit(self, number: int, view: memoryview, checksum: str, release: Callable[[], None]) -> None:
        with self.lock:
            self._sends.append(self.pool.submit(self._send, number, view, checksum, release))

    def _send(self, number: int, view: memoryview, checksum: str, release: Callable[[], None]) -> None:
        try:
            for attempt in range(1, RESEND_ATTEMPTS + 1):
                try:
                    response = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                       PartNumber=number, Body=Body(view), ChecksumCRC32=checksum)
                    break
                except botocore.exceptions.ClientError as e:
                    if client_error_code(e) in CHECKSUM_ERRORS and attempt < RESEND_ATTEMPTS:
                        log.warning("%s part %d: damaged in flight (%s), sending again", self.key, number,
                                    client_error_code(e))
                        continue
                    raise
            echoed = response.get("ChecksumCRC32")
            if echoed is not None and echoed != checksum:
                raise UploadError(f"part {number}: S3 stored CRC32 {echoed}, expected {checksum}")
            with self.lock:
                self.results[number] = (str(response["ETag"]), checksum)
            self.on_part_sent()
        except BaseException as e:  # noqa: BLE001 - handed to the upload's owner
            self.errors.append(e)
        finally:
            release()

    def wait(self) -> None:
        """Until every submitted part is sent; raises the first error."""
        with self.lock:
            sends = list(self._sends)
        for f in sends:
            f.exception()
        if self.errors:
            raise self.errors[0]

    def completed_parts(self) -> list[tuple[int, str, str]]:
        return [(n, etag, crc) for n, (etag, crc) in sorted(self.results.items())]

    def complete(self, size: int) -> tuple[str, str]:
        """Complete the upload and check it (composite CRC32, or the size); returns its ETag and composite CRC32."""
        parts = self.completed_parts()
        response = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag, "ChecksumCRC32": crc}
                                       for n, etag, crc in parts]})
        expected = composite_crc32(crc for _, _, crc in parts)
        reported = response.get("ChecksumCRC32")
        if reported is not None and reported != expected:
            raise UploadError(f"completed object has CRC32 {reported}, expected {expected}")
        if reported is None:  # the store does not report composite checksums: check the size at least
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
            if head["ContentLength"] != size:
                raise UploadError(f"completed object has {head['ContentLength']} bytes, expected {size}")
        return str(response.get("ETag", "")).strip('"'), expected

