#!/usr/bin/env python3
"""Scenario (g): a 100,000-file backup through the Slurm array (8 shards) against one local process, on SeaweedFS.

    python3 benchmarks/bench_array.py [--repeats 5] [--warmup 1] [--files 100000] [--shards 8]
                                      [--fs3g "python3 -m fs3g_hpc"] [--results DIR] [--endpoint URL] [--smoke]

Data (seeded, generated once under benchmarks/data/array-small-<N>/ and reused while its sidecar marker matches):
N files (default 100,000) of 1–15 KiB (uniform; ~0.82 GB for 100,000), 250 per directory in
`proj_NN/dir_NN/` (400 leaf directories for 100,000 files).
--smoke: 2,000 files, 1 repeat, no warm-up (for a test).

Two commands, alternating after the warm-up; every run backs the whole tree up into a fresh prefix of one bucket,
with a fresh run_root (no catalog, so every run is a full backup). Both include the plan and the merge (what a
user waits for):
- array:   FS3G backup --config {run_dir}/lab.yaml --executor slurm --wait
           shards.max_files = ceil(N / shards) (12,500: 8 shards), slurm {cpus_per_task: 1, mem_bytes: 1GiB,
           time_limit: "30", array_parallelism: <shards>}: plan here, one array of 8 tasks and an afterany merge
           job, followed through sacct by `--wait` (fs3g polls every 3 s);
- single:  FS3G backup --config {run_dir}/lab.yaml --executor local --wait
           the same policy with shards.max_files 200,000: one shard, so the plan here, one `fs3g run-shard`
           process, then `fs3g merge` (the local executor's children).
Both policies: memory_budget_bytes 1GiB, uploader {large_workers: 2, large_buffers: 4} (the defaults' 1.5 GiB
ceiling would not fit the 1 GiB budget; there are no large files here), everything else at its default (20
small-file threads per uploader).

CPU: the harness's wait4 rusage sees the `fs3g backup` process and the children it waits for. For `single` that is
everything fs3g does. For `array` the shard tasks and the merge run under slurmd, not as our children: their CPU is
sacct's TotalCPU (user+sys from the rusage slurmstepd collects when each batch step ends) summed over the array's
tasks' and the merge's `.batch` steps (polled until every record is there: slurmdbd lags 1–4 s). Client CPU of
`array` = wait4 CPU (plan, sbatch, polling) + that sum. Independently, per run: the SeaweedFS process's CPU
(utime+stime from /proc/PID/stat) and the whole machine's busy CPU (/proc/stat, all CPUs, idle and iowait
excluded), which also holds slurmctld, slurmd, slurmdbd and MariaDB.

Verification after every run (untimed): the run's report.json says planned == N, verified == N, failed == 0 and
every shard done; plan.json has the expected shard count; the prefix holds exactly N objects under smallfile/
(counted from a listing). The prefix is then deleted (delete_objects, 1,000 keys a call). A failed check raises:
a failed or partial backup never counts as a fast run. A run that fails with jobs still queued has its jobs
cancelled (scancel of the ids in its jobs/submitted.json).

Results: benchmarks/results/array-latest.md and .json (--results PATH, without suffix, like the other scripts;
array-smoke with --smoke; a directory, existing or written with a trailing /, gets array-latest.* inside).
`main(argv) -> int` (0 measured and verified, 1 a run or its check failed, 2 services missing) wraps
`run(argv) -> dict`, which returns the JSON document and raises on any failure. JSON: summary.array and
summary.single hold the medians (wall_s, files_per_s, mb_per_s, client_cpu_s, server_cpu_s, ...),
summary.throughput_ratio_array_over_single the ratio, results.commands every sample.
Endpoint and credentials: FS3G_SEAWEED_ENDPOINT (or --endpoint), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; read
from `.ci/services env` when unset (it never starts or stops the services). Needs the Slurm cluster with sacct.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import (DATA, RUN_DIR_PLACEHOLDER, CommandFailed, KiB, MiB, SetupHook, add_run_args,  # noqa: E402
                     aws_env, checked_dataset, cpu_delta, dataset_summary, default_command_line, delete_keys,
                     delete_prefix, fill, fmt, fs3g_source, generate_files, lab_policy, log, machine_info, proc_cpu_s,
                     publish, report_head, results_base, results_lines, run_alternating, run_untimed, s3_client,
                     scratch_bucket, server_version, services_env, settle_run_args, size_tag, source_note, weed_pid)

GENERATOR = "fs3g-bench-array"
VERSION = 1  # bump when names, sizes or contents change, so stale data is not reused
FILES, SMOKE_FILES = 100_000, 2_000
MIN_BYTES, MAX_BYTES = 1 * KiB, 15 * KiB
FILES_PER_DIR, DIRS_PER_TOP = 250, 20
SHARDS = 8
SINGLE_MAX_FILES = 200_000
GOAL = 3.0  # the goal: array throughput >= 3x the single process's
LAB = "bencharray"
NAMES = ("array", "single")
SACCT_FIELDS = ("JobID", "JobIDRaw", "JobName", "State", "Submit", "Start", "End", "Elapsed", "TotalCPU", "UserCPU",
                "SystemCPU", "MaxRSS")


class BackupIncomplete(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------------- data


def generate(root: Path, n_files: int, seed: int = 1, *, replace: bool = False) -> dict[str, Any]:
    """n_files of MIN_BYTES..MAX_BYTES (uniform) as proj_NN/dir_NN/file_NNNNNN.dat, FILES_PER_DIR per directory."""
    params = {"generator": GENERATOR, "version": VERSION, "n_files": n_files, "seed": seed,
              "min_bytes": MIN_BYTES, "max_bytes": MAX_BYTES, "files_per_dir": FILES_PER_DIR}

    def path_of(i: int) -> str:
        leaf = i // FILES_PER_DIR
        return f"proj_{leaf // DIRS_PER_TOP:02d}/dir_{leaf % DIRS_PER_TOP:02d}/file_{i:06d}.dat"

    return generate_files(root, params, replace, rng_seed=f"{GENERATOR}:{VERSION}:{seed}", n_files=n_files,
                          min_bytes=MIN_BYTES, max_bytes=MAX_BYTES, path_of=path_of)


# ------------------------------------------------------------------------------------------------------- policy


def array_policy(src: Path, bucket: str, prefix: str, endpoint: str, run_root: Path, max_files: int,
                 parallelism: int) -> str:
    return lab_policy(src, bucket, prefix, endpoint, run_root, lab=LAB,
                      more=(f"shards: {{max_files: {max_files}}}\n"
                            "uploader: {large_workers: 2, large_buffers: 4}\n"
                            "memory_budget_bytes: 1GiB\n"
                            f'slurm: {{cpus_per_task: 1, mem_bytes: 1GiB, time_limit: "30", '
                            f'array_parallelism: {parallelism}}}\n'))


def shard_bounds(n_files: int, shards: int) -> dict[str, int]:
    return {"array": math.ceil(n_files / shards), "single": max(SINGLE_MAX_FILES, n_files)}


def preflight(fs3g: list[str], env: dict[str, str], src: Path, endpoint: str, max_files: dict[str, int],
              expect: dict[str, int], tmp_parent: Path | None) -> dict[str, float]:
    """An untimed `fs3g plan` of each policy: the policy is valid and the plan has the expected shard count."""
    seconds = {}
    for name in NAMES:
        d = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-array-preflight-{name}-", dir=tmp_parent))
        try:
            (d / "lab.yaml").write_text(array_policy(src, "preflight-bucket", "preflight", endpoint, d / "runs",
                                                     max_files[name], expect["array"]))
            seconds[name] = run_untimed([*fs3g, "plan", "--config", str(d / "lab.yaml"), "--run-dir", str(d / "run")],
                                        env)
            count = json.loads((d / "run" / "plan.json").read_text())["shard_count"]
            if count != expect[name]:
                raise BackupIncomplete(f"preflight plan ({name}): {count} shards with shards.max_files "
                                       f"{max_files[name]}, expected {expect[name]}")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return seconds


# ------------------------------------------------------------------------------------------------- measurements


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (/proc/stat: all CPUs, idle and iowait left out)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _label(pid: int, comm: str) -> str:
    if pid == os.getpid():
        return "this benchmark (+ the fs3g backup it ran, once reaped)"
    if pid == 1:
        # slurmd's step daemons are daemonised: init reaps them, and with them the CPU of the tasks they reaped.
        return f"pid 1 {comm} (reaps slurmstepd: the array tasks' CPU lands here)"
    if comm.startswith("python"):
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            rest = [a for a in args[1:] if a][:3]
            if rest and "/" in rest[0]:
                rest[0] = rest[0].rsplit("/", 1)[1]
            return " ".join([comm, *rest])[:70]
    return comm


def proc_snapshot() -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, start time) -> (label, CPU seconds incl. reaped children) of every process: the run's CPU by process
    is the difference of two snapshots (a process that started and ended between them is seen only through the
    parent that reaped it)."""
    out: dict[tuple[int, int], tuple[str, float]] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        f = stat[stat.rindex(")") + 2:].split()
        # utime stime cutime cstime (fields 14-17 of proc(5)), starttime (22)
        out[(int(entry.name), int(f[19]))] = (comm, sum(int(x) for x in f[11:15]) / tck)
    return out


