"""The lab's catalog: where it is, which bucket it describes, and the one reader of it ("the catalog of this policy,
entries under these paths"), streamed and checked in order.

    <run_root>/<lab>/catalog.rec            records sorted by path (model/records.py): files, symlinks, directories
    <run_root>/<lab>/catalog-target.json    the bucket, prefix and endpoint the catalog's objects are in
    <run_root>/<lab>/catalog-snapshot.json  the bucket snapshot the catalog is (snapshots/; model/snapshots.py)
    <run_root>/<lab>/packs.jsonl            one PackUsage line per pack: members, bytes, and what is still live

Memory: one record (or pack line) at a time. The order check and the unreadable-path rule are pure: model/catalog.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..config import Policy
from ..errors import UsageError
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


def path_selector(paths: Sequence[bytes]) -> Callable[[Entry], bool]:
    """Whether an entry is at or under one of `paths` (absolute, normalised; none given: every entry)."""
    if not paths:
        return lambda entry: True
    exact = set(paths)
    prefixes = tuple(p.rstrip(b"/") + b"/" for p in paths)
    return lambda entry: entry.path in exact or entry.path.startswith(prefixes)


def under_paths(entries: Iterable[Entry], paths: Sequence[bytes]) -> Iterator[Entry]:
    """The entries at or under one of `paths` (absolute, normalised; none given: all of them), in their order."""
    if not paths:
        yield from entries
        return
    selected = path_selector(paths)
    for entry in entries:
        if selected(entry):
            yield entry


def read_catalog(policy: Policy, paths: Sequence[bytes] = ()) -> Iterator[Entry]:
    """The catalog of this policy, entries under these paths: streamed, checked in order (CatalogError when not);
    nothing when the lab has no catalog yet."""
    catalog = catalog_path(policy)
    if not catalog.is_file():
        return iter(())
    return under_paths(checked_order(read_records(catalog), str(catalog)), paths)


# -- packs.jsonl: the lab's packs and their live members -----------------------------------------------------------

def packs_usage_path(policy: Policy) -> Path:
    """`<run_root>/<lab>/packs.jsonl` beside the catalog: one PackUsage line per pack the catalog knows."""
    return lab_dir(policy) / "packs.jsonl"


@dataclass(frozen=True)
class PackUsage:
    """One pack: its key (relative to the lab prefix), members and bytes as written, and how many of them the
    catalog still points at (the rest is dead space, for the pruning of a later issue; nothing is deleted here)."""

    pack: str
    members: int
    bytes: int
    live_members: int
    live_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"pack": self.pack, "members": self.members, "bytes": self.bytes, "live_members": self.live_members,
                "live_bytes": self.live_bytes}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "PackUsage":
        if not isinstance(data, dict) or not isinstance(data.get("pack"), str):
            raise UsageError("not a pack usage line", path=where, key="pack")
        values = []
        for key in ("members", "bytes", "live_members", "live_bytes"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"not a count: {value!r}", path=where, key=key)
            values.append(value)
        return cls(data["pack"], *values)


def read_packs_usage(path: Path) -> Iterator[PackUsage]:
    """The lines of a packs.jsonl (absent: none), streamed."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError("not JSON", path=f"{path}:{number}") from None
            yield PackUsage.from_json(data, f"{path}:{number}")
