"""S3 client setup from a policy, under the standard AWS configuration.

Endpoint precedence: the policy's `s3.endpoint_url` when set (explicit, like `--endpoint-url`), else botocore's own
resolution (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`), else AWS. Credentials come only
from botocore's chain (environment, profile, instance role); nothing here reads or stores a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers

from ..config import AddressingStyle, Policy, RetryMode
from ..errors import UsageError


@dataclass(frozen=True)
class ClientSettings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: AddressingStyle = AddressingStyle.AUTO
    max_attempts: int = 10
    retry_mode: RetryMode = RetryMode.STANDARD
    # One connection per worker thread, so threads never wait on the pool.
    max_pool_connections: int = 32
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0

    @classmethod
    def from_policy(cls, policy: Policy, *, max_pool_connections: int | None = None) -> "ClientSettings":
        up = policy.uploader
        workers = up.small_workers + up.large_workers * max(up.large_buffers, up.readers_per_file)
        return cls(
            endpoint_url=policy.s3.endpoint_url,
            region=policy.s3.region,
            profile=policy.s3.profile,
            addressing_style=policy.s3.addressing_style,
            max_attempts=up.max_attempts,
            retry_mode=up.retry_mode,
            max_pool_connections=max_pool_connections or max(10, workers),
        )


def make_s3_client(settings: ClientSettings) -> Any:
    """A botocore S3 client; boto3 sessions are not thread-safe, clients are."""
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as e:
        raise UsageError(f"AWS profile {settings.profile!r} not found", key="s3.profile",
                         hint="define it in ~/.aws/config or unset s3.profile") from e
    config = botocore.config.Config(
        retries={"total_max_attempts": settings.max_attempts, "mode": settings.retry_mode.value},
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        s3={"addressing_style": settings.addressing_style.value},
    )
    try:
        client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
    except ValueError as e:  # botocore rejects a malformed endpoint URL this way
        raise UsageError(f"cannot use endpoint {settings.endpoint_url!r}: {e}", key="s3.endpoint_url") from e
    # botocore adds `Expect: 100-continue` to every S3 PUT with a body. SeaweedFS 4.48 answers an empty one with an
    # interim response that stays in the kept-alive connection: the next request on it reads a stale answer, loses its
    # headers (no ETag) and waits for the read timeout. Our bodies are in memory and cheap to send again, so the round
    # trip the header would save on a refused request is not worth it (s5cmd does not send it either).
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    return client
