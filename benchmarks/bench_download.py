#!/usr/bin/env python3
"""Download (restore) benchmark: `fs3g restore` beside s5cmd cp and aws s3 cp, against SeaweedFS.

    python3 benchmarks/bench_download.py [--scenario small|large|all] [--repeats 5] [--warmup 1]
                                         [--fs3g "python3 -m fs3g_hpc"] [--peers s5cmd,s5cmd-16,aws] [--smoke]

Scenarios (the seeded data sets of bench_upload.py, generated once under benchmarks/data/ and reused):
- small: the 5,000 files of 1–16 KiB (benchmarks/data/upload-small-5k/);
- large: the 1 GiB file (benchmarks/data/upload-large-1g/file.bin).
--smoke: 50 small files and a 20 MiB "large" file, 1 repeat, no warm-up (for a quick test).

Setup, once per scenario and outside every timed span: a fresh bucket on SeaweedFS, a lab policy
(`roots: [DATASET]`, `s3: {bucket, prefix: bench, endpoint_url}`, `run_root` in a temporary directory, every other
setting at its default: shards.max_files 100,000, so the small tree is one shard and restores as one process;
small_file_threshold_bytes 128 KiB; restore.download_workers 16), then `FS3G backup --config P --executor local
--wait`, so the objects carry fs3g's key layout (bench/smallfile/<abs path>, bench/largefile/<abs path>) and the
lab has a catalog.

Timed commands (stdout to /dev/null), each into a fresh, empty destination directory {dest} per run:
- fs3g:        FS3G restore --config P --dest {dest} --executor local --run-dir {run_dir}/restore
               (everything a user runs: selection from the catalog, the readiness check, the shard process, the
               merge; --run-dir only keeps the run directory in the per-run temporary directory)
- fs3g-shard:  FS3G restore-shard {run_dir}/restore --shard 0, on a run directory prepared untimed by the same calls
               `fs3g restore` makes before it starts the shard (prepare_restore, then stage), through
               `PYTHON -c` with the interpreter of --fs3g (so only when --fs3g is "PYTHON... -m fs3g_hpc")
- s5cmd:       s5cmd --endpoint-url URL --log error cp 's3://BUCKET/bench/smallfile/*' {dest}/   (largefile/ for large)
- s5cmd-16:    the same with --numworkers 16
- aws:         aws --endpoint-url URL s3 cp --recursive --only-show-errors s3://BUCKET/bench/ {dest}/

After every run, outside the timed span: the SeaweedFS process's CPU during the run (from /proc), then the
destination is checked: exactly the dataset's files (at the path each tool derives from the key: DEST/<relative
path> for fs3g, DEST/<key after bench/smallfile/> for s5cmd, DEST/<key after bench/> for aws), each with the
dataset's size and MD5, and nothing else; anything missing, short, different or extra raises. For fs3g the
restored mtimes are counted too (reported, not required). The destination is then removed and the page cache's
dirty pages written back (`sync`), so no run's writeback lands in the next run.

Results: benchmarks/results/download-latest.md and .json (--results; download-smoke with --smoke), with the
machine, the command line, every sample and ours/peer ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import (DATA, SCENARIO_SMOKE_HELP, CommandFailed, RestoreIncomplete, SetupHook, add_rates,  # noqa: E402
                     add_run_args, add_upload_scenario_args, all_ratios, attach_records, aws_env, backup, cpu_delta, dataset_summary,
                     default_command_line, ensure_peers, fill, fs3g_source, lab_policy, list_prefix, log, machine_info,
                     proc_cpu_s, publish, render_scenarios_report, rounds_and_peers, run_alternating, s3_client,
                     scratch_bucket, seaweed_sentence, server_and_versions, services_env, settle_run_args, shim_note,
                     source_note, upload_datasets, verify_dest)

PEERS = ("s5cmd", "s5cmd-16", "aws")
OURS = ("fs3g", "fs3g-shard")
PREFIX = "bench"
SMALL_THRESHOLD = 128 * 1024  # the policy default (storage.small_file_threshold_bytes): which key class a file gets

# What `fs3g restore` does before it starts the shard processes (cli.handlers.cmd_restore, then restore/run.py's stage
# loop), run untimed to prepare the run directory that fs3g-shard times.
PREPARE = """\
import sys
from pathlib import Path
from fs3g_hpc.config import load_policy
from fs3g_hpc.restore.select import RestoreRequest, prepare_restore
from fs3g_hpc.restore.stage import StageVerdict, stage
policy = load_policy(sys.argv[1])
request = RestoreRequest((), Path(sys.argv[2]).absolute(), policy.restore.tier, policy.restore.days, False)
layout, header = prepare_restore(policy, request, Path(sys.argv[3]))
report = stage(layout.run_dir)
if report.verdict is not StageVerdict.READY or header["shard_count"] != 1:
    sys.exit(f"prepared run: verdict {report.verdict.value}, {header['shard_count']} shards (need ready and 1)")
