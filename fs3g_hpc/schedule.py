"""Backup schedules: when a lab's backup is next due, and the scrontab lines that say so. Pure: no Slurm here.

A schedule is a five-field cron expression (`minute hour day-of-month month day-of-week`, with `*`, lists, ranges
and `/steps`; day-of-week 0-7, 0 and 7 being Sunday; when both day fields are restricted either may match, as in
cron) or an interval `every N{s,m,h,d}` (the next due time is now + N; for tests and for sites that want it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_EVERY = re.compile(r"every\s+(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SEARCH_LIMIT = timedelta(days=366 * 5)  # e.g. "0 0 31 2 *" never matches: say so instead of looping


class ScheduleError(ValueError):
    pass


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ScheduleError(f"{name}: bad step in {part!r}")
        if body == "*":
            start, end = low, high
        elif re.fullmatch(r"\d+-\d+", body):
            start, end = map(int, body.split("-"))
        elif body.isdigit():
            start = end = int(body)
            if step:
                end = high
        else:
            raise ScheduleError(f"{name}: {part!r} is not a number, range, list or */step")
        if not low <= start <= end <= high:
            raise ScheduleError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    text: str
    interval_s: int | None = None
    fields: tuple[frozenset[int], ...] = ()
    dom_any: bool = True
    dow_any: bool = True

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        text = " ".join(str(text).split())
        every = _EVERY.fullmatch(text)
        if every:
            seconds = int(every.group(1)) * _UNIT_S[every.group(2)]
            if seconds < 1:
                raise ScheduleError("an interval must be at least 1 second")
            return cls(text, interval_s=seconds)
        parts = text.split(" ")
        if len(parts) != 5:
            raise ScheduleError(f"{text!r}: a cron schedule has 5 fields (minute hour day month weekday), "
                                "or use `every N{s,m,h,d}`")
        fields = tuple(_field(p, name, low, high) for p, (name, low, high) in zip(parts, _FIELDS))
        dow = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
        return cls(text, None, (*fields[:4], dow), parts[2] == "*", parts[4] == "*")

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.fields[2]
        dow = (t.isoweekday() % 7) in self.fields[4]
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, now: datetime) -> datetime:
        """The first due time strictly after `now` (same timezone awareness as `now`)."""
        if self.interval_s is not None:
            return now + timedelta(seconds=self.interval_s)
        minutes, hours, _, months, _ = self.fields
        t = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = now + _SEARCH_LIMIT
        while t <= limit:
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if t.hour not in hours:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            if t.minute not in minutes:
                t += timedelta(minutes=1)
                continue
            return t
        raise ScheduleError(f"{self.text!r} never comes due")


def scrontab_lines(lab: str, schedule: Schedule, command: list[str], options: list[str]) -> list[str]:
    """The lab's block for `scrontab` (cron schedules only: scrontab has no seconds)."""
    import shlex

    if schedule.interval_s is not None:
        raise ScheduleError("scrontab takes cron schedules only; `every ...` needs the job chain")
    return [f"# fs3g-begin {lab}", *(f"#SCRON {o}" for o in options), f"{schedule.text} {shlex.join(command)}",
            f"# fs3g-end {lab}"]


def replace_block(crontab: str, lab: str, block: list[str]) -> str:
    """`crontab` with the lab's block replaced (or added, or removed when `block` is empty); other lines kept."""
    out: list[str] = []
    skipping = False
    for line in crontab.splitlines():
        if line.strip() == f"# fs3g-begin {lab}":
            skipping = True
            continue
        if skipping:
            if line.strip() == f"# fs3g-end {lab}":
                skipping = False
            continue
        out.append(line)
    return "\n".join([*out, *block]) + "\n" if out or block else ""
