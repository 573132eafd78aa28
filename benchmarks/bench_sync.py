#!/usr/bin/env python3
"""No-op incremental benchmark (scenario d): a backup or sync of the 5,000-file tree when nothing changed.

    python3 benchmarks/bench_sync.py [--repeats 5] [--warmup 1] [--fs3g "python3 -m fs3g_hpc"]
                                     [--peers s5cmd,s5cmd-16,aws,rclone] [--smoke] [--results BASE]

Data: the seeded small-file set of bench_upload.py (5,000 files of 1–16 KiB, benchmarks/data/upload-small-5k/;
--smoke: 50 files, benchmarks/data/upload-small-50/, 1 repeat, no warm-up).

Setup, once and outside every timed span: a fresh bucket on SeaweedFS; a lab policy (as bench_download's: roots
[DATASET], s3 {bucket, prefix: bench, endpoint_url}, run_root in a temporary directory, every other setting at its
default) and `FS3G backup --config P --executor local --wait`, which uploads everything and writes the lab's
catalog; each peer's own sync command (the same argv as its timed row) once, into its own prefix. Each prefix is
checked against the dataset (harness.verify_upload), then the script sleeps past the next whole second and
takes a snapshot of every prefix (key, size, ETag, LastModified): a re-upload would change LastModified.

Timed commands (stdout to /dev/null), alternating after the warm-up, nothing changed in between:
- fs3g:       FS3G backup --config P --executor local --wait   (plan finds 0 changed; the merge records the catalog)
- fs3g-plan:  FS3G plan --config P --run-dir {run_dir}/plan    (what a cron'd incremental costs before any
              transfer; --run-dir only puts the run directory in a fresh temporary directory per run)
- s5cmd:      s5cmd --endpoint-url URL --log error sync SRC/ s3://BUCKET/s5cmd/
- s5cmd-16:   the same with --numworkers 16, into s3://BUCKET/s5cmd-16/
- aws:        aws --endpoint-url URL s3 sync --only-show-errors SRC s3://BUCKET/aws/
- rclone:     env -u AWS_CA_BUNDLE rclone sync --fast-list --size-only SRC bench:BUCKET/rclone
              (remote from RCLONE_CONFIG_BENCH_* variables, as in bench_upload)

After every run, outside the timed span: the SeaweedFS process's CPU during the run (from /proc), then the check
that nothing was uploaded or changed: the tool's prefix lists exactly as in the snapshot (same keys, sizes, ETags
and LastModified); for fs3g also that the run made exactly one new run directory whose report.json says planned 0,
uploaded 0, failed 0, unchanged = the dataset; for fs3g-plan that plan.json says planned 0 files in 0 shards.
Anything else raises (exit 1).

Results: benchmarks/results/sync-latest.md and .json (--results BASE writes BASE.md and BASE.json; sync-smoke with
--smoke), with ours/peer ratios and the goal of the issue, (d) <= 0.5x the fastest peer's wall time.

From Python: `bench_sync.run(["--results", "/some/dir/sync", ...])` returns the JSON document (and writes it);
`main(argv)` returns the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import (DATA, PEERS, SMALL_FILES, SMOKE_SMALL_FILES, SetupHook, add_run_args, all_ratios,  # noqa: E402
                     attach_records, backup, cpu_delta, dataset_summary, default_command_line, ensure_peers, fill,
                     fs3g_source, lab_policy, log, machine_info, medians, names_from, proc_cpu_s, publish,
                     render_scenarios_report, results_base, rounds_and_peers, run_alternating, run_untimed, s3_client,
                     scratch_bucket, seaweed_sentence, server_and_versions, services_env, settle_run_args, shim_note,
                     small_files, source_note, tool_env, upload_dataset, verify_upload)

OURS = ("fs3g", "fs3g-plan")
FS3G_PREFIX = "bench"  # the prefix of the lab policy (the download scenario's too)
GOAL = 0.5  # (d): the no-op incremental's wall <= 0.5 x the fastest peer's


class SyncChanged(RuntimeError):
    """A no-op run uploaded, changed or removed something (or fs3g planned work)."""


# ----------------------------------------------------------------------------------------------------- listing


def snapshot(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str, str]]:
    """key -> (size, ETag, LastModified) of every data object under prefix (fs3g's catalog snapshots, under
    catalog/, describe the data and are not counted)."""
    out: dict[str, tuple[int, str, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if o["Key"][len(prefix):].lstrip("/").startswith("catalog/"):
                continue
            out[o["Key"]] = (o["Size"], o.get("ETag", "").strip('"'), o["LastModified"].isoformat())
    return out


def compare_snapshots(before: dict[str, tuple[int, str, str]], after: dict[str, tuple[int, str, str]],
                      prefix: str) -> dict[str, Any]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    if added or removed or changed:
        raise SyncChanged(f"under {prefix!r}: {len(added)} added, {len(removed)} removed, {len(changed)} rewritten "
                          f"(e.g. {(added + removed + changed)[:3]}; before {len(before)} objects, after "
                          f"{len(after)})")
    return {"objects": len(after), "max_last_modified": max((v[2] for v in after.values()), default=None)}


# ---------------------------------------------------------------------------------------------------- commands


def peer_commands(tools: dict[str, str], endpoint: str, src: Path, bucket: str,
                  peers: list[str]) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, the prefix it syncs into)."""
    s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
    all_peers = {
        "s5cmd": ([*s5, "sync", f"{src}/", f"s3://{bucket}/s5cmd/"], "s5cmd/"),
        "s5cmd-16": ([*s5, "--numworkers", "16", "sync", f"{src}/", f"s3://{bucket}/s5cmd-16/"], "s5cmd-16/"),
        "aws": ([tools["aws"], "--endpoint-url", endpoint, "s3", "sync", "--only-show-errors", str(src),
                 f"s3://{bucket}/aws/"], "aws/"),
        # env -u: rclone must not see the machine's AWS_CA_BUNDLE; env execs rclone (same process, same rusage).
        "rclone": (["env", "-u", "AWS_CA_BUNDLE", tools["rclone"], "sync", "--fast-list", "--size-only", str(src),
                    f"bench:{bucket}/rclone"], "rclone/"),
    }
    return {name: all_peers[name] for name in PEERS if name in peers}


