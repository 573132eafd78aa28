"""Is the bucket usable? The one place that reads botocore's exceptions to say what kind of failure one is.

`classify(e)` names the kind of any S3 failure (no credentials, credentials refused, access denied, no such bucket,
endpoint unreachable, throttled, server error, timeout ...) and whether trying the same request again later can mend
it: the uploader records that beside each failed file, and the merge starts an automatic retry round only when some
failure is of a kind a retry can mend.

`target_error(e, ...)` turns the kinds the user must fix (credentials, access, bucket, endpoint) into a one-line
`TargetError` (exit 2) naming the bucket and endpoint and saying what to do; other failures give None.

`check_target(policy, write=...)` is the preflight every command that talks to the bucket runs before it starts work:
one `ListObjectsV2` of `PREFIX/.fs3g-probe/` (bucket exists, credentials valid, listing under the lab's prefix
allowed; it holds nothing, so no object of the lab's is read), and
for a backup a write probe. The probe creates a multipart upload at `PREFIX/.fs3g-probe/<host>-<pid>-<random>` and
aborts it at once: S3 authorises CreateMultipartUpload as s3:PutObject, so it proves the same permission a PUT would,
and an aborted upload leaves no object, no version and no delete marker behind (a PUT and DELETE of a probe object
would leave both on a versioned bucket, and "nothing is ever deleted from a bucket except by an explicit command").
Should the abort itself fail, the lab's lifecycle rule aborts incomplete uploads after 7 days. The preflight client
tries each request at most `PREFLIGHT_MAX_ATTEMPTS` times with a short connect timeout, so a dead endpoint is
reported in seconds instead of after the uploader's full retry budget.

Nothing here reads or prints a secret: messages carry S3's error code and message, the bucket and the endpoint URL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
from enum import Enum
from typing import Any

import botocore.exceptions

from ..config import Policy
from ..errors import TargetError

log = logging.getLogger(__name__)

PROBE_DIR = ".fs3g-probe"
PREFLIGHT_MAX_ATTEMPTS = 3
PREFLIGHT_CONNECT_TIMEOUT_S = 5.0


class FailureKind(Enum):
    NO_CREDENTIALS = "no credentials"
    BAD_CREDENTIALS = "credentials refused"
    ACCESS_DENIED = "access denied"
    NO_SUCH_BUCKET = "no such bucket"
    UNREACHABLE = "endpoint unreachable"
    TLS = "TLS failure"
    THROTTLED = "throttled"
    SERVER_ERROR = "server error"
    TIMEOUT = "timeout"
    CONNECTION = "connection lost"
    DAMAGED = "damaged in flight"
    REFUSED = "request refused"  # any other 4xx: the same request gets the same answer
    OTHER = "other"

    @property
    def retryable(self) -> bool:
        """Whether the same request later may succeed. An unreachable endpoint counts as transient here (a run that
        passed the preflight lost the network for a while); the preflight reports it as the user's to fix."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({FailureKind.UNREACHABLE, FailureKind.THROTTLED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT,
                        FailureKind.CONNECTION, FailureKind.DAMAGED, FailureKind.OTHER})
# The kinds the user must fix before anything can work: a TargetError (exit 2), never "internal error".
_TARGET_KINDS = frozenset({FailureKind.NO_CREDENTIALS, FailureKind.BAD_CREDENTIALS, FailureKind.ACCESS_DENIED,
                           FailureKind.NO_SUCH_BUCKET, FailureKind.UNREACHABLE, FailureKind.TLS})

_CODES = {
    FailureKind.NO_SUCH_BUCKET: {"NoSuchBucket"},
    FailureKind.BAD_CREDENTIALS: {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                                  "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed",
                                  "InvalidSecurity"},
    FailureKind.ACCESS_DENIED: {"AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden", "403"},
    FailureKind.THROTTLED: {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                            "TooManyRequests", "TooManyRequestsException", "RequestThrottled", "503"},
    FailureKind.TIMEOUT: {"RequestTimeout", "RequestTimeoutException"},
    FailureKind.SERVER_ERROR: {"InternalError", "ServiceUnavailable", "500", "502", "504"},
    FailureKind.DAMAGED: {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch",
                          "InvalidChecksum", "IncompleteBody"},
}


