"""Progress of a sharded run (backup, restore, compare): each shard task's counters file, the live line of the local
executor, the line every N seconds in batch logs, and the elapsed time and throughput the merges report.

    <run_dir>/results/shard-N.progress.json   {"files_done", "files", "bytes_done", "bytes", "failed",
                                               "started", "updated", "state"}   (times: seconds since the epoch)

Each shard task rewrites its counters file at most once per PROGRESS_FILE_INTERVAL_S (temp file + rename, so a
reader never sees half of one; no fsync: a lost update is rewritten a second later, and the journal, not this file,
is what a resume trusts), and once more when it ends ("state": "ended"). A rerun of the shard starts it afresh.

Cost: the local executor re-reads only the counters files of the shards running now (at most its parallelism, ~200
bytes each), keeping the last counters of the finished ones, so a refresh costs the same at 1 M files as at 10;
journals are never re-read for progress.

Intervals: a terminal gets a `\\r`-rewritten line every TTY_INTERVAL_S; a batch log (stderr not a terminal) a plain
timestamped line every FS3G_PROGRESS_INTERVAL_S seconds (default DEFAULT_LOG_INTERVAL_S), the same setting for the
local executor's parent and for each array task's own log.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TextIO

from ..errors import UsageError
from ..model.sizes import format_duration, format_size
from .layout import FILE_MODE, RunLayout

PROGRESS_FILE_INTERVAL_S = 1.0
TTY_INTERVAL_S = 0.5
DEFAULT_LOG_INTERVAL_S = 60.0
INTERVAL_ENV = "FS3G_PROGRESS_INTERVAL_S"
LINE_MAX_CHARS = 200  # a terminal line: longer ones wrap and break the `\r` rewrite


def log_interval_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between progress lines in a batch log: FS3G_PROGRESS_INTERVAL_S, or DEFAULT_LOG_INTERVAL_S."""
    text = (os.environ if environ is None else environ).get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_LOG_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{INTERVAL_ENV}={text!r} is not a positive number of seconds",
                         hint=f"e.g. {INTERVAL_ENV}=60, or unset it for the default {DEFAULT_LOG_INTERVAL_S:.0f} s")
    return value


@dataclass(frozen=True)
class Counters:
    files_done: int
    files: int
    bytes_done: int
    bytes: int
    failed: int = 0

    def __add__(self, other: "Counters") -> "Counters":
        return Counters(self.files_done + other.files_done, self.files + other.files,
                        self.bytes_done + other.bytes_done, self.bytes + other.bytes, self.failed + other.failed)


ZERO = Counters(0, 0, 0, 0)


