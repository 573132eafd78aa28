"""Which snapshots a retention rule keeps: restic's `forget` semantics, pure (the caller hands in ids and times).

    keep_last N       the N newest snapshots
    keep_daily N      walking from the newest back, the newest snapshot of each of the last N days that have one
    keep_weekly N     the same per ISO week (Monday..Sunday, ISO year-week numbers)
    keep_monthly N    the same per calendar month
    keep_within D     every snapshot made within D (e.g. 30d, 12w, 6m, 1y6m) before the NEWEST snapshot
    deleted_restorable_days N
                      a floor in wall time: every snapshot made less than N days before `now` is kept, so a file
                      deleted from disk stays restorable for at least N days after the last backup that still had it

A snapshot is kept when any rule keeps it (the reasons are reported). Times are UTC (snapshot ids are UTC stamps).
No rule at all (no `retention:` section) keeps everything: prune then forgets nothing and deletes nothing. The
newest snapshot is always kept, whatever the rules say.

Superseded snapshots (`decide_snapshots`): a snapshot whose records pack compaction rewrote into a successor (the
successor's manifest says `supersedes: <id>`) is replaced by it: the superseded one is forgotten whatever the rules
say (Decision.superseded_by names the successor; it is never kept on its own), and the successor is judged in its
place, at the superseded one's time (the point in time its files are from). Chains follow to the first. Only an
older snapshot can be superseded (ids sort by time). Memory: one small tuple per snapshot (a lab has hundreds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Iterable


class KeepReason(Enum):
    LAST = "last"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    WITHIN = "within"
    RESTORABLE = "deleted_restorable_days"
    NEWEST = "newest"
    NO_RULES = "no retention rules"


_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?")


@dataclass(frozen=True)
class Duration:
    """A calendar duration as restic writes it (`1y5m7d2h`), plus weeks (`12w`)."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> "Duration":
        match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration such as 30d, 12w, 6m, 1y or 1y6m (y m w d h, in that order)")
        duration = cls(*(int(g or 0) for g in match.groups()))
        if duration.years > 1000:
            raise ValueError(f"{text!r}: more than 1000 years")
        return duration

    def before(self, when: datetime) -> datetime:
        """`when` minus this duration (months and years by the calendar, the day clamped to the month's end)."""
        month = when.month - 1 - self.months - 12 * self.years
        year, month = when.year + month // 12, month % 12 + 1
        day = min(when.day, _month_days(year, month))
        return when.replace(year=year, month=month, day=day) - timedelta(weeks=self.weeks, days=self.days,
                                                                          hours=self.hours)

    def __str__(self) -> str:
        text = "".join(f"{v}{u}" for v, u in ((self.years, "y"), (self.months, "m"), (self.weeks, "w"),
                                               (self.days, "d"), (self.hours, "h")) if v)
        return text or "0d"


def _month_days(year: int, month: int) -> int:
    nxt = datetime(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


@dataclass(frozen=True)
class RetentionRule:
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_within: Duration | None = None
    deleted_restorable_days: int | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly,
                                       self.keep_within, self.deleted_restorable_days))


@dataclass(frozen=True)
class Decision:
    snapshot_id: str
    time: datetime
    reasons: tuple[KeepReason, ...]
    superseded_by: str = ""  # forgotten because this snapshot replaces it (pack compaction)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def _bucket(when: datetime, reason: KeepReason) -> tuple[int, ...]:
    if reason is KeepReason.DAILY:
        return (when.year, when.month, when.day)
    if reason is KeepReason.WEEKLY:
        iso = when.isocalendar()
        return (iso[0], iso[1])
    return (when.year, when.month)


def decide(snapshots: Iterable[tuple[str, datetime]], rule: RetentionRule, now: datetime) -> list[Decision]:
    """One Decision per snapshot, newest first. `snapshots` are (id, UTC time) pairs in any order."""
    items = sorted(((sid, t.astimezone(timezone.utc)) for sid, t in snapshots), key=lambda x: (x[1], x[0]),
                   reverse=True)
    if not items:
        return []
    if rule.empty:
        return [Decision(sid, t, (KeepReason.NO_RULES,)) for sid, t in items]
    counts = {KeepReason.DAILY: rule.keep_daily, KeepReason.WEEKLY: rule.keep_weekly,
              KeepReason.MONTHLY: rule.keep_monthly}
    last_bucket: dict[KeepReason, tuple[int, ...] | None] = {r: None for r in counts}
    newest = items[0][1]
    within = rule.keep_within.before(newest) if rule.keep_within is not None else None
    floor = now - timedelta(days=rule.deleted_restorable_days) if rule.deleted_restorable_days is not None else None
    out: list[Decision] = []
    for i, (sid, t) in enumerate(items):
        reasons: list[KeepReason] = []
        if i == 0:
            reasons.append(KeepReason.NEWEST)
        if rule.keep_last is not None and i < rule.keep_last:
            reasons.append(KeepReason.LAST)
        for reason, left in counts.items():
            if not left:
                continue
            bucket = _bucket(t, reason)
            if bucket != last_bucket[reason]:
                last_bucket[reason] = bucket
                counts[reason] = left - 1
                reasons.append(reason)
        if within is not None and t >= within:
            reasons.append(KeepReason.WITHIN)
        if floor is not None and t > floor:
            reasons.append(KeepReason.RESTORABLE)
        out.append(Decision(sid, t, tuple(reasons)))
    return out



def decide_snapshots(snapshots: Iterable[tuple[str, datetime, str]], rule: RetentionRule,
                     now: datetime) -> list[Decision]:
    """`decide` for (id, UTC time, id it supersedes or "") triples: every superseded snapshot present is forgotten
    (listed last, `superseded_by` set) and its successor judged at the superseded one's time (see the module's
    docstring). The first Decision is still the newest snapshot kept."""
    items = list(snapshots)
    present = {sid: (t, sup) for sid, t, sup in items}
    successor = {sup: sid for sid, _, sup in items if sup and sup in present and sup < sid}

    def origin_time(sid: str) -> datetime:
        seen = {sid}
        t, sup = present[sid]
        while sup and sup in present and sup not in seen:
            seen.add(sup)
            t, sup = present[sup]
        return t

    judged = decide([(sid, origin_time(sid)) for sid, _, _ in items if sid not in successor], rule, now)
    forgotten = [Decision(sid, present[sid][0], (), successor[sid]) for sid, _, _ in
                 sorted(items, key=lambda x: (x[1], x[0]), reverse=True) if sid in successor]
    return judged + forgotten
