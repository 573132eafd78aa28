#!/usr/bin/env python3
"""Upload through added latency (scenario f): the 5,000-file upload of bench_upload.py through the `faulty` TCP proxy,
20 ms added in each direction, in front of SeaweedFS.

    python3 benchmarks/bench_latency.py [--repeats 5] [--warmup 1] [--fs3g "python3 -m fs3g_hpc"]
                                        [--peers s5cmd,s5cmd-16,aws,rclone] [--delay-ms 20] [--smoke]

Data: the seeded small-file set of bench_upload.py (5,000 files of 1–16 KiB, benchmarks/data/upload-small-5k/;
--smoke: 50 files, benchmarks/data/upload-small-50/, 1 repeat, no warm-up).

The proxy: `faulty` (PyPI, pinned faulty==0.2.1, installed into benchmarks/data/venv-peers beside the other peers)
runs as its own process, started and stopped by this script (terminated in a `finally`, and it exits by itself when
this script's process goes away). It is faulty's FaultyProxy with a LatencyMiddleware of DELAY ms on each pipeline
(egress: client -> server, ingress: server -> client), listening on a free loopback port and forwarding to the
SeaweedFS endpoint: what `faulty start 127.0.0.1:PORT HOST:PORT --delay 20` sets up, without the CLI's terminal
dashboard (a `rich` live view redrawn 4 times a second and a keyboard-polling thread, CPU we do not want beside the
tools). faulty delays every chunk it reads (up to 64 KiB) by DELAY before forwarding it, one chunk at a time per
connection and direction, so a request whose headers and body arrive in two reads is delayed twice and one
connection carries at most 64 KiB per DELAY each way (3.2 MiB/s at 20 ms). A new connection costs no added delay
(the handshake is with the local proxy), so tools that open many connections are not charged what a real network
would charge them; the report counts the connections each run opened.

Before and after the timed runs the script checks that the latency is there: the median of 20 HEAD Bucket requests
(and 20 PUTs of 4 KiB) on one kept-alive connection, direct and through the proxy (medians and minima reported;
the run stops when the fastest HEAD through the proxy is less than 1.5 x DELAY slower than the fastest direct one).

Timed commands: the upload scenario's (harness.upload_commands, upload_hook), with the proxy as the endpoint, each
run into a fresh prefix of one bucket:
- fs3g:      sh -c 'FS3G plan --config {run_dir}/lab.yaml --run-dir {run_dir}/run && FS3G run-shard {run_dir}/run
             --shard 0', with the lab policy's s3.endpoint_url = the proxy
- s5cmd:     s5cmd --endpoint-url PROXY --log error cp 'SRC/*' s3://BUCKET/PREFIX/   (and s5cmd-16: --numworkers 16)
- aws:       aws --endpoint-url PROXY s3 cp --recursive --only-show-errors SRC s3://BUCKET/PREFIX/
- rclone:    env -u AWS_CA_BUNDLE rclone copy SRC bench:BUCKET/PREFIX  (RCLONE_CONFIG_BENCH_ENDPOINT = the proxy)
After every run, outside the timed span: the SeaweedFS and proxy CPU during the run and the bytes the proxy
forwarded (which must be at least the dataset's size: nothing bypassed the proxy), then the upload scenario's
check of the prefix against the dataset (harness.verify_upload), listed directly (not through the proxy);
then the prefix is deleted.

Results: benchmarks/results/latency-latest.md and .json (--results BASE; latency-smoke with --smoke), ours/peer
ratios and the goal of the issue, (f) fs3g's wall <= 1.0x s5cmd's.

From Python: `bench_latency.run(["--results", "/some/dir/latency", ...])` returns the JSON document (and writes it);
`main(argv)` returns the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import (DATA, PEER_VENV, PEERS, SMALL_FILES, SMOKE_SMALL_FILES, UPLOAD_CHECK_KEYS, SetupHook,  # noqa: E402
                     add_rates, add_run_args, all_ratios, attach_records, cpu_delta, dataset_summary,
                     default_command_line, ensure_peers, fmt, fs3g_source, log, machine_info, medians, pip_install,
                     proc_cpu_s, publish, render_scenarios_report, results_base, rounds_and_peers, run_alternating,
                     s3_client, scratch_bucket, server_and_versions, services_env, settle_run_args, shim_note,
                     small_files, source_note, summary_of, tool_env, upload_commands, upload_dataset, upload_hook)

FAULTY_PIN = "faulty==0.2.1"
DELAY_MS = 20.0
GOAL = 1.0  # (f): fs3g's wall <= 1.0 x s5cmd's
PROBES = 20

# The proxy process: faulty's FaultyProxy, DELAY ms on both pipelines. Prints "ready" once listening; on SIGUSR1
# writes its counters to STATS_FILE (with a sequence number); stops on SIGTERM or when its parent goes away.
RUNNER = r"""
import asyncio, json, os, signal, sys
from faulty.core import FaultyProxy
from faulty.middlewares import LatencyMiddleware

