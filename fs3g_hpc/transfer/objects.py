"""Reading single objects for `fs3g compare` and `fs3g restore`: HEAD with metadata, the tree-hash tag, small bodies (pathmap objects),
streamed bodies (pack indexes, `object_stream`), and a recursive listing whose S3 failures come out as `ObjectAccessError` instead of botocore exceptions.

Callers outside `transfer/` never see botocore: every failure is an `ObjectAccessError` carrying S3's error code, so
they can tell "this object cannot be read" (report it by name) from a bug.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Mapping

import botocore.exceptions

from ..errors import ServiceError
from .lister import ListedObject, iter_objects
from .target import target_error

_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"')


def restore_header_ready(header: str | None) -> bool | None:
    """The `x-amz-restore` header: True restored, False in progress, None never requested."""
    if not header:
        return None
    match = _ONGOING.search(header)
    return None if match is None else match.group(1) == "false"


class ObjectAccessError(ServiceError):
    """S3 refused or failed a request about one object (or one listing); `code` is S3's error code when it gave one."""

    def __init__(self, message: str, *, code: str = "", key: str | None = None, hint: str | None = None):
        super().__init__(message, key=key, hint=hint)
        self.code = code


def _wrap(e: Exception, what: str, key: str | None = None) -> ObjectAccessError:
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        return ObjectAccessError(f"{what}: S3 {code}: {error.get('Message', e)}", code=code, key=key)
    return ObjectAccessError(f"{what}: {type(e).__name__}: {e}", key=key)


# Public names for the other transfer/ modules (snapshots.py): one home for S3 error wrapping.
NOT_FOUND_CODES = _NOT_FOUND
wrap_error = _wrap


@dataclass(frozen=True)
class ObjectInfo:
    size_bytes: int
    etag: str
    storage_class: str
    last_modified_ns: int
    metadata: Mapping[str, str]  # user metadata, keys lower-case as S3 returns them
    restore_ready: bool | None = None  # x-amz-restore: True restored, False in progress, None never requested

    @property
    def multipart(self) -> bool:
        return "-" in self.etag


def head_object(client: Any, bucket: str, key: str) -> ObjectInfo | None:
    """The object's size, class and user metadata; None when it does not exist."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
            return None
        raise _wrap(e, "HEAD", key) from e
    except botocore.exceptions.BotoCoreError as e:
        raise _wrap(e, "HEAD", key) from e
    modified = response.get("LastModified")
    return ObjectInfo(
        size_bytes=int(response["ContentLength"]),
        etag=str(response.get("ETag", "")).strip('"'),
        storage_class=response.get("StorageClass", "STANDARD"),
        last_modified_ns=int(modified.timestamp() * 1_000_000_000) if modified is not None else 0,
        metadata={k.lower(): v for k, v in response.get("Metadata", {}).items()},
        restore_ready=restore_header_ready(response.get("Restore")),
    )


def object_tag(client: Any, bucket: str, key: str, tag: str) -> str | None:
    """The value of one object tag, None when the object has no such tag. Stores refuse this on archived objects
    (moto: InvalidObjectState on GLACIER), which raises ObjectAccessError."""
    try:
        response = client.get_object_tagging(Bucket=bucket, Key=key)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, "GetObjectTagging", key) from e
    for item in response.get("TagSet", []):
        if item.get("Key") == tag:
            return str(item.get("Value", ""))
    return None


def read_small_object(client: Any, bucket: str, key: str, max_bytes: int) -> bytes | None:
    """The body of a small object (at most `max_bytes` are read); None when it does not exist."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        with response["Body"] as body:
            return body.read(max_bytes)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
            return None
        raise _wrap(e, "GET", key) from e
    except botocore.exceptions.BotoCoreError as e:
        raise _wrap(e, "GET", key) from e


@contextlib.contextmanager
def object_stream(client: Any, bucket: str, key: str) -> Iterator[BinaryIO]:
    """The body of one object as a binary stream read on demand (a pack's index, whatever its size: never held
    whole). S3 failures, on the GET or while reading, come out as ObjectAccessError naming the key."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, "GET", key) from e
    body = response["Body"]
    try:
        yield _ReadErrors(body, key)
    finally:
        body.close()


class _ReadErrors(io.RawIOBase):
    """A streaming body whose read failures are ObjectAccessError (botocore's stay inside transfer/)."""

    def __init__(self, body: Any, key: str):
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise _wrap(e, "GET (reading the body)", self._key) from e
        buffer[:len(data)] = data
        return len(data)


def list_tree(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, ListedObject]]:
    """`lister.iter_objects` (every object under `prefix`, one page in memory), with S3 failures as
    ObjectAccessError: a missing bucket or bad credentials say so in one line."""
    try:
        yield from iter_objects(client, bucket, prefix)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        target = target_error(e, bucket=bucket, prefix=prefix.rstrip("/"), endpoint=client.meta.endpoint_url)
        if target is not None:
            raise target from e
        error = _wrap(e, f"listing s3://{bucket}/{prefix}")
        error.hint = "check s3.bucket, the endpoint and the credentials, then run again"
        raise error from e


def head_listed(client: Any, bucket: str, key: str) -> ListedObject | None:
    """One exact key as a listing would show it (size, ETag, class); None when absent."""
    info = head_object(client, bucket, key)
    if info is None:
        return None
    return ListedObject(info.size_bytes, info.etag, info.storage_class, info.last_modified_ns / 1e9)
