"""A botocore hook for prune tests whose tasks run as other processes (`FS3G_BOTOCORE_HOOK=prune_hooks:kill_at`):
just before the `$FS3G_TEST_KILL_AT`-th DeleteObjects request of the whole run (counted across processes in
`$FS3G_TEST_HOOK_DIR`) is sent, SIGKILL: an array task kills itself, and with `FS3G_TEST_KILL_PARENT=1` first the
`fs3g prune` that started it; in that process itself (its merge) it kills only itself. Later processes of the run
(a rerun) send their requests untouched once the count has passed."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _count() -> int:
    path = Path(os.environ["FS3G_TEST_HOOK_DIR"]) / "deletes.count"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
        return n


def kill_at(client: Any) -> None:
    at = int(os.environ["FS3G_TEST_KILL_AT"])

    def on_send(request: Any, **_: Any) -> None:
        if _count() != at:
            return
        in_task = ("SUBMITIT_LOCAL_JOB_ID" in os.environ or "SLURM_ARRAY_TASK_ID" in os.environ
                   or "prune-shard" in sys.argv)  # a local shard is forked from `fs3g prune` (localexec.fork_shard)
        if in_task and os.environ.get("FS3G_TEST_KILL_PARENT") == "1":
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    client.meta.events.register("before-send.s3.DeleteObjects", on_send)


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def refuse_key(client: Any) -> None:
    """`FS3G_BOTOCORE_HOOK=prune_hooks:refuse_key`: a DeleteObjects request naming a key that contains
    `$FS3G_TEST_REFUSE_DELETE` is not sent; the answer says S3 refused that key (AccessDenied), as a bucket policy
    denying it would. Use it with one key per batch."""
    from botocore.awsrequest import AWSResponse
    from xml.sax.saxutils import escape

    needle = os.environ["FS3G_TEST_REFUSE_DELETE"].encode()

    def on_send(request: Any, **_: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else (request.body or b"")
        if needle not in body:
            return None
        key = body.split(b"<Key>", 1)[1].split(b"</Key>", 1)[0].decode()
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>{escape(key)}</Key>'
               "<Code>AccessDenied</Code><Message>refused by the test hook</Message></Error></DeleteResult>")
        return AWSResponse(request.url, 200, {"Content-Type": "application/xml"}, _Raw(xml.encode()))

    client.meta.events.register("before-send.s3.DeleteObjects", on_send)
