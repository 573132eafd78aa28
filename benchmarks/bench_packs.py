#!/usr/bin/env python3
"""Small files in packs (scenario h): fs3g with `storage.small_files: packs` and with `objects`, side by side with
`s5cmd cp` and one tar stream (`tar -cf - | s5cmd pipe`, `s5cmd cat | tar -xf -`), backup and restore, against
SeaweedFS, on a 5,000-file and a 100,000-file tree, in one run.

    python3 benchmarks/bench_packs.py [--sizes 5000,100000] [--phases backup,restore] [--layouts packs,objects]
                                      [--peers s5cmd,tar-s5cmd] [--repeats 3] [--warmup 1]
                                      [--fs3g "python3 -m fs3g_hpc"] [--smoke] [--results BASE]

Data: the seeded small-file sets of the upload benchmark (`harness.generate_small`: files of 1-16 KiB, uniform,
100 per directory, `top_NN/dir_N/file_NNNNN.dat`), `benchmarks/data/upload-small-5k/` and
`benchmarks/data/upload-small-100k/` (~820 MB), generated once and reused while their markers match. Both sizes have
the same shape, so they differ only in the count. --smoke: 50 and 200 files, 1 repeat, no warm-up.

Backup, per size, timed alternately, each run into a fresh prefix of one bucket:
- fs3g-packs:   FS3G backup --config {run_dir}/lab.yaml --executor local --wait   (storage.small_files: packs; a
                fresh run_root: a full backup, plan + one shard + merge, as a user runs it)
- fs3g-objects: the same with storage.small_files: objects (one object per file)
- s5cmd:        s5cmd --endpoint-url URL --log error cp 'SRC/*' s3://BUCKET/PREFIX/      (256 workers)
- tar-s5cmd:    bash -o pipefail -c 'tar -cf - -C SRC . | s5cmd --endpoint-url URL --log error pipe
                s3://BUCKET/PREFIX/tree.tar'
After each run (untimed): fs3g's report.json must say every file planned and verified, none failed, and the prefix
must hold packs (`packs/.../*.tar` and `.tar.idx`, the .tar bytes at least the data's) or one object per file;
s5cmd's objects are checked one by one (name, size, MD5); the tar object is read back with Python's tarfile and
every member checked (name, size, MD5). The prefix is then deleted.

Restore, per size: untimed first, each layout backed up once by fs3g into its own prefix (with its own policy and
catalog), the tree copied once by s5cmd cp and once by the tar pipe; then timed alternately, each into a fresh empty
directory {dest}:
- fs3g-packs / fs3g-objects: FS3G restore --config P --dest {dest} --executor local --run-dir {run_dir}/restore
- s5cmd:          s5cmd --endpoint-url URL --log error cp 's3://BUCKET/s5cmd/*' {dest}/
- s5cmd-cat-tar:  bash -o pipefail -c 's5cmd --endpoint-url URL --log error cat s3://BUCKET/tar/tree.tar |
                  tar -xf - -C {dest}'
After each run (untimed) every file is checked (size, MD5, nothing missing or extra), the directory removed and
`sync` run.

Reported: medians of wall time and client CPU (user+sys of the command and the children it waited for: tar, s5cmd,
fs3g's shard process) and peak RSS per command, the ratios fs3g/peer, and the goals of issue 15: 5,000 files:
fs3g-packs backup wall <= 2.0x tar-s5cmd and <= 0.3x s5cmd; 100,000 files: <= 1.3x tar-s5cmd; restore of the whole
tree <= 2.0x s5cmd-cat-tar. Results: benchmarks/results/packs-latest.md and .json (--results; packs-smoke with
--smoke). It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import (DATA, SetupHook, UploadIncomplete, add_rates,  # noqa: E402
                     add_run_args, all_ratios, attach_records, aws_env, backup, checked_dataset, cpu_delta,
                     dataset_summary, default_command_line, delete_prefix, ensure_peers, fill, fmt, fs3g_source,
                     generate_small, lab_policy, list_prefix, log, machine_info, names_from, proc_cpu_s, publish,
                     render_scenarios_report, rounds_and_peers, run_alternating, s3_client, scratch_bucket,
                     seaweed_sentence, server_and_versions, services_env, settle_run_args, shim_note, size_tag,
                     source_note, verify_dest, verify_upload)

SIZES = (5_000, 100_000)
SMOKE_SIZES = (50, 200)
PHASES = ("backup", "restore")
LAYOUTS = ("packs", "objects")
PEERS = ("s5cmd", "tar-s5cmd")  # restore: s5cmd and s5cmd-cat-tar
RESTORE_PEER = {"s5cmd": "s5cmd", "tar-s5cmd": "s5cmd-cat-tar"}
TAR_KEY = "tree.tar"

# (phase, size or None for any, ours, peer, limit): the goals of issue 15, on median wall time.
GOALS = (
    ("backup", 5_000, "fs3g-packs", "tar-s5cmd", 2.0),
    ("backup", 5_000, "fs3g-packs", "s5cmd", 0.3),
    ("backup", 100_000, "fs3g-packs", "tar-s5cmd", 1.3),
    ("restore", None, "fs3g-packs", "s5cmd-cat-tar", 2.0),
)


class BackupIncomplete(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------------ policies


def layout_policy(src: Path, bucket: str, prefix: str, endpoint: str, run_root: Path, layout: str) -> str:
    """fs3g's lab policy for one layout: one shard whatever the tree (so one process does the work, as for the
    peers), every other setting at its default."""
    return lab_policy(src, bucket, prefix.rstrip("/"), endpoint, run_root, small_files=layout,
                      more="shards: {max_files: 1000000, max_bytes: 1PiB}\n")


def check_fs3g_backup(run_root: Path, n_files: int) -> dict[str, Any]:
    """The one backup run under run_root: report.json says every file planned and verified, none failed."""
    reports = sorted(run_root.glob("*/*/report.json"))
    if len(reports) != 1:
        raise BackupIncomplete(f"{run_root}: {len(reports)} report.json files, expected one backup run")
    report = json.loads(reports[0].read_text())
    found = {"planned": report["planned"]["files"], "verified": report["verified"]["files"],
             "failed": report["failed"]["files"]}
    if found != {"planned": n_files, "verified": n_files, "failed": 0}:
        raise BackupIncomplete(f"{reports[0]}: {found}, expected {n_files} planned and verified, 0 failed")
    return found


def check_packs(objs: dict[str, dict[str, Any]], prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    """A packs backup's objects: at least one pack, an index beside every pack, the packs' bytes at least the data's,
    and no per-object small file."""
    packs = {k: o for k, o in objs.items() if k.startswith(f"{prefix}packs/") and k.endswith(".tar")}
    indexes = {k for k in objs if k.startswith(f"{prefix}packs/") and k.endswith(".tar.idx")}
    per_object = [k for k in objs if k.startswith(f"{prefix}smallfile/")]
    problems = []
    if not packs:
        problems.append("no pack")
    if {k + ".idx" for k in packs} != indexes:
        problems.append(f"{len(packs)} packs but {len(indexes)} indexes")
    if sum(o["size"] for o in packs.values()) < data["total_bytes"]:
        problems.append("the packs hold fewer bytes than the data")
    if per_object:
        problems.append(f"{len(per_object)} per-object small files, e.g. {per_object[:2]}")
    if problems:
        raise BackupIncomplete(f"under {prefix!r}: " + "; ".join(problems))
    return {"packs": len(packs), "pack_bytes": sum(o["size"] for o in packs.values()), "objects": len(objs)}


def check_tar_object(s3: Any, bucket: str, key: str, manifest: list[dict[str, Any]]) -> dict[str, Any]:
    """The tar stream read back (streamed, Python's tarfile): every data set file as a member with its size and
    MD5, nothing else but directories."""
    expected = {f["path"]: f for f in manifest}
    seen = 0
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with body, tarfile.open(fileobj=body, mode="r|") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isdir():
                continue
            f = expected.get(name)
            if f is None or not member.isfile() or member.size != f["size"]:
                raise UploadIncomplete(f"{key}: unexpected member {member.name!r} ({member.size} bytes)")
            reader = tar.extractfile(member)
            assert reader is not None
            if hashlib.md5(reader.read()).hexdigest() != f["md5"]:
                raise UploadIncomplete(f"{key}: member {name} differs from the source (MD5)")
            seen += 1
    if seen != len(expected):
        raise UploadIncomplete(f"{key}: {seen} file members, expected {len(expected)}")
    return {"objects": 1, "matched": seen}


# ------------------------------------------------------------------------------------------------------ commands


def backup_commands(tools: dict[str, str], endpoint: str, src: Path, fs3g: list[str], layouts: list[str],
                    peers: list[str]) -> dict[str, list[str]]:
    s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
    commands = {f"fs3g-{layout}": [*fs3g, "backup", "--config", "{run_dir}/lab.yaml", "--executor", "local",
                                   "--wait"] for layout in layouts}
    all_peers = {
        "s5cmd": [*s5, "cp", f"{src}/*", "s3://{bucket}/{prefix}"],
        "tar-s5cmd": ["bash", "-o", "pipefail", "-c",
                      f"tar -cf - -C {shlex.quote(str(src))} . | {shlex.join(s5)} pipe "
                      f"s3://{{bucket}}/{{prefix}}{TAR_KEY}"],
    }
    commands.update({name: all_peers[name] for name in PEERS if name in peers})
    return commands


def restore_commands(tools: dict[str, str], endpoint: str, bucket: str, fs3g: list[str],
                     policies: dict[str, Path], peers: list[str]) -> dict[str, list[str]]:
    s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
    commands = {f"fs3g-{layout}": [*fs3g, "restore", "--config", str(policy), "--dest", "{dest}", "--executor",
                                   "local", "--run-dir", "{run_dir}/restore"] for layout, policy in policies.items()}
    all_peers = {
        "s5cmd": [*s5, "cp", f"s3://{bucket}/s5cmd/*", "{dest}/"],
        "s5cmd-cat-tar": ["bash", "-o", "pipefail", "-c",
                          f"{shlex.join(s5)} cat s3://{bucket}/tar/{TAR_KEY} | tar -xf - -C {{dest}}"],
    }
    commands.update({RESTORE_PEER[p]: all_peers[RESTORE_PEER[p]] for p in PEERS if p in peers})
    return commands


def backup_hook(name: str, *, s3: Any, bucket: str, src: Path, endpoint: str, data: dict[str, Any],
                tmp_parent: Path | None, server_pid: int | None, records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh prefix and run_dir (fs3g: its lab policy and run_root in it); after the run, untimed: the
    server's CPU, the check of what arrived, then the prefix and run_dir removed."""
    counter = iter(range(1_000_000))
    layout = name[len("fs3g-"):] if name.startswith("fs3g-") else None

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        prefix = f"{name}/{next(counter):03d}-{secrets.token_hex(3)}/"
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-packs-{name}-", dir=tmp_parent))
        ok = False
        try:
            if layout is not None:
                (run_dir / "lab.yaml").write_text(layout_policy(src, bucket, prefix, endpoint, run_dir / "runs",
                                                                layout))
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, {"bucket": bucket, "prefix": prefix, "run_dir": str(run_dir)})
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec: dict[str, Any] = {"prefix": prefix, "server_cpu_s": cpu_delta(cpu0, cpu1)}
                    objs = list_prefix(s3, bucket, prefix)
                    if layout is not None:
                        rec["report"] = check_fs3g_backup(run_dir / "runs", data["files"])
                    if layout == "packs":
                        rec.update(check_packs(objs, prefix, data))
                    elif layout == "objects":
                        rec.update(verify_upload(objs, prefix, data["manifest"], strict=False))
                    elif name == "tar-s5cmd":
                        rec.update(check_tar_object(s3, bucket, prefix + TAR_KEY, data["manifest"]))
                    else:
                        rec.update(verify_upload(objs, prefix, data["manifest"], strict=True))
                    records.append(rec)
            finally:
                with contextlib.suppress(Exception):
                    delete_prefix(s3, bucket, prefix)
                shutil.rmtree(run_dir, ignore_errors=True)

    return hook


