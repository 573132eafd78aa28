"""botocore hooks the restore tests install in processes they do not run themselves (the Slurm poll jobs), through
`FS3G_BOTOCORE_HOOK=restore_hooks:install`. moto completes Glacier restores at once; this makes the first
`FS3G_TEST_IN_PROGRESS_POLLS` processes that check readiness (and the download tasks after them) see "in progress",
and logs every RestoreObject call.

State lives in files under `FS3G_TEST_HOOK_DIR`, since every poll is a new process."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any


def _state_dir() -> Path:
    return Path(os.environ["FS3G_TEST_HOOK_DIR"])


def _poll_number(advance: bool) -> int:
    path = _state_dir() / "polls"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        count = int(f.read() or 0) + advance
        f.seek(0)
        f.truncate()
        f.write(str(count))
    return count


# One poll number per process, however many clients it makes (test-only state).
_POLL_OF_PROCESS: dict[int, int] = {}


def install(client: Any) -> None:
    limit = int(os.environ.get("FS3G_TEST_IN_PROGRESS_POLLS", "0"))

    def in_progress() -> bool:
        pid = os.getpid()
        if pid not in _POLL_OF_PROCESS:
            # A process that plans or polls counts as one poll; a download task sees the state of the last poll.
            _POLL_OF_PROCESS[pid] = _poll_number(advance="restore-shard" not in sys.argv)
        return _POLL_OF_PROCESS[pid] <= limit

    def on_head(parsed: dict, **_: Any) -> None:
        if parsed.get("StorageClass") in ("GLACIER", "DEEP_ARCHIVE") and in_progress():
            parsed["Restore"] = 'ongoing-request="true"'

    def on_list(parsed: dict, **_: Any) -> None:
        for item in parsed.get("Contents", []):
            if item.get("StorageClass") in ("GLACIER", "DEEP_ARCHIVE") and in_progress():
                item["RestoreStatus"] = {"IsRestoreInProgress": True}

    def on_restore(http_response: Any, parsed: dict, model: Any, params: dict | None = None, **_: Any) -> None:
        with open(_state_dir() / "restore-requests.jsonl", "a") as f:
            f.write(json.dumps({"status": getattr(http_response, "status_code", None)}) + "\n")

    def on_restore_request(params: dict, **_: Any) -> None:
        with open(_state_dir() / "restore-keys.jsonl", "a") as f:
            f.write(json.dumps({"key": params.get("Key"), "tier": params.get("RestoreRequest", {})
                                .get("GlacierJobParameters", {}).get("Tier")}) + "\n")

    events = client.meta.events
    events.register("after-call.s3.HeadObject", on_head)
    events.register("after-call.s3.ListObjectsV2", on_list)
    events.register("after-call.s3.RestoreObject", on_restore)
    events.register("provide-client-params.s3.RestoreObject", on_restore_request)
