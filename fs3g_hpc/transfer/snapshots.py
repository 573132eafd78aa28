"""S3 requests of catalog snapshots (snapshots/ decides what; this module only talks to the bucket).

    put_file           one chunk or manifest PUT from a local file (STANDARD), its SHA-256 checked by S3 where the
                       endpoint verifies checksums; returns the version id when the bucket is versioned
    get_file           one object streamed to a local file, at most `max_bytes`
    list_snapshot_ids  the ids under [PREFIX/]catalog/ (a delimiter listing: one request per 1,000 snapshots)
    bucket_versioned   GetBucketVersioning: Enabled (or Suspended, whose old versions remain) -> True
    has_objects        is there any object under a prefix (one LIST of one key)
    iter_versions      ListObjectVersions under a prefix, one page at a time: (key, version id, size, latest)
    version_at         the version of one key that was current at a time (restore --as-of, versioned buckets);
                       object_version_at: the same with its size and ETag (a large file's ranged GETs)

Failures come out as ObjectAccessError (transfer/objects.py), credentials and bucket problems as TargetError.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import botocore.exceptions

from .objects import NOT_FOUND_CODES as _NOT_FOUND, ObjectAccessError, wrap_error as _wrap

_COPY_BYTES = 1 << 20


def put_file(client: Any, bucket: str, key: str, path: Path, sha256_hex: str, content_type: str) -> str:
    """PUT `path` as `key` with its SHA-256 for the endpoint to check; the version id ("" when unversioned)."""
    digest = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    try:
        with open(path, "rb") as body:
            response = client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                                         ChecksumSHA256=digest, StorageClass="STANDARD")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, "PUT", key) from e
    return str(response.get("VersionId") or "")


def get_file(client: Any, bucket: str, key: str, dest: Path, max_bytes: int, version_id: str = "") -> int | None:
    """Stream `key` into `dest` (created owner-only); its size, or None when the object does not exist. More than
    `max_bytes` raises ObjectAccessError (a snapshot object is never that large)."""
    extra = {"VersionId": version_id} if version_id else {}
    try:
        response = client.get_object(Bucket=bucket, Key=key, **extra)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
            return None
        raise _wrap(e, "GET", key) from e
    except botocore.exceptions.BotoCoreError as e:
        raise _wrap(e, "GET", key) from e
    import os

    total = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, response["Body"] as body:
            while True:
                piece = body.read(_COPY_BYTES)
                if not piece:
                    break
                total += len(piece)
                if total > max_bytes:
                    raise ObjectAccessError(f"{key} is larger than {max_bytes} bytes", key=key)
                out.write(piece)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, "GET", key) from e
    return total


def list_snapshot_ids(client: Any, bucket: str, snapshots_prefix: str) -> list[str]:
    """The directory names under `snapshots_prefix` (each a candidate id: the caller validates)."""
    names: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": snapshots_prefix, "Delimiter": "/"}
    try:
        while True:
            page = client.list_objects_v2(**kwargs)
            for item in page.get("CommonPrefixes", []):
                names.append(item["Prefix"][len(snapshots_prefix):].rstrip("/"))
            if not page.get("IsTruncated"):
                return names
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, f"listing s3://{bucket}/{snapshots_prefix}") from e


def bucket_versioned(client: Any, bucket: str) -> bool:
    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status", "")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return False  # a store without versioning support, or no permission to ask: treated as unversioned
    return status in ("Enabled", "Suspended")


def has_objects(client: Any, bucket: str, prefix: str) -> bool:
    try:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, f"listing s3://{bucket}/{prefix}") from e
    return bool(page.get("Contents"))


def iter_versions(client: Any, bucket: str, prefix: str, delimiter: str = "") -> Iterator[tuple[str, str, int, bool]]:
    """(key, version id, size, is latest) of every object version under `prefix` (delete markers skipped), one page
    (1,000 versions) in memory at a time, in key order and newest first per key."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    try:
        while True:
            page = client.list_object_versions(**kwargs)
            for item in page.get("Versions", []):
                yield item["Key"], str(item.get("VersionId") or ""), int(item.get("Size", 0)), bool(item.get("IsLatest"))
            if not page.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, f"listing versions under s3://{bucket}/{prefix}") from e


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key, as ListObjectVersions gives it (what a ranged GET with VersionId needs)."""

    version_id: str
    size_bytes: int
    etag: str
    modified_s: float


def version_at(client: Any, bucket: str, key: str, when_s: float) -> str | None:
    """The id of `key`'s newest version written at or before `when_s` (POSIX seconds); None when it has none (delete
    markers are no version). One ListObjectVersions of the key (a page at a time), never a HEAD."""
    found = object_version_at(client, bucket, key, when_s)
    return None if found is None else found.version_id


def object_version_at(client: Any, bucket: str, key: str, when_s: float) -> ObjectVersion | None:
    """`key`'s newest version written at or before `when_s`, with its size and ETag; None when it has none.
    ListObjectVersions with Prefix=key: the pages hold that key's versions (and those of keys it is a prefix of,
    passed over); it stops at the first page past the key, so the cost is bounded by one key's versions."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    best: ObjectVersion | None = None
    try:
        while True:
            page = client.list_object_versions(**kwargs)
            for item in page.get("Versions", []):
                if item["Key"] != key:
                    continue
                stamp = item["LastModified"].timestamp()
                if stamp <= when_s and (best is None or stamp > best.modified_s):
                    best = ObjectVersion(str(item.get("VersionId") or ""), int(item.get("Size", 0)),
                                         str(item.get("ETag", "")).strip('"'), stamp)
            if not page.get("IsTruncated") or page.get("NextKeyMarker", key) != key:
                return best
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _wrap(e, f"listing versions of s3://{bucket}/{key}") from e


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            piece = f.read(_COPY_BYTES)
            if not piece:
                return h.hexdigest()
            h.update(piece)