def lab_runs(policy_runs: Path) -> set[Path]:
    lab = policy_runs / "bench"
    return {p for p in lab.iterdir() if p.is_dir()} if lab.is_dir() else set()


def check_fs3g_report(run_dir: Path, n_files: int) -> dict[str, Any]:
    rep = json.loads((run_dir / "report.json").read_text())
    got = {"planned": rep["planned"]["files"], "uploaded": rep["uploaded"]["files"],
           "failed": rep["failed"]["files"], "unchanged": rep["unchanged"]["files"]}
    if got != {"planned": 0, "uploaded": 0, "failed": 0, "unchanged": n_files}:
        raise SyncChanged(f"{run_dir}/report.json: {got}, expected planned 0, uploaded 0, failed 0, unchanged "
                          f"{n_files}")
    return got


def check_fs3g_plan(run_dir: Path) -> dict[str, Any]:
    plan = json.loads((run_dir / "plan.json").read_text())
    got = {"planned": plan["planned"]["files"], "shards": plan["shard_count"]}
    if got != {"planned": 0, "shards": 0}:
        raise SyncChanged(f"{run_dir}/plan.json: {got}, expected 0 files planned in 0 shards")
    return got


def make_hook(name: str, *, s3: Any, bucket: str, prefix: str, before: dict[str, tuple[int, str, str]],
              runs_root: Path, n_files: int, tmp_parent: Path | None, server_pid: int | None,
              records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh {run_dir} (used by fs3g-plan); after the run, outside the timed span: the server's CPU, the
    check that nothing changed under the tool's prefix (and fs3g's own record of it), then {run_dir} removed."""

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-sync-{name}-", dir=tmp_parent))
        ok = False
        try:
            runs0 = lab_runs(runs_root) if name == "fs3g" else set()
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, {"run_dir": str(run_dir)})
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec: dict[str, Any] = {"server_cpu_s": cpu_delta(cpu0, cpu1)}
                    rec.update(compare_snapshots(before, snapshot(s3, bucket, prefix), prefix))
                    rec["unchanged"] = True  # compare_snapshots raised otherwise
                    if name == "fs3g":
                        new = sorted(lab_runs(runs_root) - runs0)
                        if len(new) != 1:
                            raise SyncChanged(f"fs3g backup made {len(new)} run directories, expected 1: {new}")
                        rec["fs3g"] = check_fs3g_report(new[0], n_files)
                    elif name == "fs3g-plan":
                        rec["fs3g"] = check_fs3g_plan(run_dir / "plan")
                    records.append(rec)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)

    return hook


# ----------------------------------------------------------------------------------------------------- running


def run_scenario(data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
                 args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    manifest = data["manifest"]
    s3 = s3_client(endpoint, env)
    setup_dir = Path(tempfile.mkdtemp(prefix="fs3g-bench-sync-setup-", dir=args.tmp_dir))
    setup_s: dict[str, float] = {}
    try:
        with scratch_bucket(s3, stem="bench-sync") as bucket:
            policy = setup_dir / "lab.yaml"
            runs_root = setup_dir / "runs"
            policy.write_text(lab_policy(src, bucket, FS3G_PREFIX, endpoint, runs_root))
            peers = peer_commands(tools, endpoint, src, bucket, args.peers)
            log(f"setup: {data['files']:,} files from {src} into bucket {bucket}: fs3g backup, then "
                f"{', '.join(peers) or 'no peer'} once each (untimed)")
            setup_s["fs3g"] = backup(args.fs3g_argv, policy, env)
            prefixes = {"fs3g": f"{FS3G_PREFIX}/", "fs3g-plan": f"{FS3G_PREFIX}/"}
            verify_upload(_listing(s3, bucket, f"{FS3G_PREFIX}/"), f"{FS3G_PREFIX}/", manifest, strict=False)
            for name, (argv, prefix) in peers.items():
                setup_s[name] = run_untimed(argv, env)
                verify_upload(_listing(s3, bucket, prefix), prefix, manifest, strict=True)
                prefixes[name] = prefix
            log("setup took " + ", ".join(f"{k} {v:.1f} s" for k, v in setup_s.items()))
            # A re-upload in the same second as the first upload could keep LastModified: start a second later.
            time.sleep(1.1)
            before = {p: snapshot(s3, bucket, p) for p in set(prefixes.values())}

            commands: dict[str, list[str]] = {}
            if "fs3g" in args.ours:
                commands["fs3g"] = [*args.fs3g_argv, "backup", "--config", str(policy), "--executor", "local",
                                    "--wait"]
            if "fs3g-plan" in args.ours:
                commands["fs3g-plan"] = [*args.fs3g_argv, "plan", "--config", str(policy), "--run-dir",
                                         "{run_dir}/plan"]
            commands.update({name: argv for name, (argv, _) in peers.items()})
            records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
            setup = {name: make_hook(name, s3=s3, bucket=bucket, prefix=prefixes[name],
                                     before=before[prefixes[name]], runs_root=runs_root, n_files=data["files"],
                                     tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                     for name in commands}
            results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                      setup=setup)
    finally:
        shutil.rmtree(setup_dir, ignore_errors=True)
    attach_records(results, records)
    for c in results["commands"].values():
        c["throughput_mib_s"] = None  # nothing is transferred
        c["files_per_s"] = data["files"] / c["wall_s"]["median"]  # files checked per second
    ours = [n for n in commands if n in OURS]
    peer_names = [n for n in commands if n not in OURS]
    return {"scenario": "d-noop-incremental", "results": results, "setup_s": setup_s,
            "prefixes": {n: prefixes[n] for n in commands}, "ratios": all_ratios(results, ours, peer_names),
            "dataset": dataset_summary(data)}


def _listing(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {k: {"size": v[0], "etag": v[1]} for k, v in snapshot(s3, bucket, prefix).items()}


def goal_check(run: dict[str, Any]) -> dict[str, Any]:
    """(d): ours' median wall / the fastest peer's median wall <= GOAL, for fs3g and fs3g-plan."""
    cmds = run["results"]["commands"]
    peers = {n: c["wall_s"]["median"] for n, c in cmds.items() if n not in OURS}
    out: dict[str, Any] = {"scenario": "d", "target_ratio": GOAL, "metric": "median wall, ours / fastest peer"}
    if not peers:
        return {**out, "fastest_peer": None}
    fastest = min(peers, key=peers.__getitem__)
    out.update(fastest_peer=fastest, fastest_peer_wall_s=peers[fastest])
    for name in OURS:
        if name in cmds:
            r = cmds[name]["wall_s"]["median"] / peers[fastest]
            out[name] = {"wall_s": cmds[name]["wall_s"]["median"], "ratio": r, "met": r <= GOAL}
    return out


def goal_text(goal: dict[str, Any]) -> str:
    if not goal.get("fastest_peer"):
        return "Goal (d), ours <= 0.5x the fastest peer: no peer ran."
    parts = []
    for name in OURS:
        g = goal.get(name)
        if g:
            parts.append(f"`{name}` {g['wall_s']:.3f} s = **{g['ratio']:.2f}x** "
                         f"({'met' if g['met'] else 'NOT met'})")
    return (f"**Goal (d)**: a no-op incremental in <= {GOAL}x the wall time of the fastest peer "
            f"(`{goal['fastest_peer']}`, median {goal['fastest_peer_wall_s']:.3f} s): " + "; ".join(parts) + ". "
            "The goal is about `fs3g` (the whole backup); `fs3g-plan` shows the part before any transfer.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=f"{SMOKE_SMALL_FILES} files, 1 repeat, no warm-up")
    ap.add_argument("--small-files", type=int, help=f"files in the tree (default {SMALL_FILES})")
    ap.add_argument("--ours", default=",".join(OURS), help=f"comma-separated subset of {','.join(OURS)}")
    ap.add_argument("--fs3g", default="python3 -m fs3g_hpc",
                    help='how to run fs3g (default "python3 -m fs3g_hpc", run from the repository root)')
    ap.add_argument("--results",
                    help="report path without suffix (default benchmarks/results/sync-latest, or sync-smoke with "
                         "--smoke); .md and .json are written. A directory (existing, or ending in /) gets "
                         "sync-latest.md/.json (sync-smoke with --smoke) inside it")
    return ap


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write BASE.md and BASE.json; return the JSON document. Raises on any failure."""
    ap = build_parser()
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    args.ours = names_from(ap, args.ours, OURS, "ours")
    base = results_base(args.results, "sync-smoke" if args.smoke else "sync-latest")
    args.fs3g_argv = shlex.split(args.fs3g)
    if not args.fs3g_argv:
        ap.error("--fs3g is empty (fs3g makes the first backup)")

    senv = services_env()
    tools = ensure_peers(install=not args.no_install)
    endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
    env = tool_env(senv, endpoint)
    server_pid, versions = server_and_versions(tools)
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))

    source_at_start = fs3g_source()
    data = upload_dataset("small", small_files(args), args)
    run_ = run_scenario(data, tools=tools, env=env, endpoint=endpoint, args=args, server_pid=server_pid)
    goal = goal_check(run_)

    note = (goal_text(goal) + "\n\n"
            + seaweed_sentence(endpoint, versions.get("seaweedfs"), "the same machine") + " Setup, untimed: "
            "one bucket; the tree backed up by `fs3g backup --executor local --wait` (keys "
            f"`{FS3G_PREFIX}/smallfile/<path>`, the lab's catalog written) and synced once by each peer into its own "
            "prefix; every prefix checked against the dataset. Timed: the same commands again with nothing "
            "changed. After each run (untimed) the tool's prefix must list exactly as before (keys, sizes, ETags, "
            "LastModified), fs3g's report.json must say 0 planned, 0 uploaded, every file unchanged, and "
            "fs3g-plan's plan.json 0 files planned. How each tool decides a file is unchanged: fs3g compares size "
            "and mtime with its catalog (no request for the files themselves); aws and s5cmd list the prefix and "
            "compare size and mtime with LastModified; rclone lists the prefix (`--fast-list`) and compares sizes "
            "(`--size-only`). The fs3g backup row includes the merge (which writes the catalog and the report) and "
            "the start of the local executor. "
            + rounds_and_peers(args.warmup, versions))
    note += shim_note(args.fs3g_argv)
    if args.note:
        note += " " + args.note
    source, sentence = source_note(source_at_start)
    note += sentence
    machine = machine_info()
    cmdline = default_command_line()
    md = render_scenarios_report(
        [run_], machine, note, cmdline, title="No-op incremental benchmark, scenario (d) (SeaweedFS on loopback)",
        ratio_summary=True,
        scenario_note=lambda r: ", nothing changed; setup " + ", ".join(f"{k} {v:.1f} s"
                                                                       for k, v in r["setup_s"].items()))
    doc = {"title": "No-op incremental benchmark (d)", "machine": machine, "machine_note": note,
           "command_line": cmdline, "endpoint": endpoint, "fs3g": args.fs3g, "fs3g_source": source,
           "versions": versions, "smoke": args.smoke, "goal": goal,
           "medians": medians(run_["results"]["commands"]),
           "scenarios": [run_], "results_base": str(base)}
    publish(base, md, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        # CommandFailed, SyncChanged, UploadIncomplete and the services/peers errors are all RuntimeErrors.
        log(f"{type(e).__name__}: {e}")
        return 1
    except FileExistsError as e:
        log(f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