def error_code(e: BaseException) -> str:
    """S3's error code of a ClientError ("" for anything else)."""
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def classify(e: BaseException) -> FailureKind:
    """The kind of one failed S3 request (botocore exception); OTHER for anything it does not recognise."""
    if isinstance(e, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
                      botocore.exceptions.CredentialRetrievalError)):
        return FailureKind.NO_CREDENTIALS
    if isinstance(e, botocore.exceptions.SSLError):
        return FailureKind.TLS
    if isinstance(e, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                      botocore.exceptions.ProxyConnectionError)):
        return FailureKind.UNREACHABLE
    if isinstance(e, botocore.exceptions.ReadTimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(e, botocore.exceptions.HTTPClientError):  # connection closed or reset mid-request
        return FailureKind.CONNECTION
    if isinstance(e, botocore.exceptions.ClientError):
        code = error_code(e)
        if code in ("404", "NotFound") and getattr(e, "operation_name", "") == "HeadBucket":
            return FailureKind.NO_SUCH_BUCKET
        for kind, codes in _CODES.items():
            if code in codes:
                return kind
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status == 403:
            return FailureKind.ACCESS_DENIED
        if status == 429:
            return FailureKind.THROTTLED
        if status >= 500:
            return FailureKind.SERVER_ERROR
        if 400 <= status < 500:
            return FailureKind.REFUSED
    return FailureKind.OTHER


def _detail(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        code = error.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        operation = getattr(e, "operation_name", "")
        return f"{code}{' on ' + operation if operation else ''}: {error.get('Message') or 'no message'}"
    return f"{type(e).__name__}: {e}"


def target_error(e: BaseException, *, bucket: str | None = None, prefix: str = "",
                 endpoint: str | None = None) -> TargetError | None:
    """A one-line TargetError when `e` (or the botocore exception it was raised from) is a failure the user must fix
    (credentials, access, bucket, endpoint); None otherwise."""
    for candidate in (e, e.__cause__):
        if isinstance(candidate, (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)):
            e = candidate
            break
    else:
        return None
    kind = classify(e)
    if kind not in _TARGET_KINDS:
        return None
    if isinstance(e, botocore.exceptions.ClientError):
        bucket = bucket or e.response.get("Error", {}).get("BucketName")
    endpoint = endpoint or getattr(e, "kwargs", {}).get("endpoint_url") or "the S3 endpoint"
    where = f"s3://{bucket}/{prefix + '/' if prefix else ''}" if bucket else "the bucket"
    detail = _detail(e)
    if kind is FailureKind.NO_CREDENTIALS:
        return TargetError(f"no AWS credentials found to reach {where} at {endpoint} ({detail})",
                           hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE or the policy's "
                                "s3.profile (with credentials in ~/.aws/credentials); jobs inherit this environment")
    if kind is FailureKind.BAD_CREDENTIALS:
        return TargetError(f"{endpoint} refused the credentials for {where} ({detail})",
                           hint="check the access key and secret in use (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                                "the profile) and that they belong to this endpoint; renew an expired session token")
    if kind is FailureKind.ACCESS_DENIED:
        return TargetError(f"access denied to {where} at {endpoint} ({detail})",
                           hint="the credentials in use need s3:ListBucket, s3:GetObject, s3:PutObject and "
                                "s3:AbortMultipartUpload under the lab's prefix; ask whoever manages the bucket, or "
                                "use another s3.profile")
    if kind is FailureKind.NO_SUCH_BUCKET:
        return TargetError(f"bucket {bucket!r} does not exist at {endpoint} ({detail})", key="s3.bucket",
                           hint="check s3.bucket and s3.endpoint_url (or AWS_ENDPOINT_URL) in the policy; fs3g "
                                "never creates a lab's bucket: ask whoever manages the store")
    if kind is FailureKind.TLS:
        return TargetError(f"TLS connection to {endpoint} failed ({detail})", key="s3.endpoint_url",
                           hint="check the endpoint's certificate and AWS_CA_BUNDLE")
    return TargetError(f"endpoint {endpoint} unreachable ({detail})", key="s3.endpoint_url",
                       hint="check s3.endpoint_url (or AWS_ENDPOINT_URL) and that this host can reach it "
                            "(firewall, proxy, the service running)")


def preflight_client(policy: Policy) -> Any:
    """The client of the checks before a run (the preflight, the plan's snapshot baseline, the locks): it gives up
    soon on a dead endpoint. One per process (transfer.client.shared_s3_client)."""
    from .client import ClientSettings, shared_s3_client

    settings = ClientSettings.from_policy(policy, max_pool_connections=4)
    return shared_s3_client(dataclasses.replace(settings, max_attempts=min(settings.max_attempts,
                                                                           PREFLIGHT_MAX_ATTEMPTS),
                                                connect_timeout_s=PREFLIGHT_CONNECT_TIMEOUT_S))


def check_target(policy: Policy, *, write: bool, client: Any = None) -> None:
    """The preflight: raise a TargetError when the bucket cannot be listed (or, with `write`, written) as the policy
    says. Costs one LIST (plus CreateMultipartUpload and AbortMultipartUpload with `write`)."""
    if client is None:
        client = preflight_client(policy)
    bucket, prefix = policy.s3.bucket, policy.s3.prefix.strip("/")
    endpoint = client.meta.endpoint_url
    probe_dir = "/".join(p for p in (prefix, PROBE_DIR) if p)
    try:
        # Listed under the probe directory (inside the lab's prefix, where the lab may list), which holds nothing:
        # the check reads no object of the lab's.
        client.list_objects_v2(Bucket=bucket, Prefix=f"{probe_dir}/", MaxKeys=1)
        if write:
            key = f"{probe_dir}/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
            upload = client.create_multipart_upload(Bucket=bucket, Key=key)
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                log.warning("could not abort the preflight's probe upload %s (%s); the lab's lifecycle rule aborts "
                            "it after 7 days", key, _detail(e))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        error = target_error(e, bucket=bucket, prefix=prefix, endpoint=endpoint)
        if error is None:  # throttled, a server error ...: not the user's to fix, and the run's retries may cope
            log.warning("preflight check of s3://%s at %s did not pass (%s); going on", bucket, endpoint, _detail(e))
            return
        raise error from e