def top_processes(before: dict[tuple[int, int], tuple[str, float]],
                  after: dict[tuple[int, int], tuple[str, float]], n: int = 8) -> list[tuple[str, float]]:
    by_label: dict[str, float] = {}
    for key, (comm, cpu) in after.items():
        delta = cpu - before.get(key, (comm, 0.0))[1]
        if delta > 0:
            label = _label(key[0], comm)
            by_label[label] = by_label.get(label, 0.0) + delta
    return [(k, round(v, 1)) for k, v in sorted(by_label.items(), key=lambda kv: -kv[1])[:n]]


def parse_slurm_duration(text: str) -> float | None:
    """sacct durations: [D-][HH:]MM:SS[.mmm]."""
    text = text.strip()
    if not text or text in ("INVALID", "Unknown"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = text.split(":")
    seconds = float(parts[-1])
    mult = 60
    for p in reversed(parts[:-1]):
        seconds += int(p) * mult
        mult *= 60
    return days * 86400 + seconds


def parse_slurm_time(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))  # sacct prints local time
    except ValueError:
        return None


def parse_rss_mib(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text) / MiB


FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE")


def sacct_records(job_ids: list[str]) -> list[dict[str, str]]:
    out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(job_ids), f"--format={','.join(SACCT_FIELDS)}"],
                         capture_output=True, text=True, timeout=60)
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == len(SACCT_FIELDS):
            rows.append(dict(zip(SACCT_FIELDS, parts)))
    return rows


