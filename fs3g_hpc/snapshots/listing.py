"""`fs3g snapshots --config C`: the lab's snapshots, oldest first, with what changed since the one before (counts).

Reads only the manifests (one GET each), never a chunk. Unfinished snapshots (no manifest) are listed as such.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import Policy
from ..model.sizes import format_size
from ..model.snapshots import SnapshotManifest
from ..runs.layout import lab_dir
from .store import read_manifest, snapshot_ids


@dataclass
class SnapshotListing:
    bucket: str
    prefix: str
    items: list[tuple[str, SnapshotManifest | None]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        before: SnapshotManifest | None = None
        for sid, manifest in self.items:
            if manifest is None:
                out.append({"id": sid, "complete": False})
                continue
            c = manifest.counts
            row = {"id": sid, "complete": True, "created": manifest.created, "source": manifest.source,
                   "roots": list(manifest.roots), "files": c.files, "bytes": c.file_bytes, "symlinks": c.symlinks,
                   "directories": c.directories, "entries": c.entries, "chunks": len(manifest.chunks),
                   "versioned": manifest.versioned}
            if before is not None:
                row["change"] = {"files": c.files - before.counts.files,
                                 "bytes": c.file_bytes - before.counts.file_bytes}
            out.append(row)
            before = manifest
        return out

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "snapshots": self.rows()}

    def lines(self) -> list[str]:
        where = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}catalog/"
        rows = self.rows()
        if not rows:
            return [f"no snapshots under {where}"]
        lines = [f"snapshots under {where}"]
        for r in rows:
            if not r["complete"]:
                lines.append(f"  {r['id']}  incomplete (no manifest: a merge stopped while writing it)")
                continue
            change = r.get("change")
            delta = "" if change is None else f"  ({change['files']:+,} files, {'+' if change['bytes'] >= 0 else '-'}" \
                                              f"{format_size(abs(change['bytes']))})"
            lines.append(f"  {r['id']}  {r['created']}  {r['files']:,} files {format_size(r['bytes'])}, "
                         f"{r['directories']:,} dirs{delta}{'  [' + r['source'] + ']' if r['source'] != 'merge' else ''}")
        return lines


def list_snapshots(policy: Policy, *, client_factory: Callable[[Policy], Any] | None = None) -> SnapshotListing:
    from .baseline import default_client

    client = (client_factory or default_client)(policy)
    listing = SnapshotListing(policy.s3.bucket, policy.s3.prefix)
    lab = lab_dir(policy)
    lab.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".snapshots-", dir=lab))
    try:
        for sid in snapshot_ids(policy, client):
            listing.items.append((sid, read_manifest(policy, client, sid, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return listing
