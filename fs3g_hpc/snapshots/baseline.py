"""Which catalog a backup plan diffs against: catalog loss is never a full pass.

    the local catalog            when it is there, describes this bucket, has the size its origin note recorded, and
                                 is no older than the bucket's newest snapshot of the policy's roots
    the newest snapshot          otherwise: downloaded into the local catalog's place (one line says so)
    `catalog rebuild` needed     no catalog, no snapshot, but objects of the policy's roots in the bucket: a plan
                                 would upload everything again, so it stops (NeedsRebuild, exit 2) unless --full
    nothing                      an empty bucket: everything is new, as it should be

Costs one listing of `catalog/` plus one manifest GET per snapshot passed over; a download streams one chunk at a
time (store.py). An unreachable bucket is not decided here: the plan goes on with the local catalog and the
preflight before the upload reports the bucket.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..config import Policy
from ..errors import ServiceError, TargetError, UsageError
from ..model.keys import KeyClass, encode_path
from ..runs.catalog import catalog_path, catalog_target_mismatch
from ..runs.layout import lab_dir
from .store import download_catalog, matching_snapshots, read_origin

log = logging.getLogger(__name__)


class NeedsRebuild(UsageError):
    """The bucket holds the roots' objects but there is neither a catalog nor a snapshot."""


def default_client(policy: Policy) -> Any:
    """A client that gives up soon on a dead endpoint (the plan goes on without the bucket)."""
    from ..transfer.target import preflight_client

    return preflight_client(policy)


def local_catalog_usable(policy: Policy) -> tuple[bool, str]:
    """(usable, why not) for the local catalog, judged without the bucket."""
    local = catalog_path(policy)
    if not local.is_file():
        return False, "no local catalog"
    if catalog_target_mismatch(policy) is not None:
        return False, "the local catalog describes another bucket or prefix"
    origin = read_origin(policy)
    if origin is not None and origin.catalog_bytes != local.stat().st_size:
        return False, "the local catalog is damaged (its size differs from what its merge wrote)"
    return True, ""


def roots_have_objects(policy: Policy, client: Any) -> bool:
    from ..transfer.snapshots import has_objects

    prefix = policy.s3.prefix
    for root in policy.roots:
        encoded = encode_path(root.encode("utf-8", "surrogateescape")).rstrip("/")
        for klass in KeyClass:
            if has_objects(client, policy.s3.bucket, "/".join(p for p in (prefix, klass.value, encoded) if p) + "/"):
                return True
    return has_objects(client, policy.s3.bucket, "/".join(p for p in (prefix, "packs") if p) + "/")


def prepare_baseline(policy: Policy, *, full: bool, client_factory: Callable[[Policy], Any] | None = None,
                     say: Callable[[str], None] = print) -> Path:
    """The catalog path the plan diffs against, made current from the bucket's newest snapshot when the local one is
    missing, damaged or older (see the module's docstring). NeedsRebuild when only a rebuild avoids a full pass."""
    local = catalog_path(policy)
    if full:
        return local
    usable, why = local_catalog_usable(policy)
    origin = read_origin(policy) if usable else None
    try:
        client = (client_factory or default_client)(policy)
        lab = lab_dir(policy)
        lab.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=lab))
        try:
            newest = next(matching_snapshots(policy, client, work), None)
            if newest is None:
                if not usable and not local.is_file() and roots_have_objects(policy, client):
                    where = f"s3://{policy.s3.bucket}/{policy.s3.prefix + '/' if policy.s3.prefix else ''}"
                    config = policy.source_files[-1] if policy.source_files else "C"
                    raise NeedsRebuild(
                        f"{where} holds objects of the policy's roots, but there is no catalog and no snapshot: "
                        "a plan would upload every file again",
                        hint=f"run `fs3g catalog rebuild --config {config}` (builds the catalog from the bucket), "
                             "then back up; or back up with --full to upload everything again")
                return local
            if usable and (origin is None or origin.snapshot_id >= newest.snapshot_id):
                return local
            reason = why if not usable else f"the local catalog is older (snapshot {origin.snapshot_id})" \
                if origin is not None else ""
            count = download_catalog(policy, client, newest, local, work)
            say(f"catalog: {reason}; using the bucket's newest snapshot {newest.snapshot_id} "
                f"({count:,} entries, {newest.created})")
            return local
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except (ServiceError, TargetError) as e:
        # Said at -v only: the preflight before any upload reports a bucket that cannot be used, in one line.
        log.info("catalog snapshots not read (%s); planning against the local catalog", e)
        return local