"""


# ----------------------------------------------------------------------------------------------------------- setup


def key_class(size: int) -> str:
    return "smallfile" if size <= SMALL_THRESHOLD else "largefile"


def backed_up_keys(s3: Any, bucket: str, src: Path, manifest: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """The key of every dataset file (rel -> key), and any other object under the prefix (aws downloads those too).

    The dataset's names are plain ASCII, so a key is PREFIX/<class>/<absolute path without its leading />."""
    listed = {k: o["size"] for k, o in list_prefix(s3, bucket, f"{PREFIX}/").items()}
    keys: dict[str, str] = {}
    for f in manifest:
        key = f"{PREFIX}/{key_class(f['size'])}/{str(src).lstrip('/')}/{f['path']}"
        if listed.get(key) != f["size"]:
            found = "missing" if key not in listed else f"of size {listed[key]}"
            raise RestoreIncomplete(f"after the backup, {key} is {found} (expected {f['size']} bytes): fs3g's key "
                                    "layout is not what this benchmark maps")
        keys[f["path"]] = key
    others = sorted(set(listed) - set(keys.values()))
    return keys, others


# ------------------------------------------------------------------------------------------------------- commands


def fs3g_python(fs3g: list[str]) -> list[str] | None:
    """The interpreter part of "PYTHON... -m fs3g_hpc", or None when --fs3g is something else."""
    if len(fs3g) >= 3 and fs3g[-2:] == ["-m", "fs3g_hpc"]:
        return fs3g[:-2]
    return None


def build_commands(tools: dict[str, str], endpoint: str, bucket: str, klass: str, peers: list[str],
                   fs3g: list[str] | None, policy: Path, shard_row: bool) -> dict[str, list[str]]:
    s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
    src = f"s3://{bucket}/{PREFIX}/{klass}/*"
    all_peers = {
        "s5cmd": [*s5, "cp", src, "{dest}/"],
        "s5cmd-16": [*s5, "--numworkers", "16", "cp", src, "{dest}/"],
        "aws": [tools["aws"], "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--only-show-errors",
                f"s3://{bucket}/{PREFIX}/", "{dest}/"],
    }
    commands: dict[str, list[str]] = {}
    if fs3g:
        commands["fs3g"] = [*fs3g, "restore", "--config", str(policy), "--dest", "{dest}", "--executor", "local",
                            "--run-dir", "{run_dir}/restore"]
        if shard_row:
            commands["fs3g-shard"] = [*fs3g, "restore-shard", "{run_dir}/restore", "--shard", "0"]
    commands.update({name: all_peers[name] for name in PEERS if name in peers})
    return commands


