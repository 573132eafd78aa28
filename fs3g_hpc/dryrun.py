"""`fs3g backup --dry-run` and `fs3g restore --dry-run`: what a run would send, request and cost, found by reads only.

Backup: the plan is made as usual (a complete run directory under the lab's run root, owner-only) and kept, so that
`fs3g submit RUN_DIR` later runs exactly what was shown; nothing is uploaded and no job is submitted. Restore: the
selection goes to a private scratch directory under the lab's directory, removed afterwards; the bucket is only listed
(and HEAD-read where a listing cannot say whether an archived object is restored); no RestoreObject, no GET of data,
nothing under the destination.

Costs come from `estimate` with the shipped price table for the policy's region; a region the table lacks gives the
counts and one line saying so. Memory: the plan's and the selection's records are streamed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .config import Policy, Prices
from .errors import UsageError
from .estimate import (Estimate, PlanFigures, Tally, default_region, estimate, plan_figures, prices_for, render,
                       restore_cost, restore_gets, tally_shards, upload_requests)
from .model.records import Entry, read_records
from .model.sizes import format_size
from .backup.plan import PlanSummary

if TYPE_CHECKING:
    from .restore.select import RestoreRequest
    from .restore.stage import StagePreview


def load_prices_or_note(policy: Policy) -> tuple[Prices | None, str | None]:
    """The policy region's prices, or None and the one line that says why there are none."""
    try:
        return prices_for(policy), None
    except UsageError as e:
        return None, f"no prices for region {default_region(policy)!r}: counts only ({e})"


def _money(x: float) -> str:
    return f"{x:,.2f}" if abs(x) >= 100 else f"{x:.4f}"


@dataclass(frozen=True)
class BackupDryRun:
    summary: PlanSummary
    figures: PlanFigures
    requests: dict[str, int]
    estimate: Estimate | None
    prices_note: str | None

    def lines(self, *, with_plan: bool = True) -> list[str]:
        """The plan's summary (unless it was printed already), then what would be sent and what it costs."""
        u = self.figures.upload
        run = self.summary.run_dir
        out = self.summary.lines() if with_plan else []
        out.append(f"would upload: {u.small_files:,} small files ({format_size(u.small_bytes)}), {u.large_files:,} "
                   f"large ({format_size(u.large_bytes)}: {u.single_put_large:,} single PUT, {u.multipart_uploads:,} "
                   f"multipart in {u.parts:,} parts), {u.symlinks:,} symlinks")
        if self.estimate is not None:
            out += render(self.estimate, u, self.figures.stored, self.figures.scope)
        else:
            r = self.requests
            out.append(f"  requests  {r['PUT']:,} PUT, {r['LIST']:,} LIST, {r['HEAD']:,} HEAD, "
                       f"{r['transitions']:,} transitions")
            out.append(f"  cost      {self.prices_note}")
        out.append(f"dry run: nothing uploaded, no job submitted. The plan is kept: `fs3g submit {run}` runs exactly "
                   f"this (`rm -r {run}` discards it)")
        return out

    def to_json(self) -> dict[str, Any]:
        h = self.summary.header
        return {"dry_run": True, "command": "backup", "run_dir": str(self.summary.run_dir),
                "submit": f"fs3g submit {self.summary.run_dir}",
                "plan": {k: h[k] for k in ("scan", "changes", "planned", "planned_by_class", "skipped", "shard_count",
                                           "arrays")},
                "upload": vars(self.figures.upload), "stored": vars(self.figures.stored), "requests": self.requests,
                "estimate": None if self.estimate is None else self.estimate.to_json(),
                "prices_note": self.prices_note}


def backup_dry_run(policy: Policy, summary: PlanSummary) -> BackupDryRun:
    prices, note = load_prices_or_note(policy)
    figures = plan_figures(summary.run_dir, policy, prices, f"dry run of plan {summary.run_dir}")
    result = estimate(figures.upload, figures.stored, policy, prices) if prices is not None else None
    return BackupDryRun(summary, figures, upload_requests(figures.upload, policy), result, note)


