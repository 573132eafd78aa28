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
    modified_s: float = 0.0  # LastModified, seconds since the epoch (0 when the listing does not say)


def listed(item: dict[str, Any]) -> ListedObject:
    """One `Contents` item of a ListObjectsV2 page."""
    modified = item.get("LastModified")
    return ListedObject(item["Size"], str(item["ETag"]).strip('"'), item.get("StorageClass", "STANDARD"),
                        modified.timestamp() if modified is not None else 0.0)


def list_pages(client: Any, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
    """The `Contents` of each ListObjectsV2 page (1,000 keys), following continuation tokens."""
    while True:
        page = client.list_objects_v2(**kwargs)
        yield page.get("Contents", [])
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def list_directory(client: Any, bucket: str, directory: str) -> dict[str, ListedObject]:
    """The objects directly under `directory` (a key prefix ending in `/`): one request per 1,000 keys."""
    return {item["Key"]: listed(item)
            for page in list_pages(client, Bucket=bucket, Prefix=directory, Delimiter="/") for item in page}


def iter_objects(client: Any, bucket: str, prefix: str, start_after: str = "") -> Iterator[tuple[str, ListedObject]]:
    """Every object under `prefix` (after `start_after`, when given), recursively, in key order, one page (1,000 keys)
    in memory at a time."""
    extra = {"StartAfter": start_after} if start_after else {}
    for page in list_pages(client, Bucket=bucket, Prefix=prefix, **extra):
        for item in page:
            yield item["Key"], listed(item)


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload; one already gone is fine."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