def slurm_accounting(backup_dir: Path, expected_tasks: int, t0: float, timeout_s: float = 90) -> dict[str, Any]:
    """CPU and timeline of the run's array tasks and merge, from sacct (polled until every batch step is there)."""
    sub = json.loads((backup_dir / "jobs" / "submitted.json").read_text())
    ids = [*sub["arrays"], sub["merge"]]
    deadline = time.monotonic() + timeout_s
    while True:
        rows = sacct_records(ids)
        allocs = {r["JobIDRaw"]: r for r in rows if "." not in r["JobID"]}
        batch = {r["JobIDRaw"].split(".")[0]: r for r in rows if r["JobID"].endswith(".batch")}
        complete = (len(allocs) == expected_tasks + 1
                    and all(r["State"].split()[0] in FINISHED for r in allocs.values())
                    and set(batch) >= set(allocs)
                    and all(parse_slurm_duration(b["TotalCPU"]) is not None for b in batch.values()))
        if complete or time.monotonic() > deadline:
            break
        time.sleep(1)
    tasks, merge = [], None
    for raw, a in allocs.items():
        b = batch.get(raw, {})
        item = {"job": a["JobID"], "state": a["State"], "start": parse_slurm_time(a["Start"]),
                "end": parse_slurm_time(a["End"]), "submit": parse_slurm_time(a["Submit"]),
                "elapsed_s": parse_slurm_duration(a["Elapsed"]),
                "cpu_s": parse_slurm_duration(b.get("TotalCPU", "")),
                "user_s": parse_slurm_duration(b.get("UserCPU", "")),
                "sys_s": parse_slurm_duration(b.get("SystemCPU", "")),
                "max_rss_mib": parse_rss_mib(b.get("MaxRSS", ""))}
        if a["JobID"] == sub["merge"]:
            merge = item
        else:
            tasks.append(item)
    tasks.sort(key=lambda t: t["job"])

    def rel(x: float | None) -> float | None:
        return None if x is None else round(x - t0, 1)

    starts = [t["start"] for t in tasks if t["start"]]
    ends = [t["end"] for t in tasks if t["end"]]
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends], key=lambda ev: (ev[0], ev[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    cpus = [t["cpu_s"] for t in tasks]
    all_cpu = cpus + [merge["cpu_s"] if merge else None]
    return {
        "complete": complete,
        "arrays": sub["arrays"], "merge_job": sub["merge"],
        "tasks": len(tasks),
        "task_cpu_s": None if None in cpus else sum(cpus),
        "merge_cpu_s": merge["cpu_s"] if merge else None,
        "jobs_cpu_s": None if None in all_cpu else sum(all_cpu),
        "max_task_rss_mib": max((t["max_rss_mib"] for t in tasks if t["max_rss_mib"] is not None), default=None),
        "max_concurrent_tasks": peak,
        # Seconds after the run started (Slurm's times have 1 s resolution).
        "timeline_s": {
            "array_submitted": rel(min((t["submit"] for t in tasks if t["submit"]), default=None)),
            "first_task_start": rel(min(starts, default=None)),
            "last_task_start": rel(max(starts, default=None)),
            "first_task_end": rel(min(ends, default=None)),
            "last_task_end": rel(max(ends, default=None)),
            "merge_start": rel(merge["start"]) if merge else None,
            "merge_end": rel(merge["end"]) if merge else None,
        },
        "task_elapsed_s": [t["elapsed_s"] for t in tasks],
        "task_cpu_each_s": cpus,
        "merge_elapsed_s": merge["elapsed_s"] if merge else None,
        "states": sorted({t["state"] for t in tasks} | ({merge["state"]} if merge else set())),
    }


def cancel_jobs(run_root: Path) -> None:
    """scancel the jobs a failed run submitted (ours, by id), so nothing keeps running after the benchmark."""
    for sub in run_root.glob(f"{LAB}/*/jobs/submitted.json"):
        with contextlib.suppress(Exception):
            data = json.loads(sub.read_text())
            ids = [*data["arrays"], data["merge"]]
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
            log(f"cancelled jobs {', '.join(ids)} of a failed run")


# ------------------------------------------------------------------------------------------------- verification


def backup_dir_of(run_root: Path) -> Path:
    dirs = sorted(p.parent for p in run_root.glob(f"{LAB}/*/plan.json"))
    if len(dirs) != 1:
        raise BackupIncomplete(f"expected one run directory under {run_root / LAB}, found {len(dirs)} "
                               f"({[d.name for d in dirs]}; a retry round ran?)")
    return dirs[0]


def check_report(backup_dir: Path, n_files: int, shards: int) -> dict[str, Any]:
    report_path = backup_dir / "report.json"
    if not report_path.exists():
        raise BackupIncomplete(f"{report_path} missing: the merge did not run or did not finish")
    report = json.loads(report_path.read_text())
    plan = json.loads((backup_dir / "plan.json").read_text())
    found = {"planned": report["planned"]["files"], "verified": report["verified"]["files"],
             "failed": report["failed"]["files"], "shard_count": plan["shard_count"],
             "shard_states": report["shard_states"]}
    want = {"planned": n_files, "verified": n_files, "failed": 0, "shard_count": shards,
            "shard_states": {"done": shards}}
    if found != want:
        raise BackupIncomplete(f"{report_path}: {found}, expected {want}")
    return found


def count_and_delete(s3: Any, bucket: str, prefix: str, threads: int = 4) -> dict[str, Any]:
    """Count the objects under PREFIX/ (and PREFIX/smallfile/) from one listing, then delete them (delete_objects,
    1,000 keys a call, a few calls in flight)."""
    t0 = time.perf_counter()
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    small = sum(1 for k in keys if k.startswith(f"{prefix}/smallfile/"))
    t1 = time.perf_counter()

    batches = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda batch: delete_keys(s3, bucket, batch), batches))
    return {"objects": len(keys), "smallfile_objects": small, "list_s": round(t1 - t0, 1),
            "delete_s": round(time.perf_counter() - t1, 1)}


