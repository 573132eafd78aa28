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
