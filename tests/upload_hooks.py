"""A botocore hook for upload tests whose shards run as other processes (`FS3G_BOTOCORE_HOOK=upload_hooks:refuse_once`):
the first PutObject of every key containing `$FS3G_TEST_REFUSE_KEY` is answered 403 AccessDenied (not retried by
botocore), later ones go through. Which keys were refused is kept under `$FS3G_TEST_HOOK_DIR`, since every shard and
every retry is a new process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def _first_time(key: str) -> bool:
    path = Path(os.environ["FS3G_TEST_HOOK_DIR"]) / "refused.txt"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        seen = f.read().splitlines()
        if key in seen:
            return False
        f.write(key + "\n")
        return True


def refuse_once(client: Any) -> None:
    needle = os.environ["FS3G_TEST_REFUSE_KEY"]

    def on_send(request: Any, **_: Any) -> AWSResponse | None:
        if request.method == "PUT" and needle in request.url and "uploadId" not in request.url \
                and _first_time(request.url.split("?")[0]):
            body = b"<Error><Code>AccessDenied</Code><Message>refused once by the test hook</Message></Error>"
            return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, _Raw(body))
        return None

    client.meta.events.register("before-send.s3.PutObject", on_send)


def slow(client: Any) -> None:
    """`FS3G_BOTOCORE_HOOK=upload_hooks:slow`: every object PUT and GET (not listings) waits `$FS3G_TEST_SLOW_S`
    seconds first, so a local run is still moving data when a test signals it."""
    import time

    delay = float(os.environ["FS3G_TEST_SLOW_S"])

    def on_send(request: Any, **_: Any) -> None:
        if request.method == "PUT" or (request.method == "GET" and "list-type" not in request.url
                                       and "?uploads" not in request.url):
            time.sleep(delay)

    client.meta.events.register("before-send.s3", on_send)


def damage_in_first_process(client: Any) -> None:
    """Every PutObject of keys containing `$FS3G_TEST_REFUSE_KEY` is answered 400 BadDigest (damaged in flight) in
    the first process that sends one, so its shard gives up on the file after its resends; a retry (a new process)
    goes through. A transient failure: the kind a retry round exists for."""
    needle = os.environ["FS3G_TEST_REFUSE_KEY"]
    me = str(os.getpid())

    def on_send(request: Any, **_: Any) -> AWSResponse | None:
        if request.method == "PUT" and needle in request.url and "uploadId" not in request.url \
                and _owner(request.url.split("?")[0], me) == me:
            body = b"<Error><Code>BadDigest</Code><Message>damaged by the test hook</Message></Error>"
            return AWSResponse(request.url, 400, {"Content-Type": "application/xml"}, _Raw(body))
        return None

    client.meta.events.register("before-send.s3.PutObject", on_send)


def _owner(key: str, me: str) -> str:
    """The pid of the first process that sent `key` (recorded under `$FS3G_TEST_HOOK_DIR/damaged.txt`)."""
    path = Path(os.environ["FS3G_TEST_HOOK_DIR"]) / "damaged.txt"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        for line in f.read().splitlines():
            pid, _, seen = line.partition(" ")
            if seen == key:
                return pid
        f.write(f"{me} {key}\n")
        return me


def explode(client: Any) -> None:
    """A bug where no per-file handler catches it: the client cannot be made, so `fs3g run-shard` fails as a whole."""
    raise RuntimeError("the test hook exploded")