# ------------------------------------------------------------------------------------------------------ running


def make_hook(name: str, *, s3: Any, bucket: str, src: Path, endpoint: str, n_files: int, max_files: int,
              shards: int, parallelism: int, tmp_parent: Path | None, server_pid: int | None,
              records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh prefix, run_dir and run_root, the policy written; after the run, untimed: CPU readings,
    sacct (array), the report and object checks, then the prefix and run_dir removed."""
    counter = itertools.count()

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        prefix = f"{name}/{next(counter):03d}-{secrets.token_hex(3)}"
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-array-{name}-", dir=tmp_parent))
        run_root = run_dir / "runs"
        (run_dir / "lab.yaml").write_text(array_policy(src, bucket, prefix, endpoint, run_root, max_files,
                                                       parallelism))
        ok = False
        try:
            procs0 = proc_snapshot()
            srv0, busy0, t0 = proc_cpu_s(server_pid), machine_busy_s(), time.time()
            yield fill(argv, {"run_dir": str(run_dir)})
            srv1, busy1, t1 = proc_cpu_s(server_pid), machine_busy_s(), time.time()
            procs1 = proc_snapshot()
            ok = True
        finally:
            try:
                if ok:
                    rec: dict[str, Any] = {
                        "prefix": prefix,
                        "server_cpu_s": cpu_delta(srv0, srv1),
                        "machine_busy_cpu_s": cpu_delta(busy0, busy1),
                        "epoch_wall_s": t1 - t0,
                        "top_processes": top_processes(procs0, procs1),
                    }
                    backup_dir = backup_dir_of(run_root)
                    if name == "array":
                        rec["slurm"] = slurm_accounting(backup_dir, shards, t0)
                    rec["report"] = check_report(backup_dir, n_files, shards)
                    objects = count_and_delete(s3, bucket, prefix)
                    rec["objects"] = objects
                    log(f"{name}: checked, {objects['objects']:,} objects listed in {objects['list_s']} s and "
                        f"deleted in {objects['delete_s']} s")
                    if objects["smallfile_objects"] != n_files:
                        raise BackupIncomplete(f"{objects['smallfile_objects']} objects under {prefix}/smallfile/, "
                                               f"expected {n_files}")
                    records.append(rec)
                else:
                    cancel_jobs(run_root)
            finally:
                with contextlib.suppress(Exception):
                    delete_prefix(s3, bucket, f"{prefix}/")
                shutil.rmtree(run_dir, ignore_errors=True)

    return hook


def summarise(results: dict[str, Any], records: dict[str, list[dict[str, Any]]], data: dict[str, Any],
              nproc: int) -> dict[str, Any]:
    """Attach what the hooks saw to the samples; the medians per command and the throughput ratio."""
    summary: dict[str, Any] = {}
    for name, c in results["commands"].items():
        runs = c["warmup_samples"] + c["samples"]
        for sample, rec in zip(runs, records[name]):
            sample.update({k: rec[k] for k in ("server_cpu_s", "machine_busy_cpu_s", "report", "objects", "prefix",
                                               "top_processes")})
            sample["verified"] = rec["report"]["verified"]
            jobs_cpu = None
            if "slurm" in rec:
                sample["slurm"] = rec["slurm"]
                jobs_cpu = rec["slurm"]["jobs_cpu_s"]
                sample["jobs_cpu_s"] = jobs_cpu
            sample["client_cpu_s"] = (sample["cpu_s"] + jobs_cpu if jobs_cpu is not None
                                      else (sample["cpu_s"] if name == "single" else None))
            parts = (sample["machine_busy_cpu_s"], sample["client_cpu_s"], sample["server_cpu_s"])
            # Slurm daemons, MariaDB, kernel threads, and anything else that ran on the machine meanwhile.
            sample["other_cpu_s"] = None if None in parts else parts[0] - parts[1] - parts[2]
        s = c["samples"]

        def med(key: str) -> float | None:
            vals = [x[key] for x in s if x.get(key) is not None]
            return statistics.median(vals) if vals else None

        wall = c["wall_s"]["median"]
        busy = med("machine_busy_cpu_s")
        summary[name] = {
            "runs": len(s),
            "wall_s": wall,
            "wall_s_min": c["wall_s"]["min"],
            "wall_s_max": c["wall_s"]["max"],
            "files_per_s": data["files"] / wall,
            "mb_per_s": data["total_bytes"] / 1e6 / wall,
            "mib_per_s": data["total_bytes"] / MiB / wall,
            "harness_cpu_s": c["cpu_s"]["median"],  # wait4: the fs3g backup process and its waited-for children
            "jobs_cpu_s": med("jobs_cpu_s"),  # sacct TotalCPU of array tasks + merge (array only)
            "client_cpu_s": med("client_cpu_s"),  # everything fs3g ran
            "server_cpu_s": med("server_cpu_s"),  # SeaweedFS process, /proc
            "machine_busy_cpu_s": busy,  # whole machine, /proc/stat
            "other_cpu_s": med("other_cpu_s"),  # machine - client - server
            "machine_utilisation": None if busy is None else busy / (wall * nproc),
            "peak_rss_mib": c["peak_rss_mib"]["median"],
            "verified_files": [x["verified"] for x in s],
        }
        if name == "array":
            slurm = [x["slurm"] for x in s if "slurm" in x]
            summary[name]["max_task_rss_mib"] = max((x["max_task_rss_mib"] or 0 for x in slurm), default=None)
            summary[name]["max_concurrent_tasks"] = max((x["max_concurrent_tasks"] for x in slurm), default=None)
    a, b = summary["array"]["wall_s"], summary["single"]["wall_s"]
    return {**summary, "throughput_ratio_array_over_single": b / a, "goal_ratio": GOAL,
            "goal_met": b / a >= GOAL}


def render(doc: dict[str, Any]) -> str:
    m, s, results = doc["machine"], doc["summary"], doc["results"]
    d = doc["dataset"]
    lines = [
        *report_head(doc["title"], m, doc["machine_note"], doc["command_line"]),
        f"Data: {d['files']:,} files, {d['total_bytes']:,} bytes ({d['root']}), {FILES_PER_DIR} per directory. "
        "Medians of the timed runs; client CPU = everything fs3g ran (array: wait4 of `fs3g backup` + sacct "
        "TotalCPU of the tasks and the merge; single: wait4 of `fs3g backup`, whose children are the shard and "
        "the merge); server CPU = SeaweedFS process (/proc); machine = busy CPU of all CPUs (/proc/stat), "
        "other = machine − client − server (Slurm daemons, MariaDB, kernel, and anything else that ran "
        "meanwhile); utilisation = machine / (wall × nproc).",
        "",
        "| command | shards | wall s (min–max) | files/s | MB/s | client CPU s | of which jobs (sacct) | "
        "server CPU s | other CPU s | machine CPU s | utilisation |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in NAMES:
        c = s[name]
        lines.append(f"| {name} | {doc['shards'][name]} | {fmt(c['wall_s'], 1)} ({fmt(c['wall_s_min'], 1)}–"
                     f"{fmt(c['wall_s_max'], 1)}) | {fmt(c['files_per_s'], 0)} | {fmt(c['mb_per_s'], 1)} | "
                     f"{fmt(c['client_cpu_s'], 1)} | {fmt(c['jobs_cpu_s'], 1)} | {fmt(c['server_cpu_s'], 1)} | "
                     f"{fmt(c['other_cpu_s'], 1)} | "
                     f"{fmt(c['machine_busy_cpu_s'], 1)} | "
                     f"{fmt(c['machine_utilisation'] and 100 * c['machine_utilisation'], 0)} % |")
    r = s["throughput_ratio_array_over_single"]
    lines += ["", f"Throughput ratio array / single: **{r:.2f}** (goal ≥ {GOAL:.0f}: "
                  f"{'met' if s['goal_met'] else 'not met'})."]
    a, b = s["array"], s["single"]
    if None not in (a["client_cpu_s"], a["server_cpu_s"], b["client_cpu_s"], b["server_cpu_s"]):
        n = d["files"]
        bound = (a["client_cpu_s"] + a["server_cpu_s"]) / m["nproc"]
        lines += ["", "Reading: per file, fs3g spent "
                      f"{1000 * b['client_cpu_s'] / n:.2f} ms of client CPU as one process and "
                      f"{1000 * a['client_cpu_s'] / n:.2f} ms as {doc['shards']['array']} tasks; SeaweedFS "
                      f"{1000 * b['server_cpu_s'] / n:.2f} / {1000 * a['server_cpu_s'] / n:.2f} ms. The single "
                      f"process ran at {b['client_cpu_s'] / b['wall_s']:.2f} cores (one Python process: its "
                      f"threads share one GIL) beside SeaweedFS at {b['server_cpu_s'] / b['wall_s']:.2f} cores; the "
                      f"array at {a['client_cpu_s'] / a['wall_s']:.2f} + {a['server_cpu_s'] / a['wall_s']:.2f} "
                      f"cores. With nproc {m['nproc']}, the array's own CPU (client + server) cannot be done in less "
                      f"than {bound:.0f} s, so on this machine its throughput is at most "
                      f"{b['wall_s'] / bound:.2f}× the single process's, whatever Slurm does. The array's gain "
                      "needs more cores (nodes) than the one process can use, and an endpoint that is not on them."]
    lines += ["", "CPU seconds by process during the median run of each command (from /proc, before and after: "
                  "CPU of a process includes the children it reaped; a process that started and ended in between "
                  "is seen only through its parent):", ""]
    for name in NAMES:
        samples = results["commands"][name]["samples"]
        mid = sorted(samples, key=lambda x: x["wall_s"])[len(samples) // 2]
        lines.append(f"- {name}: " + "; ".join(f"`{label}` {cpu:.1f}" for label, cpu in mid.get("top_processes", [])))
    shares = {n: s[n]["other_cpu_s"] / s[n]["machine_busy_cpu_s"] for n in NAMES
              if s[n]["other_cpu_s"] is not None and s[n]["machine_busy_cpu_s"]}
    if shares:
        lines += ["", "Other CPU (neither fs3g nor SeaweedFS) as a share of the machine's busy time: "
                      + ", ".join(f"{n} {100 * v:.0f} %" for n, v in shares.items())
                      + ". The Slurm daemons and MariaDB take little; a large share means something else ran on "
                        "the machine meanwhile (see the process list) and the numbers are not clean."]
    arr = [x for x in results["commands"]["array"]["samples"] if "slurm" in x]
    if arr:
        mid = sorted(arr, key=lambda x: x["wall_s"])[len(arr) // 2]
        t = mid["slurm"]["timeline_s"]
        lines += ["", f"Array timeline of the median run (s after start, sacct 1 s resolution; wall "
                      f"{mid['wall_s']:.1f} s): array submitted {t['array_submitted']}, tasks start "
                      f"{t['first_task_start']}–{t['last_task_start']}, end {t['first_task_end']}–"
                      f"{t['last_task_end']}; merge {t['merge_start']}–{t['merge_end']}. "
                      f"{mid['slurm']['tasks']} tasks, at most {mid['slurm']['max_concurrent_tasks']} at once; "
                      f"task elapsed s {mid['slurm']['task_elapsed_s']}; task CPU s "
                      f"{[round(x, 1) if x is not None else None for x in mid['slurm']['task_cpu_each_s']]}; merge "
                      f"CPU {fmt(mid['slurm']['merge_cpu_s'], 1)} s; largest task MaxRSS "
                      f"{fmt(mid['slurm']['max_task_rss_mib'], 0)} MiB (jobacct_gather sample)."]
    lines += ["", "The harness's own table: its CPU column is wait4's, which for `array` leaves out the Slurm jobs "
                  "(see client CPU above).", "", "## Harness table", "",
              *results_lines(results, placeholders=f"{RUN_DIR_PLACEHOLDER}, holding lab.yaml and the run_root")]
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write BASE.md and BASE.json; return the JSON document. Raises on any failure (a usage
    error exits 2 through argparse)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, smoke_help=f"{SMOKE_FILES:,} files, 1 repeat, no warm-up", install_help=None)
    ap.add_argument("--files", type=int, help=f"files in the tree (default {FILES:,}; {SMOKE_FILES:,} with --smoke)")
    ap.add_argument("--shards", type=int, default=SHARDS, help=f"array shards (default {SHARDS})")
    ap.add_argument("--fs3g", default="python3 -m fs3g_hpc",
                    help='how to run fs3g (default "python3 -m fs3g_hpc", run from the repository root with the '
                         "repository on PYTHONPATH, so that Slurm jobs import the same checkout; --tmp-dir must be "
                         "visible to the compute node, and its path Slurm-safe)")
    ap.add_argument("--results",
                    help="report path without suffix (default benchmarks/results/array-latest, or array-smoke with "
                         "--smoke); .md and .json are written. A directory (existing, or written with a trailing /) "
                         "gets array-latest.* (array-smoke.*) inside it")
    args = ap.parse_args(argv)
    settle_run_args(ap, args)
    n_files = args.files or (SMOKE_FILES if args.smoke else FILES)
    if args.shards < 2 or n_files < args.shards:
        ap.error("--shards must be >= 2 and at most --files")
    fs3g = shlex.split(args.fs3g)
    if not fs3g:
        ap.error("--fs3g is empty")
    base = results_base(args.results, "array-smoke" if args.smoke else "array-latest")

    senv = services_env()
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        raise RuntimeError("sbatch/sacct not found: this benchmark needs the Slurm cluster (.ci/services up)")
    endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
    env = aws_env(senv)
    # Slurm jobs run `<this python> -m fs3g_hpc` from the run directory (sbatch exports our environment): with a
    # checkout, they find the package only through PYTHONPATH.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    server_pid = weed_pid()
    weed_version = server_version(server_pid)
    source_at_start = fs3g_source()

    max_files = shard_bounds(n_files, args.shards)
    expect = {"array": args.shards, "single": 1}
    root = args.data_dir / f"array-small-{size_tag(n_files)}"
    data = checked_dataset(root, generate(root, n_files, args.seed, replace=args.replace_data))
    src = Path(data["root"])
    plan_s = preflight(fs3g, env, src, endpoint, max_files, expect, args.tmp_dir)
    log(f"preflight plans: {expect['array']} and 1 shard(s) as expected "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in plan_s.items())})")
    commands = {name: [*fs3g, "backup", "--config", "{run_dir}/lab.yaml", "--executor",
                       "slurm" if name == "array" else "local", "--wait"] for name in NAMES}
    s3 = s3_client(endpoint, env)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
    t_start = time.perf_counter()
    with scratch_bucket(s3, "bench-array") as bucket:
        log(f"backing up {n_files:,} files into bucket {bucket}: {args.warmup} warm-up + {args.repeats} rounds")
        setup = {name: make_hook(name, s3=s3, bucket=bucket, src=src, endpoint=endpoint, n_files=n_files,
                                 max_files=max_files[name], shards=expect[name], parallelism=args.shards,
                                 tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                 for name in NAMES}
        results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                  setup=setup)
    total_s = time.perf_counter() - t_start

    machine = machine_info()
    summary = summarise(results, records, data, machine["nproc"])
    note = (f"Endpoint {endpoint}: SeaweedFS ({weed_version or 'unknown version'}, `weed mini` from "
            "`.ci/services`) on the same machine as the client and the one-node Slurm cluster (slurmctld, slurmd, "
            f"slurmdbd + MariaDB; the node advertises more CPUs than the machine has, so all {args.shards} tasks "
            "start at once and share the real CPUs with SeaweedFS). Every run backs the whole tree up into a "
            "fresh prefix of one bucket with a fresh run_root (no catalog: a full backup each time); after each "
            "run (untimed) report.json must say every planned file verified and the prefix must hold one "
            "smallfile/ object per file; the prefix is then deleted. `array`: `fs3g backup --executor slurm "
            f"--wait`, shards.max_files {max_files['array']:,} ({args.shards} shards), one task per shard "
            "(cpus_per_task 1, mem 1 GiB, array_parallelism "
            f"{args.shards}), then the afterany merge job; `fs3g backup --wait` follows the merge through sacct, "
            "polling every 3 s. `single`: `fs3g backup --executor local --wait`, shards.max_files "
            f"{max_files['single']:,} (one shard): the plan, one `fs3g run-shard` process, the merge. "
            + ("One untimed warm-up round first. " if args.warmup else "No warm-up round. ")
            + f"Whole benchmark (with checks and deletes): {total_s:.0f} s.")
    if args.note:
        note += " " + args.note
    source, sentence = source_note(source_at_start)
    note += sentence
    doc = {"title": f"Array benchmark: {n_files:,}-file backup, Slurm array of {args.shards} shards vs one process "
                    "(SeaweedFS on loopback)",
           "schema": "fs3g-bench-array/1", "machine": machine, "machine_note": note,
           "command_line": default_command_line(), "endpoint": endpoint, "fs3g": args.fs3g,
           "fs3g_source": source, "smoke": args.smoke, "total_seconds": total_s,
           "dataset": dataset_summary(data),
           "shards": expect, "shard_max_files": max_files, "preflight_plan_s": plan_s,
           "summary": summary, "results": results}
    md = render(doc)
    publish(base, md, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    """0: measured and every run verified; 1: a run failed or its check did; 2: services missing."""
    try:
        run(argv)
    except (FileExistsError, BackupIncomplete, CommandFailed) as e:
        log(f"{type(e).__name__}: {e}")
        return 1
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"{type(e).__name__}: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
