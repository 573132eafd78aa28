"""The one-command benchmark runs its scenarios and writes the combined report with the goals (tiny data sets)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_run_all_smoke_writes_one_report_with_goals(tmp_path, seaweed_bucket):
    results = tmp_path / "latest"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--smoke", "--only", "a,e",
                           "--no-services", "--results", str(results)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert set(data["reports"]) == {"walk", "download"}
    goals = {g["goal"]: g for g in data["goals"]}
    plan = goals["(a) plan wall <= 1.0x find"]
    assert plan["ratio"] > 0 and plan["met"] in (True, False)
    assert goals["(e) restore 5,000 files: wall <= 1.0x s5cmd"]["ratio"] > 0
    text = (tmp_path / "latest.md").read_text()
    assert "## Goals" in text and "fs3g-plan / find" in text and "python3 benchmarks/run_all.py" in text


def test_include_previous_takes_the_json_beside_the_report_and_names_a_missing_one(tmp_path, capsys, monkeypatch):
    """--include-previous reads <results>-<name>.json; the raw JSON is not in git, so a missing one is one line on
    stderr and the scenario is left out (no traceback, nothing invented)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import run_all

    results = tmp_path / "latest"
    earlier = {"machine": {"date": "2026-11-27"}, "command_line": "python3 benchmarks/bench_walk.py",
               "results": {"commands": {}}}
    (tmp_path / "latest-walk.json").write_text(json.dumps(earlier))
    by_name = {s.name: s for s in run_all.SCENARIOS}
    report, run = run_all.previous_report(results, by_name["walk"])
    assert report == earlier
    assert run == {"ok": True, "seconds": 0, "prefix": str(tmp_path / "latest-walk"), "previous": True}
    assert capsys.readouterr().err == ""
    assert run_all.previous_report(results, by_name["sync"]) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'latest-sync.json'} not found" in err and "--only d" in err
