"""The lab's catalog: where it is, which bucket it describes, and the one reader of it ("the catalog of this policy,
entries under these paths"), streamed and checked in order.

    <run_root>/<lab>/catalog.rec            records sorted by path (model/records.py): files, symlinks, directories
    <run_root>/<lab>/catalog-target.json    the bucket, prefix and endpoint the catalog's objects are in
    <run_root>/<lab>/catalog-snapshot.json  the bucket snapshot the catalog is (snapshots/; model/snapshots.py)

Memory: one record at a time. The order check and the unreadable-path rule are pure: model/catalog.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..config import Policy
from ..model.catalog import checked_order
from ..model.records import Entry, read_records
from .layout import lab_dir, read_json, write_json_atomic


def catalog_path(policy: Policy) -> Path:
    return lab_dir(policy) / "catalog.rec"


def catalog_target_path(policy: Policy) -> Path:
    return lab_dir(policy) / "catalog-target.json"


def catalog_origin_path(policy: Policy) -> Path:
    return lab_dir(policy) / "catalog-snapshot.json"


def _target(policy: Policy) -> dict:
    return {"bucket": policy.s3.bucket, "prefix": policy.s3.prefix, "endpoint_url": policy.s3.endpoint_url}


def _describe_target(target: dict) -> str:
    where = f"s3://{target['bucket']}/{target['prefix'] + '/' if target['prefix'] else ''}"
    return where + (f" at {target['endpoint_url']}" if target.get("endpoint_url") else "")


def record_catalog_target(policy: Policy) -> None:
    """Note where the catalog's objects are (written with the catalog): a catalog says what one bucket holds."""
    write_json_atomic(catalog_target_path(policy), _target(policy))


def catalog_target_mismatch(policy: Policy) -> str | None:
    """Why the lab's catalog does not describe the policy's bucket and prefix (they changed since it was written),
    or None when it does (or when the catalog predates this record)."""
    path = catalog_target_path(policy)
    if not path.is_file():
        return None
    recorded = read_json(path)
    if recorded == _target(policy):
        return None
    return (f"the catalog describes {_describe_target(recorded)}, but the policy now names "
            f"{_describe_target(_target(policy))}")


def under_paths(entries: Iterable[Entry], paths: Sequence[bytes]) -> Iterator[Entry]:
    """The entries at or under one of `paths` (absolute, normalised; none given: all of them), in their order."""
    if not paths:
        yield from entries
        return
    exact = set(paths)
    prefixes = tuple(p.rstrip(b"/") + b"/" for p in paths)
    for entry in entries:
        if entry.path in exact or entry.path.startswith(prefixes):
            yield entry


def read_catalog(policy: Policy, paths: Sequence[bytes] = ()) -> Iterator[Entry]:
    """The catalog of this policy, entries under these paths: streamed, checked in order (CatalogError when not);
    nothing when the lab has no catalog yet."""
    catalog = catalog_path(policy)
    if not catalog.is_file():
        return iter(())
    return under_paths(checked_order(read_records(catalog), str(catalog)), paths)