def eta_s(c: Counters, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far: by bytes when there are bytes to go, else by files; None when unknown."""
    if elapsed_s <= 0:
        return None
    if c.bytes and c.bytes_done < c.bytes:
        rate = c.bytes_done / elapsed_s
        return (c.bytes - c.bytes_done) / rate if rate > 0 else None
    if c.files_done < c.files:
        rate = c.files_done / elapsed_s
        return (c.files - c.files_done) / rate if rate > 0 else None
    return 0.0


def format_line(label: str, c: Counters, elapsed_s: float) -> str:
    """`backup: 1,234/10,000 files, 1.2 GiB/5 GiB, 12.3 MB/s, 45 files/s, 0 failed, 00:01:02, ETA 00:05:12`."""
    seconds = max(elapsed_s, 1e-6)
    return (f"{label}: {c.files_done:,}/{c.files:,} files, {format_size(c.bytes_done)}/{format_size(c.bytes)}, "
            f"{c.bytes_done / seconds / 1e6:.1f} MB/s, {c.files_done / seconds:,.0f} files/s, {c.failed:,} failed, "
            f"{format_duration(elapsed_s)}, ETA {format_duration(eta_s(c, elapsed_s))}")


def throughput(files: int, size_bytes: int, elapsed_s: float | None) -> dict:
    """The report fields of a rate: files/s and bytes/s over `elapsed_s` (None when no time passed)."""
    if not elapsed_s or elapsed_s <= 0:
        return {"files_per_s": None, "bytes_per_s": None}
    return {"files_per_s": round(files / elapsed_s, 3), "bytes_per_s": round(size_bytes / elapsed_s, 1)}


def timing_fields(layout: RunLayout, shard_count: int, started_iso: str | None, files: int,
                  size_bytes: int, now: float | None = None) -> dict:
    """What a merge adds to report.json: elapsed_s from the run's start (plan, prepare) to now, shard_phase_s from
    the first shard task's start to the last one's last update (their counters files), and throughput over both."""
    from datetime import datetime

    now = time.time() if now is None else now
    elapsed = None
    if started_iso:
        try:
            elapsed = max(now - datetime.fromisoformat(started_iso).timestamp(), 0.0)
        except ValueError:
            elapsed = None
    first = last = None
    for index in range(shard_count):  # one tiny file per shard, not a journal
        data = read_progress(progress_file(layout, index))
        if data is None:
            continue
        first = data["started"] if first is None else min(first, data["started"])
        last = data["updated"] if last is None else max(last, data["updated"])
    phase = round(max(last - first, 0.0), 3) if first is not None and last is not None else None
    elapsed = None if elapsed is None else round(elapsed, 3)  # the rates below are of the figures shown
    return {
        "started": started_iso,
        "elapsed_s": elapsed,
        "shard_phase_s": phase,
        "throughput": throughput(files, size_bytes, elapsed),
        "shard_throughput": throughput(files, size_bytes, phase),
    }


def timing_line(data: Mapping) -> str:
    """The summary line of report.json's timing fields: `  elapsed   00:01:02 (shards 00:00:50), 45 files/s,
    12.3 MB/s`."""
    rate = data.get("throughput") or {}
    speed = (f", {rate['files_per_s']:,.1f} files/s, {rate['bytes_per_s'] / 1e6:.1f} MB/s"
             if rate.get("files_per_s") is not None else "")
    return (f"  elapsed   {format_duration(data.get('elapsed_s'))} (shards "
            f"{format_duration(data.get('shard_phase_s'))}){speed}")


def progress_file(layout: RunLayout, shard: int) -> Path:
    return layout.result_file(shard, ".progress.json")


def read_progress(path: Path) -> dict | None:
    """A shard's counters file, or None when it has none yet (or an unreadable one: a display never fails a run)."""
    try:
        with open(path, encoding="ascii") as f:
            data = json.load(f)
        return data if isinstance(data, dict) and "files_done" in data else None
    except (OSError, ValueError):
        return None


def _write_progress(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


class _Display:
    """One progress line on `stream`: rewritten in place on a terminal, a timestamped line in a log."""

    def __init__(self, stream: TextIO, log_interval: float, tty: bool | None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = TTY_INTERVAL_S if self.tty else log_interval
        self.shown = False

    def show(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r" + line[:LINE_MAX_CHARS] + "\033[K")
        else:
            self.stream.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


class ShardProgress:
    """`with ShardProgress(label, counters, stream, path):` around a shard task's work: its counters file every
    second, its line on `stream` (every TTY_INTERVAL_S on a terminal, every log interval in a batch log), and a last
    line and counters file at the end."""

    def __init__(self, label: str, counters: Callable[[], Counters], stream: TextIO, path: Path | None, *,
                 log_interval: float | None = None, tty: bool | None = None):
        self.label = label
        self.counters = counters
        self.path = path
        self.display = _Display(stream, log_interval_s() if log_interval is None else log_interval, tty)
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="fs3g-progress", daemon=True)

    def line(self) -> str:
        return format_line(self.label, self.counters(), time.monotonic() - self.started)

    def _save(self, state: str) -> None:
        if self.path is None:
            return
        c = self.counters()
        try:
            _write_progress(self.path, {"files_done": c.files_done, "files": c.files, "bytes_done": c.bytes_done,
                                        "bytes": c.bytes, "failed": c.failed, "started": self.started_wall,
                                        "updated": time.time(), "state": state})
        except OSError:
            pass  # progress is a display: a full or read-only results directory fails the journal, not this

    def _loop(self) -> None:
        step = min(PROGRESS_FILE_INTERVAL_S, self.display.interval)
        next_line = time.monotonic() + self.display.interval
        while not self.stop.wait(step):
            self._save("running")
            if time.monotonic() >= next_line:
                self.display.show(self.line())
                next_line = time.monotonic() + self.display.interval

    def __enter__(self) -> "ShardProgress":
        self._save("running")
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._save("ended")
        self.display.show(self.line())
        if self.display.tty:
            self.display.stream.write("\n")


class RunProgress:
    """The local executor's line across all shards of a run, from the shards' counters files.

    `tick(running, finished)` is cheap to call often: it does nothing until the display is due, then reads the
    counters files of the running shards and, once, of each newly finished one."""

    def __init__(self, label: str, layout: RunLayout, shards: Sequence[Mapping], stream: TextIO, *,
                 log_interval: float | None = None, tty: bool | None = None):
        self.label = label
        self.layout = layout
        self.planned = {int(s["index"]): Counters(0, int(s["files"]), 0, int(s.get("bytes", 0))) for s in shards}
        self.known: dict[int, Counters] = {}
        self.final: set[int] = set()
        self.display = _Display(stream, log_interval_s() if log_interval is None else log_interval, tty)
        self.started = time.monotonic()
        self.next_line = self.started + self.display.interval

    def _read(self, index: int) -> None:
        data = read_progress(progress_file(self.layout, index))
        if data is not None:
            plan = self.planned.get(index, ZERO)
            self.known[index] = Counters(int(data["files_done"]), plan.files, int(data["bytes_done"]), plan.bytes,
                                         int(data.get("failed", 0)))

    def totals(self) -> Counters:
        total = ZERO
        for index, plan in self.planned.items():
            seen = self.known.get(index)
            total += seen if seen is not None else plan
        return total

    def line(self) -> str:
        return format_line(self.label, self.totals(), time.monotonic() - self.started)

    def tick(self, running: Iterable[int], finished: Iterable[int], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_line:
            return
        for index in finished:
            if index not in self.final:
                self._read(index)
                self.final.add(index)
        for index in running:
            self._read(index)
        self.display.show(self.line())
        self.next_line = now + self.display.interval

    def close(self) -> None:
        """Clear the live line (a terminal) before the merge prints its summary."""
        self.display.clear()