listen_port, target_host, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
delay_ms, stats_file = float(sys.argv[4]), sys.argv[5]
parent = os.getppid()


async def main():
    proxy = FaultyProxy("127.0.0.1", listen_port, target_host, target_port)
    if delay_ms > 0:
        proxy.add_egress_rule(LatencyMiddleware(delay_ms))   # client -> server
        proxy.add_ingress_rule(LatencyMiddleware(delay_ms))  # server -> client
    seq = 0

    def dump():
        nonlocal seq
        seq += 1
        s = proxy.stats
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"seq": seq, "bytes_uploaded": s.bytes_uploaded, "bytes_downloaded": s.bytes_downloaded,
                       "total_connections": s.total_connections, "active_connections": s.active_connections}, f)
        os.replace(tmp, stats_file)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, dump)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with proxy:
        dump()
        print("ready", flush=True)
        while not stop.is_set() and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass


asyncio.run(main())
"""


class ProxyError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------------- the proxy


def ensure_faulty(install: bool) -> tuple[str, str]:
    """(python of the peers' venv, faulty's version), installing faulty there when missing."""
    python = PEER_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m, faulty.core, faulty.middlewares; "
                                "print(m.version('faulty'))"]
    out = subprocess.run(probe, capture_output=True, text=True, timeout=60) if python.exists() else None
    if out is None or out.returncode != 0:
        if not install:
            raise RuntimeError(f"faulty missing in {PEER_VENV} (run without --no-install, or "
                               f"{PEER_VENV}/bin/pip install {FAULTY_PIN})")
        pip_install(FAULTY_PIN)
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"faulty still not importable after pip install: {out.stderr[-1000:]}")
    return str(python), out.stdout.strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """The faulty process: start() it, stats() its counters, stop() it (also on any exception in a with block)."""

    def __init__(self, python: str, target: str, delay_ms: float, work: Path):
        u = urlsplit(target)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise ProxyError(f"endpoint {target!r}: need http://HOST:PORT (the proxy forwards plain TCP)")
        self.python, self.target_host, self.target_port = python, u.hostname, u.port
        self.delay_ms, self.work = delay_ms, work
        self.stats_file = work / "proxy-stats.json"
        self.log_file = work / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, attempts: int = 5) -> None:
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log_file, "ab") as err:
                self.proc = subprocess.Popen(
                    [self.python, "-c", RUNNER, str(self.port), self.target_host, str(self.target_port),
                     str(self.delay_ms), str(self.stats_file)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=self.work)
            assert self.proc.stdout is not None
            sel = selectors.DefaultSelector()
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = bool(sel.select(timeout=30)) and self.proc.stdout.readline().strip() == b"ready"
            sel.close()
            if ready:
                log(f"faulty proxy pid {self.proc.pid} on 127.0.0.1:{self.port} -> {self.target_host}:"
                    f"{self.target_port}, {self.delay_ms:g} ms each way")
                return
            self.stop()  # e.g. the port was taken between free_port() and the bind: another port
        raise ProxyError(f"the faulty proxy did not start; its log {self.log_file}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-2000:]
        return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ProxyError(f"the faulty proxy exited ({self.proc.returncode if self.proc else None}); its log:\n"
                             f"{self.log_tail()}")

    def stats(self, timeout: float = 10.0) -> dict[str, int]:
        """The proxy's counters now (asks it with SIGUSR1 and waits for the new dump)."""
        self.check_alive()
        assert self.proc is not None
        old = self._read_stats().get("seq", 0)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self._read_stats()
            if st.get("seq", 0) > old:
                return st
            time.sleep(0.01)
        raise ProxyError("the faulty proxy did not answer SIGUSR1 with its counters")

    def _read_stats(self) -> dict[str, int]:
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return json.loads(self.stats_file.read_text())
        return {}

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "Proxy":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit while the benchmark runs, so the finally blocks (proxy, bucket) run."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def probe_latency(endpoint: str, env: dict[str, str], bucket: str, n: int = PROBES) -> dict[str, Any]:
    """Median ms of n HEAD Bucket and n PUTs of 4 KiB on one kept-alive connection (after 2 untimed of each)."""
    s3 = s3_client(endpoint, env, max_pool_connections=1, retries={"mode": "standard", "max_attempts": 1})
    body = b"x" * 4096
    key = f"latency-probe-{os.getpid()}"
    out: dict[str, Any] = {}
    try:
        for what, call in (("head_bucket", lambda: s3.head_bucket(Bucket=bucket)),
                           ("put_4k", lambda: s3.put_object(Bucket=bucket, Key=key, Body=body))):
            for _ in range(2):
                call()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                times.append((time.perf_counter() - t0) * 1000)
            out[what] = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "n": n}
    finally:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
    return out


