"""Reading objects back: Glacier restore requests, readiness checks, whole and ranged GETs.

Only S3 calls live here; where the bytes go (the destination, its safety rules) is `restore/destination.py`'s business.
"""

from __future__ import annotations

import random
import re
from email.utils import parsedate_to_datetime
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator

import botocore.exceptions
from botocore.awsrequest import AWSRequest

from .lean import lean_client
from .lister import ListedObject, list_pages, listed

CHUNK_BYTES = 1024 * 1024


class RequestOutcome(Enum):
    REQUESTED = "requested"  # 202: a new restore started
    IN_PROGRESS = "in-progress"  # 409 RestoreAlreadyInProgress
    READY = "ready"  # 200: a restored copy exists already
    NOT_ARCHIVED = "not-archived"  # the object is readable as it is
    MISSING = "missing"


class NotRestored(Exception):
    """GET refused: the object is in an archive class and no restored copy is available."""


class ObjectMissing(Exception):
    pass


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def request_restore(client: Any, bucket: str, key: str, days: int, tier: str) -> RequestOutcome:
    """Ask for a temporary copy of an archived object; asking again is harmless (409 or 200)."""
    try:
        response = client.restore_object(Bucket=bucket, Key=key,
                                         RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}})
    except botocore.exceptions.ClientError as e:
        code = _code(e)
        if code == "RestoreAlreadyInProgress":
            return RequestOutcome.IN_PROGRESS
        if code == "InvalidObjectState":  # STANDARD and the like: nothing to restore
            return RequestOutcome.NOT_ARCHIVED
        if code in ("NoSuchKey", "404", "NotFound"):
            return RequestOutcome.MISSING
        raise
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return RequestOutcome.READY if status == 200 else RequestOutcome.REQUESTED


@dataclass(frozen=True)
class Readiness:
    obj: ListedObject
    ready: bool | None  # None: the listing did not say (the endpoint ignores RestoreStatus): ask by HEAD


def list_with_restore_status(client: Any, bucket: str, directory: str) -> dict[str, Readiness]:
    """One listing per 1,000 keys with `RestoreStatus` where the endpoint supports it."""
    out: dict[str, Readiness] = {}
    for page in list_pages(client, Bucket=bucket, Prefix=directory, Delimiter="/",
                           OptionalObjectAttributes=["RestoreStatus"]):
        for item in page:
            status = item.get("RestoreStatus")  # absent: never requested, or an endpoint that ignores the option
            if status is None:
                ready = None
            elif status.get("IsRestoreInProgress"):
                ready = False
            else:
                ready = True if status.get("RestoreExpiryDate") else None
            out[item["Key"]] = Readiness(listed(item), ready)
    return out


@dataclass(frozen=True)
class WholeObject:
    data: bytes
    etag: str
    metadata: dict[str, str]
    last_modified_s: float = 0.0  # 0: not said


def _get(client: Any, **kwargs: Any) -> Any:
    try:
        return client.get_object(**kwargs)
    except botocore.exceptions.ClientError as e:
        code = _code(e)
        if code == "InvalidObjectState":
            raise NotRestored(f"{kwargs['Key']} is archived and not restored (yet)") from e
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ObjectMissing(f"{kwargs['Key']} is not in the bucket") from e
        raise


