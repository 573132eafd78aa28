"""The S3 client setup against the real loopback endpoints (moto server and SeaweedFS)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fs3g_hpc import __version__
from fs3g_hpc.config import RetryMode, load_policy
from fs3g_hpc.errors import UsageError
from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

METADATA = {"mtime": "1700000000.123456789", "mode": "100644", "owneruid": "1000", "ownername": "alice",
            "sha256hashtree": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}


def lab_policy(tmp_path: Path, bucket: str, endpoint: str | None):
    endpoint_line = f"  endpoint_url: {endpoint}\n" if endpoint else ""
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(f"""\
        lab: {{name: clienttest}}
        roots: [/data]
        run_root: /runs
        s3:
          bucket: {bucket}
        """) + endpoint_line + "uploader:\n  max_attempts: 4\n  retry_mode: adaptive\n")
    return load_policy(path, environ={})


def test_policy_endpoint_put_get_with_metadata(bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    policy = lab_policy(tmp_path, bucket.name, bucket.endpoint_url)
    client = make_s3_client(ClientSettings.from_policy(policy))
    assert client.meta.endpoint_url == bucket.endpoint_url
    client.put_object(Bucket=bucket.name, Key="smallfile/data/a.txt", Body=b"hello", Metadata=METADATA)
    got = client.get_object(Bucket=bucket.name, Key="smallfile/data/a.txt")
    assert got["Body"].read() == b"hello"
    assert got["Metadata"] == METADATA
    head = client.head_object(Bucket=bucket.name, Key="smallfile/data/a.txt")
    assert head["ContentLength"] == 5 and head["Metadata"] == METADATA


def test_aws_endpoint_url_is_honoured(bucket, tmp_path, monkeypatch):
    """No endpoint in the policy: the standard AWS_ENDPOINT_URL variable decides."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.endpoint_url)
    policy = lab_policy(tmp_path, bucket.name, None)
    client = make_s3_client(ClientSettings.from_policy(policy))
    assert client.meta.endpoint_url == bucket.endpoint_url
    client.put_object(Bucket=bucket.name, Key="k", Body=b"via env", Metadata={"creator": "fs3g"})
    got = client.get_object(Bucket=bucket.name, Key="k")
    assert (got["Body"].read(), got["Metadata"]) == (b"via env", {"creator": "fs3g"})


def test_policy_endpoint_wins_over_environment(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    policy = lab_policy(tmp_path, bucket.name, bucket.endpoint_url)
    client = make_s3_client(ClientSettings.from_policy(policy))
    client.put_object(Bucket=bucket.name, Key="k2", Body=b"x")
    assert client.head_object(Bucket=bucket.name, Key="k2")["ContentLength"] == 1


def test_retry_settings_reach_botocore(tmp_path):
    policy = lab_policy(tmp_path, "fs3g-any-bucket", "http://127.0.0.1:9")
    settings = ClientSettings.from_policy(policy)
    assert settings.retry_mode is RetryMode.ADAPTIVE
    client = make_s3_client(settings)
    assert client.meta.config.retries == {"total_max_attempts": 4, "mode": "adaptive"}
    # Each worker thread gets its own connection.
    assert client.meta.config.max_pool_connections >= policy.uploader.small_workers


def test_unknown_profile_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(UsageError, match="s3.profile: AWS profile 'nope' not found"):
        make_s3_client(ClientSettings(profile="nope"))


def test_endpoint_resolved_once_per_bucket_and_fixed_user_agent(bucket, monkeypatch):
    """Many keys, one ruleset evaluation per (operation, bucket); requests still reach the right bucket."""
    client = make_s3_client(ClientSettings(endpoint_url=bucket.endpoint_url, max_attempts=2))
    import botocore.endpoint_provider as provider

    calls = []
    real = provider.EndpointProvider.resolve_endpoint

    def counting(self, **params):
        calls.append(params.get("Key"))
        return real(self, **params)

    monkeypatch.setattr(provider.EndpointProvider, "resolve_endpoint", counting)
    agents = []
    client.meta.events.register("before-send.s3", lambda request, **_: agents.append(request.headers["User-Agent"]))
    for i in range(20):
        client.put_object(Bucket=bucket.name, Key=f"k/{i}", Body=b"x")
    assert len(calls) <= 1
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket.name, Prefix="k/")["Contents"]]
    assert sorted(keys) == sorted(f"k/{i}" for i in range(20))
    assert len(set(agents)) == 1 and agents[0].decode().startswith(f"fs3g-hpc/{__version__}")


def test_shared_clients_per_settings_and_environment_and_never_across_a_fork(bucket, monkeypatch):
    """A command's phases share one client per settings; another environment (AWS_*, the site hook) or other
    settings get another; a forked child makes its own (never the parent's kept-alive connections), which works."""
    from fs3g_hpc.transfer.client import shared_s3_client

    settings = ClientSettings(endpoint_url=bucket.endpoint_url)
    first = shared_s3_client(settings)
    assert shared_s3_client(settings) is first
    assert shared_s3_client(ClientSettings(endpoint_url=bucket.endpoint_url, max_attempts=3)) is not first
    first.put_object(Bucket=bucket.name, Key="shared/parent", Body=b"p")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    assert shared_s3_client(settings) is not first
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    assert shared_s3_client(settings) is first
    # The fork in a fresh process of one thread (a fork from pytest's, with its threads, could inherit held locks).
    script = textwrap.dedent(f"""\
        import os, sys
        from fs3g_hpc.transfer.client import ClientSettings, shared_s3_client
        settings = ClientSettings(endpoint_url={bucket.endpoint_url!r})
        parent = shared_s3_client(settings)
        pid = os.fork()
        if pid == 0:
            child = shared_s3_client(settings)
            body = child.get_object(Bucket={bucket.name!r}, Key="shared/parent")["Body"].read()
            os._exit(0 if child is not parent and body == b"p" else 3)
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_timestamps_parsed_as_botocore_would(bucket, tmp_path, monkeypatch):
    """The client's own timestamp parser (the standard library's, for S3's ISO 8601) gives the instants botocore's
    dateutil parser gives, for listings (ISO 8601) and headers (RFC 822) alike, and for forms it leaves to botocore."""
    import botocore.utils

    from fs3g_hpc.transfer.client import parse_timestamp

    for value in ("2026-12-01T17:57:50.123Z", "2026-12-01T17:57:50Z", "2026-12-01T17:57:50.123456Z",
                  "2026-12-01T17:57:50.1234567Z", "Tue, 01 Dec 2026 17:57:50 GMT", "2026-12-01T17:57:50+01:00",
                  1700000000, "1700000000.5"):
        ours, theirs = parse_timestamp(value), botocore.utils.parse_timestamp(value)
        assert ours == theirs and ours.utcoffset() == theirs.utcoffset(), value
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = make_s3_client(ClientSettings.from_policy(lab_policy(tmp_path, bucket.name, bucket.endpoint_url)))
    client.put_object(Bucket=bucket.name, Key="smallfile/t/a", Body=b"x")
    listed = client.list_objects_v2(Bucket=bucket.name, Prefix="smallfile/t/")["Contents"][0]["LastModified"]
    head = client.head_object(Bucket=bucket.name, Key="smallfile/t/a")["LastModified"]
    assert listed.utcoffset().total_seconds() == 0
    assert abs(listed.timestamp() - head.timestamp()) < 1.0  # the listing has milliseconds, the header seconds
