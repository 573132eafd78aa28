"""Smoke test: the walk/plan benchmark runs end to end on a tiny tree (it asserts nothing about speed)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_walk_runs_end_to_end(tmp_path):
    results = tmp_path / "walk"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_walk.py"), "--files", "300", "--root", str(tmp_path / "tree"),
         "--repeats", "1", "--warmup", "0", "--results", str(results),
         "--fs3g", f"{shlex.quote(sys.executable)} -m fs3g_hpc"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.with_suffix(".json").read_text())
    commands = report["results"]["commands"]
    assert set(commands) == {"find", "fpart", "fs3g-plan", "fs3g-replan"}
    assert all(c["runs"] == 1 for c in commands.values())
    md = results.with_suffix(".md").read_text()
    assert "fs3g-plan / find" in md and "fs3g-replan / find" in md


def test_bench_upload_smoke(tmp_path):
    """Ours and s5cmd (installed by the script itself) upload a tiny data set to SeaweedFS, checked object by object."""
    results = tmp_path / "upload"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_upload.py"), "--smoke", "--peers", "s5cmd",
         "--results", str(results), "--data-dir", str(tmp_path / "data"),
         "--fs3g", f"{shlex.quote(sys.executable)} -m fs3g_hpc"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.with_suffix(".json").read_text())
    text = json.dumps(report)
    assert '"fs3g"' in text and '"s5cmd"' in text
    assert "fs3g / s5cmd" in results.with_suffix(".md").read_text()


def test_bench_download_smoke(tmp_path):
    """fs3g backs up a tiny data set to SeaweedFS, then fs3g restore and s5cmd download it, checked file by file."""
    results = tmp_path / "download"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_download.py"), "--smoke", "--peers", "s5cmd",
         "--results", str(results), "--data-dir", str(tmp_path / "data"), "--tmp-dir", str(tmp_path / "runs"),
         "--fs3g", f"{shlex.quote(sys.executable)} -m fs3g_hpc"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.with_suffix(".json").read_text())
    assert [s["scenario"] for s in report["scenarios"]] == ["small", "large"]
    for scenario in report["scenarios"]:
        commands = scenario["results"]["commands"]
        assert {"fs3g", "s5cmd"} <= set(commands)
        for name in ("fs3g", "s5cmd"):
            assert commands[name]["wall_s"]["median"] > 0 and commands[name]["cpu_s"]["median"] > 0
            assert all(s["verified"]["verified"] == scenario["dataset"]["files"] for s in commands[name]["samples"])
    assert "fs3g / s5cmd" in results.with_suffix(".md").read_text()