def restore_hook(name: str, *, data: dict[str, Any], tmp_parent: Path | None, server_pid: int | None,
                 records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh run_dir with an empty dest; after the run, untimed: the server's CPU, every file checked,
    the directory removed and sync."""
    expected = {f["path"]: f for f in data["manifest"]}

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-packs-{name}-", dir=tmp_parent))
        dest = run_dir / "dest"
        dest.mkdir()
        ok = False
        try:
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, {"dest": str(dest), "run_dir": str(run_dir)})
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec = {"server_cpu_s": cpu_delta(cpu0, cpu1)}
                    rec.update(verify_dest(dest, expected, set()))
                    records.append(rec)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
                os.sync()

    return hook


# ------------------------------------------------------------------------------------------------------- running


def run_backup(data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
               args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    commands = backup_commands(tools, endpoint, src, args.fs3g_argv, args.layouts, args.peers)
    s3 = s3_client(endpoint, env)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    with scratch_bucket(s3, "bench-packs") as bucket:
        log(f"backup {data['files']:,}: {data['total_bytes']:,} bytes from {src} into bucket {bucket}")
        setup = {name: backup_hook(name, s3=s3, bucket=bucket, src=src, endpoint=endpoint, data=data,
                                   tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                 for name in commands}
        results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                  setup=setup)
    attach_records(results, records)
    add_rates(results, data)
    ours = [n for n in commands if n.startswith("fs3g-")]
    peers = [n for n in commands if not n.startswith("fs3g-")]
    return {"scenario": f"backup-{size_tag(data['files'])}", "phase": "backup", "files": data["files"],
            "results": results, "ratios": all_ratios(results, ours, peers), "dataset": dataset_summary(data)}


def run_restore(data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
                args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    s3 = s3_client(endpoint, env)
    setup_dir = Path(tempfile.mkdtemp(prefix="fs3g-bench-packs-restore-setup-", dir=args.tmp_dir))
    try:
        with scratch_bucket(s3, "bench-packs") as bucket:
            policies: dict[str, Path] = {}
            setup_s: dict[str, float] = {}
            for layout in args.layouts:
                policy = setup_dir / f"{layout}.yaml"
                policy.write_text(layout_policy(src, bucket, f"{layout}-lab/", endpoint, setup_dir / f"runs-{layout}",
                                                layout))
                log(f"restore {data['files']:,}: backing up with fs3g, small_files: {layout} (untimed)")
                setup_s[f"fs3g-{layout}"] = backup(args.fs3g_argv, policy, env)
                check_fs3g_backup(setup_dir / f"runs-{layout}", data["files"])
                policies[layout] = policy
            s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
            if "s5cmd" in args.peers:
                subprocess.run([*s5, "cp", f"{src}/*", f"s3://{bucket}/s5cmd/"], check=True, env=env,
                               stdout=subprocess.DEVNULL)
                verify_upload(list_prefix(s3, bucket, "s5cmd/"), "s5cmd/", data["manifest"], strict=True)
            if "tar-s5cmd" in args.peers:
                subprocess.run(["bash", "-o", "pipefail", "-c", f"tar -cf - -C {shlex.quote(str(src))} . | "
                                f"{shlex.join(s5)} pipe s3://{bucket}/tar/{TAR_KEY}"], check=True, env=env,
                               stdout=subprocess.DEVNULL)
            commands = restore_commands(tools, endpoint, bucket, args.fs3g_argv, policies, args.peers)
            records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
            setup = {name: restore_hook(name, data=data, tmp_parent=args.tmp_dir, server_pid=server_pid,
                                        records=records[name]) for name in commands}
            results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                      setup=setup)
    finally:
        shutil.rmtree(setup_dir, ignore_errors=True)
    attach_records(results, records)
    add_rates(results, data)
    ours = [n for n in commands if n.startswith("fs3g-")]
    peers = [n for n in commands if not n.startswith("fs3g-")]
    return {"scenario": f"restore-{size_tag(data['files'])}", "phase": "restore", "files": data["files"],
            "results": results, "ratios": all_ratios(results, ours, peers), "dataset": dataset_summary(data),
            "backup_s": setup_s}


def goals(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of issue 15 that this run measured: the ratio of medians (wall) and whether it is met."""
    out = []
    for phase, size, ours, peer, limit in GOALS:
        for run in runs:
            if run["phase"] != phase or (size is not None and run["files"] != size):
                continue
            commands = run["results"]["commands"]
            if ours not in commands or peer not in commands:
                continue
            ratio = commands[ours]["wall_s"]["median"] / commands[peer]["wall_s"]["median"]
            label = (f"{phase} {run['files']:,} files: {ours} wall <= {limit}x {peer}")
            out.append({"goal": label, "scenario": run["scenario"], "ours": ours, "peer": peer, "limit": limit,
                        "ratio": ratio, "met": ratio <= limit})
    return out


def goal_lines(goal_list: list[dict[str, Any]]) -> list[str]:
    lines = ["## Goals (issue 15, medians of wall time)", "", "| goal | ratio | met |", "| --- | ---: | :---: |"]
    lines += [f"| {g['goal']} | {fmt(g['ratio'], 2)} | {'yes' if g['met'] else 'no'} |" for g in goal_list]
    return lines + [""]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=f"{' and '.join(map(str, SMOKE_SIZES))} files, "
                                                           "1 repeat, no warm-up")
    ap.add_argument("--sizes", help=f"comma-separated file counts (default {','.join(map(str, SIZES))})")
    ap.add_argument("--phases", default=",".join(PHASES), help="backup, restore or both")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="fs3g's storage.small_files: packs, objects or both")
    ap.add_argument("--fs3g", default="python3 -m fs3g_hpc",
                    help='how to run fs3g (default "python3 -m fs3g_hpc", run from the repository root)')
    ap.add_argument("--results", type=Path,
                    help="report path without suffix (default benchmarks/results/packs-latest, or packs-smoke with "
                         "--smoke); .md and .json are written")
    return ap