def latency_check(direct: str, proxied: str, env: dict[str, str], bucket: str, delay_ms: float,
                  n: int = PROBES) -> dict[str, Any]:
    d = probe_latency(direct, env, bucket, n)
    p = probe_latency(proxied, env, bucket, n)
    res = {"direct": d, "proxy": p,
           "added_ms": {k: p[k]["median_ms"] - d[k]["median_ms"] for k in d},
           "added_min_ms": {k: p[k]["min_ms"] - d[k]["min_ms"] for k in d}}
    log("latency: " + "; ".join(f"{k} direct {d[k]['median_ms']:.1f} ms (min {d[k]['min_ms']:.1f}), proxy "
                                 f"{p[k]['median_ms']:.1f} ms (min {p[k]['min_ms']:.1f})" for k in d))
    # On the minima: load on the machine only adds time, so the fastest requests show what the proxy adds.
    if delay_ms > 0 and res["added_min_ms"]["head_bucket"] < 1.5 * delay_ms:
        raise ProxyError(f"the proxy adds only {res['added_min_ms']['head_bucket']:.1f} ms to the fastest HEAD "
                         f"(expected about {2 * delay_ms:g} ms: {delay_ms:g} each way)")
    return res


# ------------------------------------------------------------------------------------------------------- running


def proxy_hook(inner: SetupHook, proxy: Proxy, records: list[dict[str, Any]], min_bytes: int) -> SetupHook:
    """The upload hook, plus the proxy's CPU and forwarded bytes during the run (checked: at least the data)."""

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        with inner(argv) as filled:
            st0, cpu0 = proxy.stats(), proc_cpu_s(proxy.pid)
            yield filled
            st1, cpu1 = proxy.stats(), proc_cpu_s(proxy.pid)
            up = st1["bytes_uploaded"] - st0["bytes_uploaded"]
            rec = {"proxy_cpu_s": cpu_delta(cpu0, cpu1),
                   "proxy_bytes_up": up, "proxy_bytes_down": st1["bytes_downloaded"] - st0["bytes_downloaded"],
                   "proxy_connections": st1["total_connections"] - st0["total_connections"]}
            if up < min_bytes:
                raise ProxyError(f"{argv[0]}: only {up:,} bytes went up through the proxy, less than the data "
                                 f"({min_bytes:,}): the tool bypassed it")
            records.append(rec)

    return hook


def run_scenario(data: dict[str, Any], *, tools: dict[str, str], senv: dict[str, str], endpoint: str,
                 faulty_python: str, args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    manifest = data["manifest"]
    direct_env = tool_env(senv, endpoint)
    s3 = s3_client(endpoint, direct_env)  # the script's own listing, checks and deletes: direct
    work = Path(tempfile.mkdtemp(prefix="fs3g-bench-latency-", dir=args.tmp_dir))
    try:
        with scratch_bucket(s3, stem="bench-latency") as bucket, Proxy(faulty_python, endpoint, args.delay_ms,
                                                                       work) as proxy:
            env = tool_env(senv, proxy.endpoint)
            check_before = latency_check(endpoint, proxy.endpoint, env, bucket, args.delay_ms, args.probes)
            commands, is_peer = upload_commands(tools, proxy.endpoint, src, args.peers, args.fs3g, None)
            records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
            precords: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
            setup = {}
            for name in commands:
                inner = upload_hook(name, s3=s3, bucket=bucket, src=src, endpoint=proxy.endpoint,
                                    manifest=manifest, strict=is_peer[name], writes_policy=(name == "fs3g"),
                                    quote=(name == "fs3g"), tmp_parent=args.tmp_dir, server_pid=server_pid,
                                    records=records[name])
                setup[name] = proxy_hook(inner, proxy, precords[name], data["total_bytes"])
            log(f"{data['files']:,} files, {data['total_bytes']:,} bytes from {src} into bucket {bucket} through "
                f"{proxy.endpoint}")
            results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, cwd=REPO,
                                      setup=setup)
            check_after = latency_check(endpoint, proxy.endpoint, env, bucket, args.delay_ms, args.probes)
            proxy_endpoint = proxy.endpoint
    finally:
        with contextlib.suppress(OSError):
            for p in sorted(work.iterdir()):
                p.unlink()
            work.rmdir()
    attach_records(results, records, UPLOAD_CHECK_KEYS)
    for name, c in results["commands"].items():
        for sample, prec in zip(c["warmup_samples"] + c["samples"], precords[name]):
            sample.update(prec)  # what the proxy saw: its CPU, bytes, connections
        c["proxy_cpu_s"] = summary_of(c["samples"], "proxy_cpu_s")
    add_rates(results, data)
    ours = [n for n in commands if not is_peer[n]]
    peers = [n for n in commands if is_peer[n]]
    return {"scenario": "f-latency", "results": results, "delay_ms_each_way": args.delay_ms,
            "proxy_endpoint": proxy_endpoint, "latency_check": {"before": check_before, "after": check_after},
            "ratios": all_ratios(results, ours, peers), "dataset": dataset_summary(data)}


