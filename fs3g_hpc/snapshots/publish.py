"""The backup merge's last step: the catalog it wrote goes to the bucket as a snapshot (store.write_snapshot).

Published when the merge rewrote the catalog, or when the local catalog is not yet any snapshot (its origin note is
missing). A snapshot that cannot be written does not undo the verified backup: the merge reports it (report.json
`snapshot.error`, a warning) and removes the origin note, so the next plan knows its local catalog is newer than any
snapshot and the next merge publishes again.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..config import Policy
from ..errors import Fs3gError
from .store import read_origin, record_origin, write_snapshot

log = logging.getLogger(__name__)


def publish_after_merge(policy: Policy, catalog_file: Path, client: Callable[[], Any], *, rewritten: bool,
                        run_id: str) -> dict[str, Any] | None:
    """Write the snapshot when due; what report.json records of it (None: not due)."""
    origin = read_origin(policy)
    if not catalog_file.is_file() or (not rewritten and origin is not None):
        return None if origin is None else {"id": origin.snapshot_id, "written": False}
    work = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=catalog_file.parent))
    try:
        manifest = write_snapshot(policy, catalog_file, client(), work, run_id=run_id)
    except Fs3gError as e:
        record_origin(policy, None, catalog_file)
        log.warning("catalog snapshot not written (%s); the backup itself is verified, and the next merge writes "
                    "the snapshot again", e)
        return {"written": False, "error": str(e)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record_origin(policy, manifest.snapshot_id, catalog_file)
    prefix = f"{policy.s3.prefix}/" if policy.s3.prefix else ""
    return {"id": manifest.snapshot_id, "written": True, "chunks": len(manifest.chunks),
            "entries": manifest.counts.entries, "key": f"s3://{policy.s3.bucket}/{prefix}catalog/"
                                                          f"{manifest.snapshot_id}/"}


def snapshot_lines(snapshot: dict[str, Any] | None) -> list[str]:
    """The merge summary's line about the snapshot."""
    if not snapshot:
        return []
    if snapshot.get("error"):
        return [f"  snapshot  NOT written: {snapshot['error']} (the next merge writes it)"]
    if not snapshot.get("written"):
        return [f"  snapshot  {snapshot['id']} (catalog unchanged)"]
    return [f"  snapshot  {snapshot['key']} ({snapshot['chunks']} chunks, {snapshot['entries']:,} entries)"]
