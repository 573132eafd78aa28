"""Side-by-side timing harness: run commands alternately and report wall time, CPU and peak RSS.

    results = run_alternating({"find": [...], "fpart": [...]}, repeats=5, warmup=1)
    write_report(results, "walk.md", "walk.json", "Walk", "ext4 on virtio, warm cache")

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
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Sequence

# A setup hook receives the command's argv template and returns a context manager yielding the argv to run.
# It is entered before the run and left after it, both outside the timed span (e.g. a fresh temp directory).
SetupHook = Callable[[list[str]], ContextManager[list[str]]]

SCHEMA = "fs3g-bench-harness/1"
REPO = Path(__file__).resolve().parent.parent


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
    """Defaults that depend on --smoke, and --peers as a checked list."""
    args.repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    if peers is not None:
        args.peers = names_from(ap, args.peers, peers, "peer(s)")


def results_base(results: str | None, stem: str) -> Path:
    """--results BASE -> BASE(.md/.json); a directory (existing, or written with a trailing /) -> DIR/STEM; none ->
    benchmarks/results/STEM."""
    if not results:
        return Path(__file__).resolve().parent / "results" / stem
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
    repo = Path(__file__).resolve().parent.parent
    with contextlib.suppress(ValueError):
        script = script.relative_to(repo)
    return shlex.join(["python3", str(script), *sys.argv[1:]])


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_markdown(results: dict[str, Any], title: str, machine_note: str, machine: dict[str, Any],
                    command_line: str, ratio_list: list[dict[str, Any]] | None = None) -> str:
    m = machine
    lines = [
        f"# {title}",
        "",
        f"Machine: nproc {m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), {m['mem_total_gib']} GiB RAM "
        f"(MemTotal), {m['kernel']}, {m['python']}, {m['date']}.",
    ]
    if machine_note:
        lines += ["", machine_note]
    lines += [
        "",
        "Reproduce (from the repository root):",
        "",
        f"    {command_line}",
        "",
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
        lines.append(f"| {name} | {_fmt(w['median'])} | {_fmt(w['min'])}–{_fmt(w['max'])} | "
                     f"{_fmt(c['cpu_s']['median'])} | {_fmt(c['peak_rss_mib']['median'], 1)} | {c['runs']} |")
    if ratio_list:
        lines += ["", "Ratios of medians (ours / peer; below 1 means ours is lower):", "",
                  "| ours / peer | wall | CPU | peak RSS |", "| --- | ---: | ---: | ---: |"]
        for r in ratio_list:
            lines.append(f"| {r['ours']} / {r['peer']} | {_fmt(r['wall'], 2)} | {_fmt(r['cpu'], 2)} | "
                         f"{_fmt(r['peak_rss'], 2)} |")
    lines += ["", "Commands (argv templates; `{run_dir}` is a fresh temporary directory per run):", ""]
    for name, c in results["commands"].items():
        lines.append(f"- {name}: `{shlex.join(c['argv'])}`")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], md_path: str | Path, json_path: str | Path, title: str,
                 machine_note: str, *, command_line: str | None = None,
                 ratio_list: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> str:
    """Write the Markdown table and the JSON (machine, command line, all samples); return the Markdown."""
    machine = machine_info()
    cmdline = command_line or default_command_line()
    md = render_markdown(results, title, machine_note, machine, cmdline, ratio_list)
    doc = {"title": title, "machine": machine, "machine_note": machine_note, "command_line": cmdline,
           "ratios": ratio_list or [], **(extra or {}), "results": results}
    for path, text in ((Path(md_path), md), (Path(json_path), json.dumps(doc, indent=2) + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a reader never sees half a report
    return md