def goal_check(run: dict[str, Any]) -> dict[str, Any]:
    cmds = run["results"]["commands"]
    out: dict[str, Any] = {"scenario": "f", "target_ratio": GOAL, "metric": "median wall, fs3g / s5cmd"}
    if "fs3g" in cmds and "s5cmd" in cmds:
        r = cmds["fs3g"]["wall_s"]["median"] / cmds["s5cmd"]["wall_s"]["median"]
        out.update(fs3g_wall_s=cmds["fs3g"]["wall_s"]["median"], s5cmd_wall_s=cmds["s5cmd"]["wall_s"]["median"],
                   ratio=r, met=r <= GOAL)
    return out


def check_table(check: dict[str, Any]) -> str:
    lines = ["| request (one kept-alive connection) | when | direct median (min) ms | proxy median (min) ms | "
             "added: medians (minima) ms |", "| --- | --- | ---: | ---: | ---: |"]
    for when, c in check.items():
        for what in ("head_bucket", "put_4k"):
            d, p = c["direct"][what], c["proxy"][what]
            lines.append(f"| {what.replace('_', ' ')} | {when} the runs | {fmt(d['median_ms'], 1)} "
                         f"({fmt(d['min_ms'], 1)}) | {fmt(p['median_ms'], 1)} ({fmt(p['min_ms'], 1)}) | "
                         f"{fmt(c['added_ms'][what], 1)} ({fmt(c['added_min_ms'][what], 1)}) |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=f"{SMOKE_SMALL_FILES} files, 1 repeat, no warm-up",
                 endpoint_help="S3 endpoint behind the proxy (default $FS3G_SEAWEED_ENDPOINT)",
                 install_help="fail instead of installing missing peers and faulty")
    ap.add_argument("--small-files", type=int, help=f"files in the tree (default {SMALL_FILES})")
    ap.add_argument("--delay-ms", type=float, default=DELAY_MS, help=f"latency added each way (default {DELAY_MS:g})")
    ap.add_argument("--probes", type=int, help=f"requests per latency probe (default {PROBES}; 10 with --smoke)")
    ap.add_argument("--fs3g", default="python3 -m fs3g_hpc",
                    help='how to run fs3g (default "python3 -m fs3g_hpc", run from the repository root); "" leaves '
                         "fs3g out")
    ap.add_argument("--results",
                    help="report path without suffix (default benchmarks/results/latency-latest, or latency-smoke "
                         "with --smoke); .md and .json are written. A directory (existing, or ending in /) gets "
                         "latency-latest.md/.json (latency-smoke with --smoke) inside it")
    return ap


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write BASE.md and BASE.json; return the JSON document. Raises on any failure."""
    ap = build_parser()
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    args.probes = args.probes or (10 if args.smoke else PROBES)
    base = results_base(args.results, "latency-smoke" if args.smoke else "latency-latest")
    args.fs3g = args.fs3g.strip() or None
    if not args.peers and not args.fs3g:
        ap.error("nothing to run")

    with sigterm_as_exit():
        senv = services_env()
        tools = ensure_peers(install=not args.no_install)
        faulty_python, faulty_version = ensure_faulty(install=not args.no_install)
        endpoint = args.endpoint or senv["FS3G_SEAWEED_ENDPOINT"]
        server_pid, versions = server_and_versions(tools)
        versions["faulty"] = faulty_version
        log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
        source_at_start = fs3g_source()
        data = upload_dataset("small", small_files(args), args)
        run_ = run_scenario(data, tools=tools, senv=senv, endpoint=endpoint, faulty_python=faulty_python, args=args,
                            server_pid=server_pid)
    goal = goal_check(run_)

    if "ratio" in goal:
        goal_line = (f"**Goal (f)**: through {args.delay_ms:g} ms each way, fs3g's wall <= {GOAL}x s5cmd's: fs3g "
                     f"{goal['fs3g_wall_s']:.3f} s / s5cmd {goal['s5cmd_wall_s']:.3f} s = **{goal['ratio']:.2f}x** "
                     f"({'met' if goal['met'] else 'NOT met'}).")
    else:
        goal_line = "Goal (f), fs3g <= 1.0x s5cmd: not measured (fs3g or s5cmd did not run)."
    cmds = run_["results"]["commands"]
    proxy_lines = ["| command | median proxy CPU s | proxy connections (last run) | bytes up through the proxy "
                   "(last run) |", "| --- | ---: | ---: | ---: |"]
    for name, c in cmds.items():
        last = c["samples"][-1]
        pc = c["proxy_cpu_s"]["median"] if c.get("proxy_cpu_s") else None
        proxy_lines.append(f"| {name} | {fmt(pc, 2)} | {last['proxy_connections']:,} | "
                           f"{last['proxy_bytes_up']:,} |")
    note = (goal_line + "\n\n"
            f"Latency check (faulty {faulty_version}, {args.delay_ms:g} ms added each way; {args.probes} requests "
            "of each kind after 2 untimed, direct to SeaweedFS and through the proxy):\n\n"
            + check_table(run_["latency_check"]) + "\n\n"
            f"Endpoint: the `faulty` TCP proxy on {run_['proxy_endpoint']} (its own Python asyncio process, started "
            f"and stopped by the script) in front of SeaweedFS at {endpoint} "
            f"({versions.get('seaweedfs', 'unknown version')}, `weed mini` from `.ci/services`); the tools, the proxy "
            "and the server share the machine's cores. faulty delays every chunk it reads (up to 64 KiB) by the "
            "delay before forwarding it, one chunk at a time per connection and direction: a request whose headers "
            "and body arrive in separate reads waits twice, and a connection carries at most 64 KiB per delay each "
            "way. Opening a connection costs no added latency (the client's handshake is with the local proxy, and "
            "the proxy's connect to the server is not delayed), so a tool that opens many connections is not charged "
            "the round trips a real network (and TLS) would add: see the connections per run at the end. Every run "
            "uploads into a fresh prefix of one bucket (primed untimed); after each run (untimed) the "
            "objects are listed directly (not through the proxy) and checked against the source (names, sizes, MD5 "
            "where the ETag is one), the proxy must have forwarded at least the data's bytes, and the prefix is "
            "deleted. fs3g's lab policy points `s3.endpoint_url` at the proxy. "
            + rounds_and_peers(args.warmup, versions))
    if args.fs3g:
        note += shim_note(shlex.split(args.fs3g))
    if args.note:
        note += " " + args.note
    source, sentence = source_note(source_at_start)
    note += sentence
    machine = machine_info()
    cmdline = default_command_line()
    md = render_scenarios_report(
        [run_], machine, note, cmdline,
        title=f"Upload through {args.delay_ms:g} ms of added latency, scenario (f) (faulty proxy, SeaweedFS)",
        ratio_summary=True, scenario_note=lambda r: f", through the proxy at {r['proxy_endpoint']}",
        placeholders="`{run_dir}` is a fresh temporary directory per run, `{bucket}` the scenario's bucket, "
                     "`{prefix}` a fresh prefix per run")
    md = md.rstrip("\n") + "\n\n## The proxy during the runs\n\n" + "\n".join(proxy_lines) + "\n"
    doc = {"title": "Upload through added latency (f)", "machine": machine, "machine_note": note,
           "command_line": cmdline, "endpoint": endpoint, "proxy": {"package": FAULTY_PIN, "version": faulty_version,
                                                                    "delay_ms_each_way": args.delay_ms},
           "fs3g": args.fs3g, "fs3g_source": source, "versions": versions, "smoke": args.smoke, "goal": goal,
           "medians": medians(cmds),
           "scenarios": [run_], "results_base": str(base)}
    publish(base, md, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (RuntimeError, FileExistsError, subprocess.CalledProcessError) as e:
        # CommandFailed, UploadIncomplete, ProxyError and the services/peers errors are RuntimeErrors.
        log(f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
