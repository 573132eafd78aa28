"""The lean per-object engine (transfer/lean.py) against botocore's own pipeline: the same signature, the same request
on the wire, the same events, and on the real endpoints the same outcomes (bytes, resends, retries, refusals)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials

from fs3g_hpc.config import AddressingStyle, StorageClass
from fs3g_hpc.backup.task import run_shard
from fs3g_hpc.model.checksums import crc32_b64
from fs3g_hpc.model.keys import KeyClass, object_key
from fs3g_hpc.transfer.client import ClientSettings, make_s3_client
from fs3g_hpc.transfer.lean import SigningScope, SigV4Signer, lean_client
from fs3g_hpc.transfer.multipart import put_checked
from test_upload import PREFIX, get_bytes, plan, write_policy

TIMESTAMP = "20260102T030405Z"
HOSTILE_KEY = "labs/x/smallfile/a b/caf\u00e9?#%25~+=&;,'\"<>!*()[]@$\u4e2d\U0001f600/new%0Aline"
METADATA = {"mtime": "1700000000.123456789", "mode": "100644", "spaced": "  two   spaces  "}


def _botocore_signature(url: str, headers: dict[str, str], body: bytes, credentials: Credentials,
                        region: str) -> tuple[str, str]:
    """botocore's own S3 SigV4 of the same request at TIMESTAMP: (X-Amz-Content-SHA256, Authorization)."""
    request = AWSRequest(method="PUT", url=url, headers=dict(headers), data=body)
    request.context["timestamp"] = TIMESTAMP
    request.context["has_streaming_input"] = True
    auth = S3SigV4Auth(credentials, "s3", region)
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    auth._inject_signature_to_request(request, auth.signature(auth.string_to_sign(request, canonical), request))
    return request.headers["X-Amz-Content-SHA256"], request.headers["Authorization"]


