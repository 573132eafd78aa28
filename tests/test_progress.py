"""Progress lines, counters files and the local executor's stop path, without services."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fs3g_hpc.errors import UsageError
from fs3g_hpc.localexec import Interrupted, run_locally
from fs3g_hpc.runs.layout import RunLayout
from fs3g_hpc.runs.progress import (Counters, RunProgress, ShardProgress, eta_s, format_line,
                               log_interval_s, progress_file, read_progress, throughput, timing_fields, timing_line)


def test_format_line_gives_files_bytes_rates_and_eta():
    line = format_line("backup", Counters(1_234, 10_000, 50 * 10**6, 100 * 10**6, failed=3), 10.0)
    assert line == ("backup: 1,234/10,000 files, 47.68 MiB/95.37 MiB, 5.0 MB/s, 123 files/s, 3 failed, 00:00:10, "
                    "ETA 00:00:10")


def test_eta_by_bytes_then_files_and_unknown_before_any_progress():
    assert eta_s(Counters(0, 10, 0, 100), 5.0) is None
    assert eta_s(Counters(5, 10, 25, 100), 5.0) == pytest.approx(15.0)
    assert eta_s(Counters(2, 10, 0, 0), 4.0) == pytest.approx(16.0)  # no bytes (empty files): by files
    assert eta_s(Counters(10, 10, 100, 100), 5.0) == 0.0
    assert "ETA --:--:--" in format_line("x", Counters(0, 10, 0, 100), 1.0)


def test_log_interval_default_override_and_bad_values():
    assert log_interval_s({}) == 60.0
    assert log_interval_s({"FS3G_PROGRESS_INTERVAL_S": "0.5"}) == 0.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        with pytest.raises(UsageError, match="FS3G_PROGRESS_INTERVAL_S"):
            log_interval_s({"FS3G_PROGRESS_INTERVAL_S": bad})


def test_throughput_and_timing_line():
    assert throughput(100, 10**6, 4.0) == {"files_per_s": 25.0, "bytes_per_s": 250000.0}
    assert throughput(100, 10**6, 0.0) == {"files_per_s": None, "bytes_per_s": None}
    assert timing_line({"elapsed_s": 90061.0, "shard_phase_s": 30.0,
                        "throughput": throughput(100, 10**6, 4.0)}) == \
        "  elapsed   1-01:01:01 (shards 00:00:30), 25.0 files/s, 0.2 MB/s"
    assert timing_line({"elapsed_s": None, "shard_phase_s": None, "throughput": throughput(0, 0, None)}) == \
        "  elapsed   --:--:-- (shards --:--:--)"


def test_shard_progress_writes_its_counters_file_and_a_rewritten_terminal_line(tmp_path):
    layout = RunLayout(tmp_path)
    layout.results_dir.mkdir()
    done = {"files": 0}
    out = io.StringIO()
    path = progress_file(layout, 3)
    with ShardProgress("shard 3", lambda: Counters(done["files"], 4, done["files"] * 10, 40), out, path, tty=True):
        assert read_progress(path)["state"] == "running"
        done["files"] = 2
        time.sleep(1.3)  # one counters-file interval
        assert read_progress(path)["files_done"] == 2
        done["files"] = 4
    data = read_progress(path)
    assert (data["files_done"], data["bytes_done"], data["state"]) == (4, 40, "ended")
    assert data["started"] <= data["updated"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert out.getvalue().startswith("\rshard 3: ") and "\033[K" in out.getvalue() and out.getvalue().endswith("\n")
    assert not [p for p in layout.results_dir.iterdir() if p.name.startswith(".")]  # no temp file left


def test_run_progress_reads_running_shards_and_finished_ones_once(tmp_path):
    layout = RunLayout(tmp_path)
    layout.results_dir.mkdir()
    shards = [{"index": i, "files": 10, "bytes": 1000} for i in range(3)]

    def write(index: int, files: int) -> None:
        progress_file(layout, index).write_text(json.dumps({"files_done": files, "bytes_done": files * 100,
                                                            "failed": 0, "started": 1.0, "updated": 2.0}))

    out = io.StringIO()
    progress = RunProgress("restore", layout, shards, out, log_interval=0.01, tty=False)
    write(0, 10)
    write(1, 4)
    progress.tick([1], [0], force=True)
    assert progress.totals() == Counters(14, 30, 1400, 3000)
    write(0, 1)  # a finished shard is not read again (and costs nothing more)
    write(1, 7)
    progress.tick([1], [0], force=True)
    assert progress.totals() == Counters(17, 30, 1700, 3000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("ETA " + lines[1].rsplit("ETA ", 1)[1])
    assert " restore: 17/30 files" in lines[1] and "\r" not in out.getvalue()
    progress.tick([1], [0])  # not due yet: nothing read, nothing shown
    assert len(out.getvalue().splitlines()) == 2


def test_timing_fields_span_from_the_start_and_over_the_shards(tmp_path):
    layout = RunLayout(tmp_path)
    layout.results_dir.mkdir()
    for index, (start, end) in enumerate([(1000.0, 1010.0), (1005.0, 1020.0)]):
        progress_file(layout, index).write_text(json.dumps({"files_done": 1, "bytes_done": 1, "started": start,
                                                            "updated": end}))
    fields = timing_fields(layout, 3, "1970-01-01T00:16:30+00:00", 50, 5000, now=1030.0)  # started at 990 s
    assert (fields["elapsed_s"], fields["shard_phase_s"]) == (40.0, 20.0)
    assert fields["throughput"] == {"files_per_s": 1.25, "bytes_per_s": 125.0}
    assert fields["shard_throughput"] == {"files_per_s": 2.5, "bytes_per_s": 250.0}


# A shard that ignores SIGTERM; it says so in RUN_DIR/ready-N once it does (argv: x RUN_DIR --shard N).
IGNORES_TERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "open(f'{sys.argv[2]}/ready-{sys.argv[4]}', 'w').close(); time.sleep(60)")


def signal_when(condition, sig: signal.Signals) -> None:
    def wait_then_signal() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), sig)
    threading.Thread(target=wait_then_signal, daemon=True).start()


def test_a_shard_that_ignores_the_signal_is_killed_after_the_grace_and_nothing_merges(tmp_path):
    merged: list[int] = []
    got: list[Interrupted] = []
    signal_when(lambda: len(list(tmp_path.glob("ready-*"))) == 2, signal.SIGTERM)
    started = time.monotonic()
    code = run_locally(tmp_path, 3, [sys.executable, "-c", IGNORES_TERM], 2, shard_command="x",
                       merge=lambda: merged.append(1) or 0, on_interrupt=lambda i: got.append(i) or 130,
                       stop_grace_s=1.0)
    assert code == 130 and merged == []
    assert got == [Interrupted("SIGTERM", [], [0, 1], 1)]
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_shards_get_sigterm_when_their_parent_is_killed_outright(tmp_path):
    """kill -9 of the parent: the kernel sends every shard SIGTERM, which saves its state, instead of leaving it
    uploading."""
    marker, ready = tmp_path / "stopped", tmp_path / "ready"
    child = (f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'a')"
             f".write('x'), sys.exit(0))); open({str(ready)!r}, 'w').close(); time.sleep(60)")
    parent = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from fs3g_hpc.localexec import run_locally
        run_locally(Path({str(tmp_path)!r}), 1, [sys.executable, "-c", {child!r}], 1, shard_command="x",
                    merge=lambda: 0, on_interrupt=lambda i: 130)
        """)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 30
    while not ready.exists():  # the shard's handler is installed
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the shard was not told its parent died"
        time.sleep(0.05)


def test_run_progress_on_a_terminal_rewrites_one_line_and_clears_it(tmp_path):
    layout = RunLayout(tmp_path)
    layout.results_dir.mkdir()
    out = io.StringIO()
    progress = RunProgress("compare", layout, [{"index": 0, "files": 2, "bytes": 0}], out, tty=True)
    progress.tick([0], [], force=True)
    progress.tick([], [0], force=True)
    progress.close()
    assert out.getvalue().count("\rcompare: 0/2 files") == 2 and "\n" not in out.getvalue()
    assert out.getvalue().endswith("\033[K\r\033[K")
