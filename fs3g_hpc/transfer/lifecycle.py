"""Reading and writing a bucket's lifecycle configuration (the only code making these S3 calls).

Every S3 failure becomes a one-line fs3g error that says what to do: a missing bucket is the policy's fault
(UsageError naming `s3.bucket`); refused access, missing credentials or an unreachable endpoint are TargetErrors (the
user's to fix, exit 2); a store that does not implement lifecycle rules is a ServiceError.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import botocore.exceptions

from ..config import Policy
from ..errors import ServiceError, TargetError, UsageError
from .target import target_error
from ..lifecycle import DEFAULT_TRANSITION_MINIMUM_SIZE, LifecycleState, format_diff, lifecycle_state

_NO_CONFIGURATION = ("NoSuchLifecycleConfiguration",)
_NOT_SUPPORTED = ("NotImplemented", "MethodNotAllowed", "UnsupportedOperation", "XNotImplemented")
_DENIED = ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken")


@dataclass(frozen=True)
class BucketLifecycle:
    rules: list[dict]
    # A bucket-wide setting returned beside the rules; written back so that `apply` does not reset it.
    transition_default_minimum_object_size: str | None = None


def _error(e: Exception, bucket: str, action: str) -> Exception:
    """The fs3g error for a failed lifecycle request on `bucket`; `action` is "read" or "write"."""
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code or status}: {err.get('Message') or 'no message'}"
        # A lifecycle configuration is replaced whole or not at all.
        unchanged = "; nothing was changed" if action == "write" else ""
        if code == "NoSuchBucket":
            return UsageError(f"bucket {bucket!r} does not exist ({detail})", key="s3.bucket",
                              hint="check s3.bucket and s3.endpoint_url in the policy; fs3g never creates a lab's "
                                   "bucket")
        if code in _DENIED or status == 403:  # the user's (or the bucket manager's) to fix: exit 2
            permission = "s3:GetLifecycleConfiguration" if action == "read" else "s3:PutLifecycleConfiguration"
            return TargetError(f"cannot {action} the lifecycle configuration of bucket {bucket!r}: "
                                f"{detail}{unchanged}",
                                hint=f"the credentials in use need {permission} on it; ask whoever manages the "
                                     "bucket, or use another s3.profile")
        if code in _NOT_SUPPORTED or status in (405, 501):
            what = "these lifecycle rules" if action == "write" else "lifecycle configurations"
            return ServiceError(f"the endpoint does not implement {what} on bucket {bucket!r} "
                                f"({detail}){unchanged}",
                                hint="this S3-compatible store cannot move largefile/ to an archive class by "
                                     "lifecycle rules; configure tiering on the store itself, or use AWS S3")
        return ServiceError(f"cannot {action} the lifecycle configuration of bucket {bucket!r}: {detail}{unchanged}",
                            hint="rerun with -vvv to see the requests")
    target = target_error(e, bucket=bucket)  # no credentials, an unreachable endpoint: exit 2 with what to do
    if target is not None:
        return target
    return ServiceError(f"cannot {action} the lifecycle configuration of bucket {bucket!r}: {e}",
                        hint="check s3.endpoint_url (or AWS_ENDPOINT_URL) and the network")


def get_configuration(client: Any, bucket: str) -> BucketLifecycle:
    try:
        response = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in _NO_CONFIGURATION:
            return BucketLifecycle([])
        raise _error(e, bucket, "read") from e
    except botocore.exceptions.BotoCoreError as e:
        raise _error(e, bucket, "read") from e
    return BucketLifecycle(list(response.get("Rules", [])), response.get("TransitionDefaultMinimumObjectSize"))


def get_rules(client: Any, bucket: str) -> list[dict]:
    """The bucket's lifecycle rules; [] when it has none."""
    return get_configuration(client, bucket).rules


