"""A botocore hook the snapshot tests install in the fs3g processes they start (`FS3G_BOTOCORE_HOOK=
count_hooks:install`): every S3 operation a client sends through botocore is appended to
`$FS3G_TEST_HOOK_DIR/requests.jsonl` as {"op": name, "key": key or null}, so a test counts HeadObject requests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def install(client: Any) -> None:
    log = Path(os.environ["FS3G_TEST_HOOK_DIR"]) / "requests.jsonl"

    def on_call(params: dict, model: Any, **_: Any) -> None:
        line = json.dumps({"op": model.name, "key": params.get("Key"), "version": params.get("VersionId"), "prefix": params.get("Prefix")}) + "\n"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    client.meta.events.register("provide-client-params.s3", on_call)


def requests(hook_dir: Path) -> list[dict]:
    path = hook_dir / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