@dataclass(frozen=True)
class RestoreDryRun:
    header: dict  # restore.json of the (removed) selection
    selected: Tally
    stage: StagePreview
    requests: dict[str, int]
    cost: dict[str, Any] | None
    prices: Prices | None
    prices_note: str | None

    def lines(self) -> list[str]:
        h, t, s = self.header, self.selected, self.stage
        pair = lambda c: f"{c[0]:,} ({format_size(c[1])})"  # noqa: E731
        archived = ", ".join(f"{k} {v[0]:,}" for k, v in sorted(s.archived_by_class.items())) or "none"
        out = [f"restore dry run: {h['planned']['files']:,} files {format_size(h['planned']['bytes'])} from "
               f"{h['source']} -> {h['destination']}"
               + (f"; {h['refused']:,} refused (would land outside the destination)" if h["refused"] else ""),
               f"  classes   small {t.small_files:,} ({format_size(t.small_bytes)}), large {t.large_files:,} "
               f"({format_size(t.large_bytes)}), symlinks {t.symlinks:,}",
               f"  glacier   archived: {archived}; {pair(s.to_request)} need a restore request (tier {s.tier}, "
               f"{s.days} days), {pair(s.in_progress)} already being restored, {pair(s.restored)} restored and "
               f"readable" + (f"; {pair(s.refused)} refused (DEEP_ARCHIVE has no Expedited)" if s.refused[0] else ""),
               f"  ready     {pair(s.ready)} can be downloaded now"
               + (f"; {pair(s.missing)} large objects missing from the bucket" if s.missing[0] else ""),
               *([self._packs_line()] if s.packed[0] else []),
               f"  requests  {self.requests['RestoreObject']:,} RestoreObject, {self.requests['GET']:,} GET"]
        if self.cost is not None and self.prices is not None:
            c = self.cost
            out.append(f"  cost      {c['tier']} ~{c['hours']:g} h: retrieval {_money(c['retrieval'])} + copy "
                       f"{_money(c['temporary_copy'])} + GETs {_money(c['requests'])} + transfer out "
                       f"{_money(c['transfer_out'])} = {_money(c['total'])} {self.prices.currency} (prices of "
                       f"{self.prices.date}, {self.prices.region})")
        else:
            out.append(f"  cost      {self.prices_note}")
        out.append("dry run: nothing requested, downloaded or written; the same command without --dry-run restores")
        return out

    def _packs_line(self) -> str:
        s = self.stage
        packs = s.packs
        total = [sum(v[0] for v in packs.values()), sum(v[1] for v in packs.values())]
        thaw = packs.get("to_request", [0, 0])
        extra = "".join(f"; {packs[k][0]:,} {label}" for k, label in (
            ("in_progress", "being thawed"), ("restored", "thawed and readable"), ("missing", "missing"),
            ("refused", "refused (DEEP_ARCHIVE has no Expedited)")) if k in packs)
        return (f"  packs     {s.packed[0]:,} packed files ({format_size(s.packed[1])}) in {total[0]:,} packs "
                f"({format_size(total[1])}); {thaw[0]:,} packs to thaw ({format_size(thaw[1])}, one restore "
                f"request each){extra}")

    def to_json(self) -> dict[str, Any]:
        h = self.header
        return {"dry_run": True, "command": "restore", "source": h["source"], "destination": h["destination"],
                "paths": h["requests"], "planned": h["planned"], "refused": h["refused"],
                "shard_count": h["shard_count"], "selected": vars(self.selected), "stage": self.stage.to_json(),
                "requests": self.requests, "cost": self.cost,
                "currency": None if self.prices is None else self.prices.currency, "prices_note": self.prices_note}


def preview_restore(policy: Policy, request: RestoreRequest) -> RestoreDryRun:
    """Select into a private scratch directory (removed afterwards), classify by listings, tally and price."""
    import shutil
    import tempfile

    from .restore.select import prepare_restore
    from .restore.stage import preview_stage
    from .runs.layout import ensure_private_dir, lab_dir

    scratch = Path(tempfile.mkdtemp(prefix=".restore-dry-run-", dir=ensure_private_dir(lab_dir(policy))))
    try:
        layout, header = prepare_restore(policy, request, scratch / "restore")
        stage = preview_stage(layout.run_dir)
        entries = (e for s in header["shards"] for e in read_records(layout.shard_file(s["index"])))
        return restore_dry_run(policy, header, entries, stage)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def restore_dry_run(policy: Policy, header: dict, selected_entries: Iterable[Entry], stage: StagePreview
                    ) -> RestoreDryRun:
    """`selected_entries`: the selection's records (streamed); `stage`: restore.preview_stage's classification."""
    prices, note = load_prices_or_note(policy)
    # The selection's records come from the catalog (or the bucket): packed exactly when they carry a location.
    selected = tally_shards([selected_entries], policy, prices, from_catalog=True)
    # The archived objects found, of every class, are retrieved at the tier; the GETs are those of the whole selection.
    # Packed files are read by ranged GETs of their packs (at least one per pack), not one GET each.
    packs = sum(v[0] for v in stage.packs.values())
    requests = {"RestoreObject": stage.to_request[0], "GET": restore_gets(selected) - stage.packed[0] + packs}
    cost = None
    if prices is not None:
        try:
            per_class = [restore_cost(prices, klass, stage.tier, stage.days, archived_objects=files,
                                      archived_bytes=size, gets=0, out_bytes=0)
                         for klass, (files, size) in stage.to_request_by_class.items()]
            base = restore_cost(prices, "STANDARD", stage.tier, stage.days, archived_objects=0, archived_bytes=0,
                                gets=requests["GET"], out_bytes=selected.small_bytes + selected.symlink_bytes
                                + selected.large_bytes)
        except UsageError as e:
            note = f"the price table cannot price this restore: counts only ({e})"
        else:
            # Hours: the slowest class's; objects already restored or being restored cost no new retrieval.
            cost = {"tier": stage.tier, "hours": max([c["hours"] for c in per_class], default=0.0),
                    **{k: base[k] + sum(c[k] for c in per_class)
                       for k in ("retrieval", "temporary_copy", "requests", "transfer_out", "total")}}
    return RestoreDryRun(header, selected, stage, requests, cost, prices if cost is not None else None, note)
