"""S3 requests of `fs3g prune` and of the lab locks (prune/ decides what; this module only talks to the bucket).

    delete_keys   one DeleteObjects request of at most 1,000 keys (Quiet); the keys S3 could not delete, with why
    put_lock      PUT a small lock object (STANDARD), If-None-Match where the store supports it is not relied on
    get_lock      GET a lock object (at most LOCK_MAX_BYTES); None when there is none
    delete_lock   DELETE a lock object (its absence is fine)

Only our own lock objects and the keys prune/ hands in are ever deleted.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from .objects import NOT_FOUND_CODES, wrap_error

DELETE_BATCH = 1000  # S3's most keys per DeleteObjects
LOCK_MAX_BYTES = 64 * 1024


def delete_keys(client: Any, bucket: str, keys: list[str]) -> list[tuple[str, str]]:
    """Delete `keys` (at most 1,000) in one request; (key, error code) of each S3 refused."""
    if not keys:
        return []
    if len(keys) > DELETE_BATCH:
        raise ValueError(f"{len(keys)} keys in one DeleteObjects (at most {DELETE_BATCH})")
    try:
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise wrap_error(e, "DeleteObjects", keys[0]) from e
    return [(str(e.get("Key")), str(e.get("Code"))) for e in response.get("Errors", [])]


def put_lock(client: Any, bucket: str, key: str, body: bytes) -> None:
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", StorageClass="STANDARD")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise wrap_error(e, "PUT", key) from e


def get_lock(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        with response["Body"] as body:
            return body.read(LOCK_MAX_BYTES + 1)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
            return None
        raise wrap_error(e, "GET", key) from e
    except botocore.exceptions.BotoCoreError as e:
        raise wrap_error(e, "GET", key) from e


def delete_lock(client: Any, bucket: str, key: str) -> None:
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") not in NOT_FOUND_CODES:
            raise wrap_error(e, "DELETE", key) from e
    except botocore.exceptions.BotoCoreError as e:
        raise wrap_error(e, "DELETE", key) from e
