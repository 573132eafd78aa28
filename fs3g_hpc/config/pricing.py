"""Price tables (`kind: pricing`, e.g. configs/pricing.yaml): dated prices per region, read with the policies' YAML
limits. `Prices` is one region's table; every price it gives is checked (present, a number >= 0) and a missing or bad
one is a one-line UsageError naming its key path. Pure: the estimates that use it live in estimate.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import UsageError
from .loader import read_yaml
from .schema import RestoreTier


# S3's minimum storage durations: an object deleted (or overwritten, or transitioned) sooner is billed as if it had
# been stored this long. The one home of the rule: `fs3g prune` applies it (it keeps such objects unless
# --allow-early-delete) and `fs3g estimate` reads it through Prices.minimum_days. They are S3's rules, the same in
# every region, not prices: a price table carries no copy (one that still has a `minimum_days` section must agree).
MINIMUM_STORAGE_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}


def minimum_storage_days(storage_class: str) -> int:
    """Days an object of `storage_class` is billed for at least (0 for classes without a minimum)."""
    return MINIMUM_STORAGE_DAYS.get(storage_class, 0)


@dataclass(frozen=True)
class Prices:
    source: str
    date: str
    currency: str
    region: str
    table: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The region's table as a run directory keeps it (a prune run's merge prices what its tasks found)."""
        return {"source": self.source, "date": self.date, "currency": self.currency, "region": self.region,
                "table": dict(self.table)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Prices":
        if not isinstance(data, Mapping) or not isinstance(data.get("table"), Mapping):
            raise UsageError("prices: not a price table snapshot", path=where)
        return cls(str(data.get("source", where)), str(data.get("date", "")), str(data.get("currency", "")),
                   str(data.get("region", "")), dict(data["table"]))

    def _get(self, *path: str) -> Any:
        node: Any = self.table
        for i, key in enumerate(path):
            if not isinstance(node, Mapping) or key not in node:
                where = ".".join(("regions", self.region, *path[:i]))
                known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "nothing"
                raise UsageError(f"{where}: no price for {key!r} (it has: {known})", path=self.source,
                                 hint="add it to the price table, or use another --region")
            node = node[key]
        if isinstance(node, bool) or not isinstance(node, (int, float)) or node < 0:
            raise UsageError(f"{'.'.join(('regions', self.region, *path))}: must be a number >= 0, got {node!r}",
                             path=self.source)
        return float(node)

    def storage(self, klass: str) -> float:
        return self._get("storage_gb_month", klass)

    def put(self, klass: str) -> float:
        return self._get("put_per_1000", klass)

    def list(self) -> float:
        return self._get("list_per_1000")

    def get(self) -> float:
        return self._get("get_per_1000")

    def transition(self, klass: str) -> float:
        return self._get("transition_per_1000", klass)

    def minimum_days(self, klass: str) -> float:
        """The class's minimum storage duration (MINIMUM_STORAGE_DAYS, the one table)."""
        return float(minimum_storage_days(klass))

    def minimum_object_bytes(self, klass: str) -> int:
        table = self.table.get("minimum_object_bytes", {})
        return int(self._get("minimum_object_bytes", klass)) if klass in table else 0

    def overhead(self, klass: str) -> tuple[int, int]:
        """(bytes billed at STANDARD, bytes billed at the class) per archived object."""
        if klass not in self.table.get("archive_overhead_bytes", {}):
            return 0, 0
        return (int(self._get("archive_overhead_bytes", klass, "STANDARD")),
                int(self._get("archive_overhead_bytes", klass, "archive")))

    def retrieval(self, klass: str, tier: str) -> tuple[float, float, float]:
        """(per GB, per 1,000 requests, hours) of restoring from `klass` with `tier`."""
        return (self._get("retrieval", klass, tier, "per_gb"), self._get("retrieval", klass, tier, "per_1000"),
                self._get("retrieval", klass, tier, "hours"))

    def tiers(self, klass: str) -> list[str]:
        return [t.value for t in RestoreTier if t.value in self.table.get("retrieval", {}).get(klass, {})]

    def transfer_out(self) -> float:
        return self._get("transfer_out_per_gb")


def load_prices(path: Path, region: str) -> Prices:
    return _prices(read_yaml(path), path, region)


def _prices(data: Any, path: Path, region: str) -> Prices:
    if not isinstance(data, dict) or data.get("kind") != "pricing":
        raise UsageError("not a price table (it must say `kind: pricing`)", path=str(path))
    for key in ("date", "currency", "regions"):
        if key not in data:
            raise UsageError(f"{key}: missing", path=str(path))
    regions = data["regions"]
    if not isinstance(regions, dict) or region not in regions:
        known = ", ".join(sorted(regions)) if isinstance(regions, dict) else "none"
        raise UsageError(f"regions: no prices for region {region!r} (known: {known})", path=str(path),
                         hint="add the region to the table, or pass --region")
    if not isinstance(regions[region], dict):
        raise UsageError(f"regions.{region}: expected a mapping of prices", path=str(path))
    _check_minimum_days(regions[region].get("minimum_days"), f"regions.{region}.minimum_days", path)
    return Prices(str(path), str(data["date"]), str(data["currency"]), region, regions[region])


def _check_minimum_days(section: Any, where: str, path: Path) -> None:
    """A table written before the durations had one home may still list them: accepted when it agrees with
    MINIMUM_STORAGE_DAYS (it is not read), refused naming the key when it does not (editing it changes nothing)."""
    if section is None:
        return
    if not isinstance(section, Mapping) or {str(k): v for k, v in section.items()} != MINIMUM_STORAGE_DAYS:
        raise UsageError(f"{where}: minimum storage durations are S3's rules, kept in one place "
                         f"(fs3g_hpc/config/pricing.py MINIMUM_STORAGE_DAYS: {MINIMUM_STORAGE_DAYS}); this section "
                         "differs and would not be read", path=str(path), hint="remove the minimum_days section")


_SECTIONS = ("storage_gb_month", "put_per_1000", "list_per_1000", "get_per_1000", "transition_per_1000",
             "retrieval", "transfer_out_per_gb")


def check_price_table(path: Path) -> str:
    """Every region of a price table checked (sections present, every price a number >= 0); a one-line summary."""
    data = read_yaml(path)
    regions = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, dict) or not regions:
        raise UsageError("regions: missing or empty", path=str(path))
    for region in regions:
        prices = _prices(data, path, str(region))

        def walk(node: Any, keys: tuple[str, ...]) -> None:
            if isinstance(node, Mapping):
                for key, child in node.items():
                    walk(child, (*keys, str(key)))
            else:
                prices._get(*keys)  # a number >= 0, or a one-line error naming the key

        for section in _SECTIONS:
            if section not in prices.table:
                raise UsageError(f"regions.{region}.{section}: missing", path=str(path))
        walk({k: v for k, v in prices.table.items() if k != "minimum_days"}, ())
    return f"price table of {data.get('date')} ({data.get('currency')}), regions: {', '.join(sorted(regions))}"
