"""Bucket listings for verification: one ListObjectsV2 page per 1,000 keys, never a HEAD per object (except for the
rare hashed long-path keys, which live in one flat directory shared by the whole lab)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import botocore.exceptions


@dataclass(frozen=True)
class ListedObject:
    size_bytes: int
    etag: str
    storage_class: str


def list_directory(client: Any, bucket: str, directory: str) -> dict[str, ListedObject]:
    """The objects directly under `directory` (a key prefix ending in `/`): one request per 1,000 keys."""
    out: dict[str, ListedObject] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": directory, "Delimiter": "/"}
    while True:
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            out[obj["Key"]] = ListedObject(obj["Size"], str(obj["ETag"]).strip('"'),
                                           obj.get("StorageClass", "STANDARD"))
        if not page.get("IsTruncated"):
            return out
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def iter_objects(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, ListedObject]]:
    """Every object under `prefix`, recursively, in key order, one page (1,000 keys) in memory at a time."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            yield obj["Key"], ListedObject(obj["Size"], str(obj["ETag"]).strip('"'), obj.get("StorageClass", "STANDARD"))
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def head(client: Any, bucket: str, key: str) -> ListedObject | None:
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return ListedObject(response["ContentLength"], str(response["ETag"]).strip('"'),
                        response.get("StorageClass", "STANDARD"))


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload; one already gone is fine."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