def dest_layout(name: str, klass: str, keys: dict[str, str], manifest: list[dict[str, Any]],
                others: list[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Where each dataset file lands under the destination for this command, and the allowed extra paths."""
    if name in OURS:
        return {f["path"]: f for f in manifest}, set()
    strip = f"{PREFIX}/{klass}/" if name.startswith("s5cmd") else f"{PREFIX}/"
    expected = {keys[f["path"]][len(strip):]: f for f in manifest}
    extra = {k[len(strip):] for k in others} if name == "aws" else set()
    return expected, extra


def make_hook(name: str, *, klass: str, keys: dict[str, str], others: list[str], manifest: list[dict[str, Any]],
              prepare: list[str] | None, policy: Path, env: dict[str, str], tmp_parent: Path | None,
              server_pid: int | None, records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh run_dir with an empty dest (and, for fs3g-shard, the prepared restore run); after the run,
    outside the timed span: the server's CPU, the check of the destination, removal and sync."""
    expected, allowed = dest_layout(name, klass, keys, manifest, others)

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-download-{name}-", dir=tmp_parent))
        dest = run_dir / "dest"
        dest.mkdir()
        ok = False
        try:
            if prepare is not None:
                proc = subprocess.run([*prepare, "-c", PREPARE, str(policy), str(dest), str(run_dir / "restore")],
                                      capture_output=True, text=True, env=env, cwd=REPO,
                                      stdin=subprocess.DEVNULL)
                if proc.returncode != 0:
                    raise RestoreIncomplete(f"preparing the restore run for {name} failed:\n{proc.stderr[-2000:]}")
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, {"dest": str(dest), "run_dir": str(run_dir)})
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec = {"server_cpu_s": cpu_delta(cpu0, cpu1)}
                    rec.update(verify_dest(dest, expected, allowed))
                    records.append(rec)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
                os.sync()  # the deleted files' dirty pages are dropped; anything else is written now, untimed

    return hook


# ------------------------------------------------------------------------------------------------------- running


def run_scenario(scenario: str, data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
                 args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    manifest = data["manifest"]
    klass = key_class(max(f["size"] for f in manifest))
    if any(key_class(f["size"]) != klass for f in manifest):
        raise RuntimeError(f"{src}: files of both key classes; a scenario must be one class")
    s3 = s3_client(endpoint, env)
    setup_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-download-{scenario}-setup-", dir=args.tmp_dir))
    try:
        with scratch_bucket(s3, "bench-download") as bucket:
            policy = setup_dir / "lab.yaml"
            policy.write_text(lab_policy(src, bucket, PREFIX, endpoint, setup_dir / "runs"))
            log(f"{scenario}: backing up {data['files']:,} files, {data['total_bytes']:,} bytes from {src} into "
                f"bucket {bucket} with fs3g (untimed)")
            backup_s = backup(args.fs3g_argv, policy, env)
            keys, others = backed_up_keys(s3, bucket, src, manifest)
            log(f"{scenario}: backup took {backup_s:.1f} s; {len(keys):,} dataset objects, {len(others)} other(s) "
                f"under {PREFIX}/")
            commands = build_commands(tools, endpoint, bucket, klass, args.peers, args.fs3g_argv, policy,
                                      args.shard_row)
            records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
            prepare = fs3g_python(args.fs3g_argv)
            setup = {name: make_hook(name, klass=klass, keys=keys, others=others, manifest=manifest,
                                     prepare=prepare if name == "fs3g-shard" else None, policy=policy, env=env,
                                     tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                     for name in commands}
            results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                      setup=setup)
    finally:
        shutil.rmtree(setup_dir, ignore_errors=True)
    attach_records(results, records, ("files", "verified", "extra_allowed", "mtime_restored"))
    add_rates(results, data)
    ours = [n for n in commands if n in OURS]
    peers = [n for n in commands if n not in OURS]
    return {"scenario": scenario, "results": results, "key_class": klass, "backup_s": backup_s,
            "other_objects": others, "ratios": all_ratios(results, ours, peers), "dataset": dataset_summary(data)}


def render_report(runs: list[dict[str, Any]], machine: dict[str, Any], note: str, command_line: str) -> str:
    return render_scenarios_report(
        runs, machine, note, command_line, title="Download (restore) benchmark (SeaweedFS on loopback)",
        ratio_summary=True, scenario_note=lambda run: f", backed up untimed in {run['backup_s']:.1f} s",
        placeholders="`{run_dir}` is a fresh temporary directory per run, `{dest}` an empty directory in it")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=SCENARIO_SMOKE_HELP)
    add_upload_scenario_args(ap)
    ap.add_argument("--fs3g", default="python3 -m fs3g_hpc",
                    help='how to run fs3g (default "python3 -m fs3g_hpc", run from the repository root); it also '
                         "makes the untimed backup")
    ap.add_argument("--no-shard-row", dest="shard_row", action="store_false",
                    help="do not time fs3g restore-shard on its own")
    ap.add_argument("--results", type=Path,
                    help="report path without suffix (default benchmarks/results/download-latest, "
                         "or download-smoke with --smoke); .md and .json are written")
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    results_base = args.results or HERE / "results" / ("download-smoke" if args.smoke else "download-latest")
    args.fs3g_argv = shlex.split(args.fs3g)
    if not args.fs3g_argv:
        ap.error("--fs3g is empty (fs3g makes the backup every scenario restores)")
    if args.shard_row and fs3g_python(args.fs3g_argv) is None:
        log(f"--fs3g {args.fs3g!r} is not 'PYTHON -m fs3g_hpc': the fs3g-shard row (which prepares its run through "
            "that Python) is left out")
        args.shard_row = False

    try:
        senv = services_env()
        tools = ensure_peers(install=not args.no_install, rclone=False)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(str(e))
        return 2
    endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
    env = aws_env(senv)
    server_pid, versions = server_and_versions(tools, ("s5cmd", "aws"))
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))

    source_at_start = fs3g_source()
    runs = []
    try:
        for sc, data in upload_datasets(args):
            runs.append(run_scenario(sc, data, tools=tools, env=env, endpoint=endpoint, args=args,
                                     server_pid=server_pid))
    except (FileExistsError, RestoreIncomplete, CommandFailed) as e:
        log(f"{type(e).__name__}: {e}")
        return 1

    note = (seaweed_sentence(endpoint, versions.get("seaweedfs")) + " Per "
            "scenario, untimed: one bucket, the dataset backed up into it by `fs3g backup --executor local --wait` "
            f"(keys `{PREFIX}/smallfile/<path>` or `{PREFIX}/largefile/<path>`, the lab's catalog written). Every "
            "run downloads into a fresh empty directory on the same disk; after each run (untimed) every file is "
            "checked (size and MD5, nothing missing, nothing extra), then the directory is removed and `sync` "
            "runs, so writeback never spills into the next run. fs3g fsyncs each large file before renaming it "
            "into place (inside its timed span); the peers do not. fs3g restores mtime and mode; the peers do "
            "not. fs3g's policy keeps the defaults (one shard of up to 100,000 files, restore.download_workers "
            "16). "
            + rounds_and_peers(args.warmup, versions))
    if args.note:
        note += " " + args.note
    note += shim_note(args.fs3g_argv, "fs3g and fs3g-shard")
    source, sentence = source_note(source_at_start)
    note += sentence
    machine = machine_info()
    cmdline = default_command_line()
    md = render_report(runs, machine, note, cmdline)
    doc = {"title": "Download benchmark", "machine": machine, "machine_note": note, "command_line": cmdline,
           "endpoint": endpoint, "fs3g": args.fs3g, "fs3g_source": source, "versions": versions, "smoke": args.smoke,
           "scenarios": runs}
    publish(results_base, md, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