def run(argv: list[str] | None = None) -> dict[str, Any]:
    ap = build_parser()
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    args.phases = names_from(ap, args.phases, PHASES, "phase(s)")
    args.layouts = names_from(ap, args.layouts, LAYOUTS, "layout(s)")
    sizes = ([int(x) for x in args.sizes.split(",") if x.strip()] if args.sizes
             else list(SMOKE_SIZES if args.smoke else SIZES))
    args.fs3g_argv = shlex.split(args.fs3g)
    if not args.fs3g_argv:
        ap.error("--fs3g is empty")
    base = args.results or HERE / "results" / ("packs-smoke" if args.smoke else "packs-latest")
    if base.is_dir() or str(base).endswith("/"):
        base = Path(base) / ("packs-smoke" if args.smoke else "packs-latest")
    senv = services_env()
    tools = ensure_peers(install=not args.no_install, rclone=False)
    endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
    env = aws_env(senv)
    server_pid, versions = server_and_versions(tools, ("s5cmd",))
    versions["tar"] = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    source_at_start = fs3g_source()
    runs = []
    for n in sizes:
        root = args.data_dir / f"upload-small-{size_tag(n)}"
        data = checked_dataset(root, generate_small(root, n, args.seed, replace=args.replace_data))
        if "backup" in args.phases:
            runs.append(run_backup(data, tools=tools, env=env, endpoint=endpoint, args=args, server_pid=server_pid))
        if "restore" in args.phases:
            runs.append(run_restore(data, tools=tools, env=env, endpoint=endpoint, args=args, server_pid=server_pid))
    goal_list = goals(runs)
    note = (seaweed_sentence(endpoint, versions.get("seaweedfs")) + " fs3g runs `backup --executor local --wait` "
            "(plan, one shard process, merge with verification) and `restore --executor local` (selection from the "
            "catalog, one shard, merge), one shard whatever the size, every other setting at its default "
            "(storage.pack_size_bytes 512 MiB, so each tree is one pack). The tar peers stream one archive through "
            "one multipart upload or one GET; they keep no catalog, no per-file checksum and no way to restore "
            "one file without reading the whole stream. After every run (untimed) the result is checked file by "
            "file. " + rounds_and_peers(args.warmup, versions))
    if args.note:
        note += " " + args.note
    note += shim_note(args.fs3g_argv, "fs3g")
    source, sentence = source_note(source_at_start)
    note += sentence
    machine = machine_info()
    cmdline = default_command_line()
    md = render_scenarios_report(runs, machine, note, cmdline, title="Small files in packs (SeaweedFS on loopback)",
                                 ratio_summary=True,
                                 placeholders="`{run_dir}` is a fresh temporary directory per run, `{dest}` an "
                                              "empty directory in it, `{bucket}`/`{prefix}` a fresh prefix")
    head, sep, rest = md.partition("Summary (medians")
    md = head + "\n".join(goal_lines(goal_list)) + "\n" + sep + rest
    doc = {"title": "Small files in packs", "machine": machine, "machine_note": note, "command_line": cmdline,
           "endpoint": endpoint, "fs3g": args.fs3g, "fs3g_source": source, "versions": versions,
           "smoke": args.smoke, "goals": goal_list, "scenarios": runs}
    publish(base, md, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (RuntimeError, subprocess.CalledProcessError, FileExistsError) as e:
        log(f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