def get_whole(client: Any, bucket: str, key: str, version_id: str = "") -> WholeObject:
    """A small object (that version of it, when given) in one request; held in memory (at most the small-file
    threshold)."""
    r = _get(client, Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
    with r["Body"] as body:
        data = body.read()
    modified = r.get("LastModified")
    return WholeObject(data, str(r["ETag"]).strip('"'), dict(r.get("Metadata", {})),
                       modified.timestamp() if modified is not None else 0.0)


def get_range(client: Any, bucket: str, key: str, start: int, length: int, etag: str,
              version_id: str = "") -> Iterator[bytes]:
    """The bytes [start, start+length) in pieces of at most CHUNK_BYTES; IfMatch keeps every range on one version
    (or VersionId names that version: an older one, read by restore --as-of; a version never changes)."""
    pin = {"VersionId": version_id} if version_id else {"IfMatch": etag}
    r = _get(client, Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **pin)
    with r["Body"] as body:
        while True:
            piece = body.read(CHUNK_BYTES)
            if not piece:
                return
            yield piece


class RangeStream:
    """An open ranged GET through the client (its retries, its hooks): the body read in pieces as the caller asks,
    never held whole. `etag` names the object's version (later ranges of the same object pass it as IfMatch)."""

    def __init__(self, key: str, response: dict[str, Any]):
        self.key = key
        self.etag = str(response.get("ETag", "")).strip('"')
        self.length = int(response.get("ContentLength", -1))
        self._body = response["Body"]

    def read(self, size: int) -> bytes:
        return self._body.read(size)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> "RangeStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_range(client: Any, bucket: str, key: str, start: int, end: int, etag: str | None = None) -> RangeStream:
    """GET the bytes [start, end) of `key` as a stream (one request); with `etag`, only from that version (412
    otherwise). NotRestored for an archived object without a restored copy, ObjectMissing when it is gone."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
    if etag:
        kwargs["IfMatch"] = etag
    return RangeStream(key, _get(client, **kwargs))


def open_object(client: Any, bucket: str, key: str) -> RangeStream:
    """GET a whole object as a stream (one request): an index object, read line by line by its parser."""
    return RangeStream(key, _get(client, Bucket=bucket, Key=key))


_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_RETRY_STATUS = (500, 502, 503, 504)
PRESIGN_EXPIRY_S = 900


class DirectGetter:
    """GETs without botocore's per-request pipeline: a presigned URL (made by the client, so endpoint, addressing
    style, region and credentials are the client's) sent on the client's own HTTP session (its TLS settings, proxies
    and connection pool).

    botocore spends ~2.5 ms of CPU on each small GET building, signing and parsing (header dicts, case-insensitive
    lookups, timestamp parsing); presigning costs ~0.1 ms and the raw GET ~0.7 ms, so a restore of small files goes
    ~2.5x faster. Retries follow the client's attempt budget: connection errors and 5xx, with jittered backoff, before
    any byte of the body is consumed. URLs carry a signature valid for PRESIGN_EXPIRY_S and are never logged by us.
    With `lean` (`uploader.engine: auto`), whole-object GETs are signed in their headers by transfer/lean.py instead
    (the same events, ~0.3 ms less than presigning) and, on plain http, sent on its per-thread keep-alive connection.
    """

    def __init__(self, client: Any, max_attempts: int, *, lean: bool = True):
        self.client = client
        self.max_attempts = max(1, max_attempts)
        endpoint = getattr(client, "_endpoint", None)
        self.session = getattr(endpoint, "http_session", None)
        # Whole-object GETs signed in their headers by the lean engine (transfer/lean.py) instead of presigned.
        self.lean = lean_client(client) if lean else None

    @property
    def available(self) -> bool:
        return self.session is not None and hasattr(self.session, "send")

    def _send(self, bucket: str, key: str, headers: dict[str, str], stream: bool = False) -> Any:
        signed = self.lean.signed_get(bucket, key, headers) if self.lean is not None and not stream else None
        url = None if signed is not None else self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_EXPIRY_S)
        for attempt in range(1, self.max_attempts + 1):
            try:
                if signed is not None:
                    response = signed.send()
                else:
                    request = AWSRequest(method="GET", url=url, headers=headers, stream_output=stream)
                    response = self.session.send(request.prepare())
            except botocore.exceptions.HTTPClientError:
                if attempt == self.max_attempts:
                    raise
            else:
                if response.status_code < 300:
                    return response
                body = response.content
                match = _ERROR_CODE.search(body)
                code = match.group(1).decode("ascii", "replace") if match else str(response.status_code)
                if response.status_code not in _RETRY_STATUS or attempt == self.max_attempts:
                    if code == "InvalidObjectState":
                        raise NotRestored(f"{key} is archived and not restored (yet)")
                    if code in ("NoSuchKey", "404") or response.status_code == 404:
                        raise ObjectMissing(f"{key} is not in the bucket")
                    raise DownloadError(f"GET {key}: HTTP {response.status_code} {code}")
            time.sleep(min(20.0, 0.1 * 2 ** attempt) * random.random())
        raise AssertionError("unreachable")

    def get_whole(self, bucket: str, key: str) -> WholeObject:
        response = self._send(bucket, key, {})
        data = response.content
        headers = response.headers
        length = headers.get("Content-Length")
        if length is not None and int(length) != len(data):
            raise DownloadError(f"GET {key}: {len(data)} bytes received, {length} announced")
        metadata = {name[11:].lower(): value for name, value in headers.items()
                    if name.lower().startswith("x-amz-meta-")}
        modified = headers.get("Last-Modified")
        return WholeObject(data, str(headers.get("ETag", "")).strip('"'), metadata,
                           parsedate_to_datetime(modified).timestamp() if modified else 0.0)

    def get_range_into(self, bucket: str, key: str, start: int, length: int, etag: str,
                       buffer: bytearray) -> Iterator[memoryview]:
        """The bytes [start, start+length) (IfMatch `etag`) read into `buffer`, yielded as views of it: each full
        (len(buffer) bytes) but the last, and valid only until the next one is asked for. No bytes object per piece:
        the socket is read straight into the caller's buffer (http.client's readinto under urllib3), where the
        plain read made and copied two fresh objects per MiB (for 1 GiB, 2 GiB of page faults and copies)."""
        response = self._send(bucket, key, {"Range": f"bytes={start}-{start + length - 1}", "If-Match": f'"{etag}"'},
                              stream=True)
        raw = response.raw
        readinto = _direct_readinto(raw)
        view = memoryview(buffer)
        complete = False
        try:
            while True:
                fill = 0
                while fill < len(view):
                    n = readinto(view[fill:])
                    if not n:
                        break
                    fill += n
                if fill:
                    yield view[:fill]
                if fill < len(view):
                    complete = True
                    return
        finally:
            if not complete:  # left mid-body (a failed write, a stop): the connection cannot serve another request
                raw.close()
            raw.release_conn()


def _direct_readinto(raw: Any) -> Callable[[memoryview], int]:
    """The fastest way to read a streamed urllib3 response into a buffer: the http.client response underneath it
    when urllib3 holds nothing of the body itself (it never decodes ours: botocore asks for the raw bytes), else
    urllib3's own readinto (one copy)."""
    inner = getattr(raw, "_fp", None)
    if inner is not None and hasattr(inner, "readinto") and not len(getattr(raw, "_decoded_buffer", b"")):
        return inner.readinto
    return raw.readinto


class DownloadError(Exception):
    pass