def put_rules(client: Any, bucket: str, rules: Sequence[dict], *,
              transition_default_minimum_object_size: str | None = None) -> None:
    """Replace the bucket's lifecycle configuration with `rules` (S3 has no per-rule update); none deletes it."""
    try:
        if not rules:
            client.delete_bucket_lifecycle(Bucket=bucket)
            return
        kwargs: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": list(rules)}}
        # Sent only when the bucket had another value: the header is new and some stores refuse what they don't know.
        size = transition_default_minimum_object_size
        if size and size != DEFAULT_TRANSITION_MINIMUM_SIZE:
            kwargs["TransitionDefaultMinimumObjectSize"] = size
        client.put_bucket_lifecycle_configuration(**kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _error(e, bucket, "write") from e


def _client_for(policy: Policy) -> Any:
    from .client import ClientSettings, make_s3_client

    return make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=2))


@contextmanager
def _naming_policy_file(policy: Policy) -> Iterator[None]:
    """A UsageError about `s3.bucket` names the policy file that set it."""
    try:
        yield
    except UsageError as e:
        if e.path is None and policy.source_files:
            e.path = policy.source_files[0]
        raise


def read_state(policy: Policy, client: Any | None = None) -> LifecycleState:
    client = client or _client_for(policy)
    with _naming_policy_file(policy):
        return lifecycle_state(policy, get_rules(client, policy.s3.bucket))


def show_bucket_policy(policy: Policy, client: Any | None = None) -> tuple[str, bool]:
    """The lab's desired rules beside the bucket's, and whether they differ (what `fs3g policy show` prints)."""
    state = read_state(policy, client)
    return state.text(), state.differs


@dataclass(frozen=True)
class ApplyResult:
    text: str
    changed: bool  # the bucket's configuration was (or, with dry_run, would be) rewritten


def apply_bucket_policy(policy: Policy, *, dry_run: bool = False, client: Any | None = None) -> ApplyResult:
    """Write the lab's rules beside every rule that is not the lab's, then read them back to check the store kept
    them (some stores accept rules and silently drop parts of them)."""
    client = client or _client_for(policy)
    bucket = policy.s3.bucket
    with _naming_policy_file(policy):
        config = get_configuration(client, bucket)
    state = lifecycle_state(policy, config.rules)
    diff = state.diff
    lines = [f"bucket s3://{bucket}, lab {policy.lab.name}:", format_diff(diff)]
    if not diff.differs:
        lines.append("the bucket already matches the policy: nothing written")
        return ApplyResult("\n".join(lines), changed=False)
    if diff.stale:
        lines.append(f"removing {len(diff.stale)} stale rule(s) of this lab that the policy no longer implies")
    merged = state.merged()
    if dry_run:
        lines.append(f"dry run: would write {len(merged)} rule(s) ({len(diff.foreign)} not ours, kept); nothing "
                     "written")
        return ApplyResult("\n".join(lines), changed=True)
    put_rules(client, bucket, merged,
              transition_default_minimum_object_size=config.transition_default_minimum_object_size)
    after = lifecycle_state(policy, get_rules(client, bucket)).diff
    wrong = [r["ID"] for r in after.to_add] + [u.desired["ID"] for u in after.to_update]
    if wrong:
        raise ServiceError(f"bucket {bucket!r} accepted the lifecycle rules but reads back {', '.join(wrong)} "
                           "missing or different",
                           hint="the store drops or rewrites parts of lifecycle rules; see `fs3g policy show`")
    kept = {r.get("ID") for r in after.foreign}
    lost = [r for r in diff.foreign if r.get("ID") and r["ID"] not in kept]
    if lost:
        raise ServiceError(f"bucket {bucket!r} lost rules that are not ours after the write: "
                           f"{', '.join(str(r['ID']) for r in lost)}",
                           hint=f"put them back; they were {json.dumps(lost, default=str)}")
    lines.append(f"written: {len(merged)} rule(s) ({len(diff.foreign)} not ours, kept), read back and checked")
    return ApplyResult("\n".join(lines), changed=True)