@pytest.mark.parametrize("base,host,token", [
    ("http://127.0.0.1:8333/bucket", "127.0.0.1:8333", None),
    ("https://bucket.s3.eu-west-3.amazonaws.com", "bucket.s3.eu-west-3.amazonaws.com", "session/token+="),
    ("http://bucket.s3.local", "bucket.s3.local", None),
])
def test_signer_matches_botocore(base, host, token):
    """The same credentials, timestamp and request give botocore's signature byte for byte: hostile key, metadata
    with runs of spaces, a session token, http and https, path and virtual style."""
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = b"some bytes\n" * 300
    url = f"{base}/{quote(HOSTILE_KEY.encode(), safe='/~')}"
    headers = {f"x-amz-meta-{k}": v for k, v in METADATA.items()}
    headers.update({"x-amz-storage-class": "STANDARD", "x-amz-checksum-crc32": crc32_b64(body),
                    "User-Agent": "fs3g-hpc/test"})
    region = "eu-west-3"
    expected_hash, expected_auth = _botocore_signature(url, headers, body, credentials, region)
    payload = hashlib.sha256(body).hexdigest()
    assert payload == expected_hash
    ours = dict(headers)
    SigV4Signer().sign("PUT", host, urlsplit(url).path, "", ours, payload, credentials.get_frozen_credentials(),
                       SigningScope(region), TIMESTAMP)
    assert ours["Authorization"] == expected_auth
    assert ours["X-Amz-Date"] == TIMESTAMP and ours.get("X-Amz-Security-Token") == token


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def _answered_client(endpoint: str, style: AddressingStyle, seen: list, monkeypatch):
    """A client whose requests never leave the process: every PutObject is recorded and answered 200."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    client = make_s3_client(ClientSettings(endpoint_url=endpoint, region="eu-central-1", addressing_style=style))

    def answer(request, **_):
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        seen.append((request.method, request.url, {k: v.decode() if isinstance(v, bytes) else v
                                                   for k, v in request.headers.items()}, body))
        return AWSResponse(request.url, 200, {"ETag": '"abc"', "x-amz-checksum-crc32": crc32_b64(body)}, _Raw(b""))

    client.meta.events.register("before-send.s3.PutObject", answer)
    return client


@pytest.mark.parametrize("endpoint,style", [
    ("http://s3.test.invalid:9000", AddressingStyle.PATH),
    ("http://s3.test.invalid:9000", AddressingStyle.VIRTUAL),
    ("https://s3.test.invalid", AddressingStyle.AUTO),
])
def test_same_request_as_botocore(endpoint, style, monkeypatch):
    """For path, virtual and https addressing: the same URL, the same headers (but botocore's per-invocation ids),
    the same signed headers and credential scope, the same events; the answer read the same way."""
    seen: list = []
    client = _answered_client(endpoint, style, seen, monkeypatch)
    events: list = []
    for name in ("provide-client-params.s3", "before-parameter-build.s3", "after-call.s3.PutObject"):
        client.meta.events.register(name, lambda event_name, **_: events.append(event_name))
    putter = lean_client(client)
    assert putter is not None
    body = os.urandom(3000)
    results = [put_checked(client, "bucket", HOSTILE_KEY, body, METADATA, StorageClass.STANDARD, putter=p)
               for p in (None, putter)]
    assert results[0] == results[1] == ("abc", crc32_b64(body))
    (method_b, url_b, headers_b, body_b), (method_l, url_l, headers_l, body_l) = seen
    assert (method_l, url_l, body_l) == (method_b, url_b, body_b)
    if style is AddressingStyle.VIRTUAL:
        assert url_l.startswith("http://bucket.s3.test.invalid:9000/labs/")
    volatile = {"amz-sdk-invocation-id", "amz-sdk-request", "X-Amz-Date", "Authorization"}
    assert {k: v for k, v in headers_l.items() if k not in volatile} == \
        {k: v for k, v in headers_b.items() if k not in volatile}
    assert "amz-sdk-invocation-id" not in headers_l and "Expect" not in headers_l
    assert headers_l["Authorization"].rsplit("Signature=", 1)[0] == headers_b["Authorization"].rsplit("Signature=")[0]
    assert events[:3] == ["provide-client-params.s3.PutObject", "before-parameter-build.s3.PutObject",
                          "after-call.s3.PutObject"]
    assert events[3:] == events[:3]


def test_adaptive_retries_and_other_clients_fall_back(monkeypatch):
    """Where the lean engine could not behave as botocore does, there is none: the client's put_object is used."""
    from fs3g_hpc.config import RetryMode
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    client = make_s3_client(ClientSettings(endpoint_url="http://s3.test.invalid", retry_mode=RetryMode.ADAPTIVE))
    assert lean_client(client) is None
    assert lean_client(object()) is None


# -- against the real endpoints ---------------------------------------------------------------------------------------

class _Sends:
    """Every PutObject a shard's client sends: (url, sent by botocore's pipeline?); optional answers per URL."""

    def __init__(self, answer=None):
        self.sent: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self.answer = answer

    def factory(self, policy):
        client = make_s3_client(ClientSettings.from_policy(policy))
        client.meta.events.register("before-send.s3.PutObject", self._on_send)
        return client

    def _on_send(self, request, **_):
        with self.lock:
            self.sent.append((request.url, "amz-sdk-invocation-id" in request.headers))
        return self.answer(request) if self.answer else None

    @property
    def engines(self) -> set[str]:
        return {"botocore" if by_botocore else "lean" for _url, by_botocore in self.sent}


def _error(status: int, code: str, message: str) -> AWSResponse:
    return AWSResponse("", status, {"Content-Type": "application/xml"},
                       _Raw(f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()))


def _failures(run_dir: Path) -> dict[str, dict]:
    path = run_dir / "results" / "shard-000000.failures.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {os.path.basename(json.loads(line)["path"]): json.loads(line) for line in lines}


def test_hostile_names_round_trip_on_the_lean_engine(seaweed_bucket, tmp_path):
    """Per-object backup of hostile names on the strict endpoint goes through the lean engine, byte for byte."""
    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    broot = os.fsencode(str(root))
    names = [b"new\nline", b"bad-\xff\xfe-utf8", b"per%cent", b"back\\slash", b"tab\tspace ", b"caf\xc3\xa9",
             b"q?h#a&p+e=s;c,t'\"<>!*()[]@$", b"\xe4\xb8\xad\xf0\x9f\x98\x80", b"L" * 255, b"\xff" * 100, b"~tilde"]
    for name in names:
        with open(broot + b"/" + name, "wb") as f:
            f.write(name * 7)
    os.symlink(b"bad-\xff\xfe-utf8", broot + b"/link\xff")
    sends = _Sends()
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    outcome = run_shard(run_dir, 0, client_factory=sends.factory)
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("done", len(names) + 1, 0)
    assert sends.engines == {"lean"} and len(sends.sent) >= len(names) + 1
    for name in names:
        key = object_key(PREFIX, KeyClass.SMALL, broot + b"/" + name).key
        assert get_bytes(bucket, key) == name * 7, key
    assert get_bytes(bucket, object_key(PREFIX, KeyClass.SYMLINK, broot + b"/link\xff").key) == b"bad-\xff\xfe-utf8"


def test_body_damaged_in_flight_is_refused_and_sent_again(seaweed_bucket, tmp_path):
    """SeaweedFS checks the CRC32: a PUT body altered once after it was signed and checksummed is refused by the
    server, and the lean engine's caller sends it again; the object ends byte for byte."""
    bucket = seaweed_bucket
    root = tmp_path / "data"
    root.mkdir()
    data = os.urandom(50_000)
    (root / "victim").write_bytes(data)
    (root / "other").write_bytes(b"fine")
    damaged: list[str] = []

    def damage_once(request):
        if "victim" in request.url and not damaged:
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            request.body = bytes([body[0] ^ 0xFF]) + body[1:]
            damaged.append(request.url)
        return None

    sends = _Sends(damage_once)
    run_dir = plan(tmp_path, write_policy(tmp_path, root, bucket))
    outcome = run_shard(run_dir, 0, client_factory=sends.factory)
    assert (outcome.status, outcome.uploaded, outcome.failed) == ("done", 2, 0)
    assert len(damaged) == 1 and [u for u, _ in sends.sent].count(damaged[0]) == 2 and sends.engines == {"lean"}
    assert get_bytes(bucket, object_key(PREFIX, KeyClass.SMALL, os.fsencode(str(root / "victim"))).key) == data


def _fault_run(tmp_path: Path, bucket, engine: str, answer) -> tuple[object, dict[str, dict], _Sends, Path]:
    root = tmp_path / engine / "data"
    root.mkdir(parents=True)
    for name in ("throttled", "denied", "overloaded", "a", "b", "c"):
        (root / name).write_bytes(name.encode() * 10)
    policy = write_policy(tmp_path / engine, root, bucket, uploader=f"engine: {engine}")
    policy.write_text(policy.read_text().replace("max_attempts: 10", "max_attempts: 3"))
    sends = _Sends(answer)
    run_dir = plan(tmp_path / engine, policy)
    return run_shard(run_dir, 0, client_factory=sends.factory), _failures(run_dir), sends, root


def test_throttling_retried_and_refusals_reported_as_botocore_does(bucket, tmp_path):
    """503 SlowDown twice then success: retried within the attempt budget; AccessDenied: reported by name, not
    retried, the rest of the shard goes on; 503 on every attempt: failed after the budget. Both engines give the
    same outcomes with the same reasons."""
    reasons = {}
    for engine in ("auto", "botocore"):
        counts: dict[str, int] = {}
        lock = threading.Lock()

        def answer(request):
            name = request.url.rsplit("/", 1)[-1]
            with lock:
                counts[name] = counts.get(name, 0) + 1
                n = counts[name]
            if name == "throttled" and n <= 2:
                return _error(503, "SlowDown", "Please reduce your request rate.")
            if name == "overloaded":
                return _error(503, "SlowDown", "Please reduce your request rate.")
            if name == "denied":
                return _error(403, "AccessDenied", "Access Denied")
            return None

        outcome, failures, sends, root = _fault_run(tmp_path, bucket, engine, answer)
        assert sends.engines == ({"lean"} if engine == "auto" else {"botocore"})
        assert (outcome.status, outcome.uploaded, outcome.failed) == ("failed", 4, 2), engine
        assert (counts["throttled"], counts["denied"], counts["overloaded"]) == (3, 1, 3), engine
        assert set(failures) == {"denied", "overloaded"}
        assert failures["denied"]["retryable"] is False and failures["overloaded"]["retryable"] is True
        assert "S3 AccessDenied: An error occurred (AccessDenied) when calling the PutObject operation: Access " \
            "Denied" in failures["denied"]["reason"]
        assert "(reached max retries: 2)" in failures["overloaded"]["reason"]
        for name in ("throttled", "a", "b", "c"):
            key = object_key(PREFIX, KeyClass.SMALL, os.fsencode(str(root / name))).key
            assert get_bytes(bucket, key) == name.encode() * 10
        reasons[engine] = {name: (f["reason"], f["retryable"], f.get("outcome")) for name, f in failures.items()}
    assert reasons["auto"] == reasons["botocore"]


def test_unreachable_endpoint_raises_what_botocore_raises(monkeypatch):
    """Nothing listens: both engines retry, then raise the same connection error with the same text (the uploader
    reports it as `EndpointConnectionError: Could not connect to the endpoint URL: ...`)."""
    import socket

    import botocore.exceptions

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        client = make_s3_client(ClientSettings(endpoint_url=endpoint, max_attempts=2))
        putter = lean_client(client)
        assert putter is not None
        raised = []
        for put in (client.put_object, putter.put_object):
            with pytest.raises(botocore.exceptions.EndpointConnectionError) as info:
                put(Bucket="bucket", Key="k", Body=b"x", ChecksumCRC32=crc32_b64(b"x"))
            raised.append(str(info.value))
    assert raised[0] == raised[1] == f'Could not connect to the endpoint URL: "{endpoint}/bucket/k"'


def test_direct_get_signed_by_the_lean_engine_reads_what_a_presigned_get_reads(bucket):
    """Restore's whole-object GET, signed in its headers by the lean engine or presigned: the same bytes, ETag,
    metadata and modification time for a hostile key; the same events (what presigning emits); the same refusals."""
    from fs3g_hpc.transfer.downloader import DirectGetter, ObjectMissing

    client = make_s3_client(ClientSettings(endpoint_url=bucket.endpoint_url))
    body = os.urandom(20_000)
    key = HOSTILE_KEY.replace("%0A", "")
    client.put_object(Bucket=bucket.name, Key=key, Body=body, Metadata={"mtime": "1.000000002", "mode": "100644"})
    events: list = []
    for name in ("provide-client-params.s3.GetObject", "before-parameter-build.s3.GetObject"):
        client.meta.events.register(name, lambda event_name, **_: events.append(event_name))
    lean, presigned = DirectGetter(client, 3), DirectGetter(client, 3, lean=False)
    assert lean.lean is not None and presigned.lean is None
    got = [getter.get_whole(bucket.name, key) for getter in (lean, presigned)]
    assert got[0] == got[1] and got[0].data == body and got[0].metadata["mtime"] == "1.000000002"
    assert events == ["provide-client-params.s3.GetObject", "before-parameter-build.s3.GetObject"] * 2
    for getter in (lean, presigned):
        with pytest.raises(ObjectMissing):
            getter.get_whole(bucket.name, key + "-absent")
