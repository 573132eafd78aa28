"""S3 client setup from a policy, under the standard AWS configuration.

Endpoint precedence: the policy's `s3.endpoint_url` when set (explicit, like `--endpoint-url`), else botocore's own
resolution (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`), else AWS. Credentials come only
from botocore's chain (environment, profile, instance role); nothing here reads or stores a secret.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.handlers
import botocore.session
import botocore.utils

from .. import __version__
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


# botocore's data loader (the S3 service model, endpoints, partitions: JSON files parsed on first use, ~0.1 s of CPU
# each time), shared by every session of this process. A command makes several clients (preflight, plan baseline,
# lock, merge, snapshot), each from a new session, so credentials and profiles are resolved as before, per client;
# only the parsed, read-only model files are shared. Made and handed out under the lock.
_loader: Any = None
_loader_lock = threading.Lock()


def _share_loader(session: Any) -> None:
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)


def make_s3_client(settings: ClientSettings) -> Any:
    """A botocore S3 client; sessions are not thread-safe, clients are.

    Made from a botocore session, as boto3's `Session.client` does, without importing boto3 itself: `import boto3`
    also imports s3transfer and boto3's resource machinery (~50 ms of CPU per process), none of which is used here.
    """
    session = botocore.session.Session(profile=settings.profile)
    if settings.region:
        session.set_config_variable("region", settings.region)
    _share_loader(session)
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    config = botocore.config.Config(
        retries={"total_max_attempts": settings.max_attempts, "mode": settings.retry_mode.value},
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        s3={"addressing_style": settings.addressing_style.value},
        # botocore presigns with SigV2 in some regions (us-east-1, us-west-2 ...) unless told otherwise, and S3 refuses
        # SigV2 for buckets made since 2020; restores GET through presigned URLs.
        signature_version="s3v4",
        # A fixed user agent: botocore otherwise rebuilds and sanitises its own on every request (~0.5 ms of CPU,
        # a sixth of a small PUT), and the S3 access logs then name the tool.
        user_agent=f"fs3g-hpc/{__version__}",
        # Our requests are built by this package, not by users: botocore's per-request parameter walk is pure cost.
        parameter_validation=False,
    )
    try:
        client = session.create_client("s3", region_name=settings.region, endpoint_url=settings.endpoint_url,
                                       config=config)
    except botocore.exceptions.ProfileNotFound as e:
        raise UsageError(f"AWS profile {settings.profile!r} not found", key="s3.profile",
                         hint="define it in ~/.aws/config or unset s3.profile") from e
    except ValueError as e:  # botocore rejects a malformed endpoint URL this way
        raise UsageError(f"cannot use endpoint {settings.endpoint_url!r}: {e}", key="s3.endpoint_url") from e
    # botocore adds `Expect: 100-continue` to every S3 PUT with a body. SeaweedFS 4.48 answers an empty one with an
    # interim response that stays in the kept-alive connection: the next request on it reads a stale answer, loses its
    # headers (no ETag) and waits for the read timeout. Our bodies are in memory and cheap to send again, so the round
    # trip the header would save on a refused request is not worth it (s5cmd does not send it either).
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    _cache_endpoints(client)
    _site_hook(client)
    return client


def parse_timestamp(value: Any) -> datetime:
    """The timestamps of S3's answers (a listing's LastModified: ISO 8601 in UTC, `2026-12-01T17:57:50.123Z`) parsed
    by the standard library, anything else by botocore's own parser (dateutil). botocore's default costs ~0.2 ms per
    timestamp in dateutil: verifying 5,000 objects by listing spent more CPU parsing their dates than on anything
    else. Same instant, same awareness (UTC) either way."""
    if isinstance(value, str) and len(value) >= 20 and value[10] == "T" and value[-1] == "Z":
        try:
            return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass  # fractions of another length on Python 3.10, and the like
    return botocore.utils.parse_timestamp(value)


HOOK_ENV = "FS3G_BOTOCORE_HOOK"


# One client per settings for a command's successive phases in one process (the plan's baseline, the preflight and
# lock, the merge, the snapshot): a botocore client is thread-safe, and each new one costs 20-60 ms of CPU (session,
# credential chain, endpoint resolver, the client class), and the calling process of a packed backup made five (a
# sixth of its CPU for 5,000 files). Keyed also by the environment that shapes a client (AWS_*, the site hook), so a changed
# environment gets a new one. A forked child starts with none: it never shares the parent's kept-alive connections.
SHARED_CLIENTS_MAX = 8
_shared: dict[tuple[Any, ...], Any] = {}
_shared_lock = threading.Lock()


def shared_s3_client(settings: ClientSettings) -> Any:
    """`make_s3_client(settings)`, made once per process (see above)."""
    key = (settings, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_") or k == HOOK_ENV)))
    with _shared_lock:
        client = _shared.get(key)
    if client is not None:
        return client
    client = make_s3_client(settings)
    with _shared_lock:
        while len(_shared) >= SHARED_CLIENTS_MAX:
            del _shared[next(iter(_shared))]  # the oldest
        return _shared.setdefault(key, client)


def _forget_shared_clients() -> None:
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_clients)


def _site_hook(client: Any) -> None:
    """`$FS3G_BOTOCORE_HOOK=module:function` is called with every client made: a site's way to register botocore
    event handlers (extra headers, auditing) in every job, and the tests' way to inject faults into jobs they do not
    run themselves. Like PYTHONPATH, it runs code chosen by whoever sets the environment, nothing more."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    module_name, _, function_name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), function_name or "install")
    except (ImportError, AttributeError) as e:
        raise UsageError(f"{HOOK_ENV}={spec!r}: cannot load it: {e}", hint=f"unset {HOOK_ENV} or fix its module path"
                         ) from e
    hook(client)


def _cache_endpoints(client: Any) -> None:
    """Resolve each (operation, bucket) endpoint once instead of once per request.

    S3's endpoint ruleset takes the object key as a parameter, so botocore's own cache misses on every new key and
    evaluates the whole ruleset again (about 1 ms of CPU per request, a third of a small PUT). The endpoint of our
    requests depends on the bucket and the client's settings, never on the key: our keys are not ARNs. A bucket in
    another region than `s3.region` then fails with S3's redirect error instead of being followed.
    """
    resolver = getattr(client, "_ruleset_resolver", None)
    if resolver is None or not hasattr(resolver, "construct_endpoint"):
        return  # another botocore: keep its behaviour
    resolve = resolver.construct_endpoint
    cache: dict[tuple[str, str | None], Any] = {}
    lock = threading.Lock()

    def construct_endpoint(operation_model: Any, call_args: Any, request_context: Any) -> Any:
        bucket = (call_args or {}).get("Bucket")
        cache_key = (operation_model.name, bucket if isinstance(bucket, str) else None)
        with lock:
            hit = cache.get(cache_key)
        if hit is not None:
            return hit
        endpoint = resolve(operation_model, call_args, request_context)
        with lock:
            cache[cache_key] = endpoint
        return endpoint

    resolver.construct_endpoint = construct_endpoint


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create `bucket` unless it exists (used by the demo and tests, never by backups: a lab's bucket is made by its
    site, with its own policies)."""
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)
