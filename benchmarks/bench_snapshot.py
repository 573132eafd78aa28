#!/usr/bin/env python3
"""Snapshot benchmark: write a catalog of N entries to the bucket as a snapshot, and read it back, with peak RSS.

    python3 benchmarks/bench_snapshot.py [--entries 1000000] [--chunk-bytes 64MiB] [--endpoint URL]
                                         [--results benchmarks/results/snapshot-latest] [--smoke]

Three child processes, each measured by its own ru_maxrss: `make` (a sorted catalog.rec of N synthetic entries,
1,000 per directory), `write` (snapshots/store.write_snapshot to a fresh bucket: chunks, then the manifest) and
`read` (store.download_catalog: every chunk fetched, checked and written into a local catalog). The claim it shows:
memory is bounded by `snapshots.chunk_bytes`, not by N. The endpoint is SeaweedFS from `.ci/services env`
($FS3G_SEAWEED_ENDPOINT) unless given. Results: RESULTS.json and RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _policy(work: Path, bucket: str, endpoint: str, chunk_bytes: str):
    from fs3g_hpc.config import policy_from_snapshot
    from fs3g_hpc.model.sizes import parse_size

    return policy_from_snapshot({"lab": {"name": "bench"}, "roots": ["/bench"],
                                 "s3": {"bucket": bucket, "prefix": "labs/bench", "endpoint_url": endpoint},
                                 "snapshots": {"chunk_bytes": parse_size(chunk_bytes)},
                                 "run_root": str(work / "runs")}, "bench_snapshot")


def _client(policy):
    from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

    return make_s3_client(ClientSettings.from_policy(policy))


def phase(args: argparse.Namespace) -> dict:
    from fs3g_hpc.model.records import Entry, EntryKind, write_records

    work = Path(args.work)
    catalog = work / "catalog.rec"
    started = time.monotonic()
    out: dict = {}
    if args.phase == "make":
        def entries():
            for d in range(max(1, args.entries // 1000)):
                base = f"/bench/d{d:06d}".encode()
                for f in range(min(1000, args.entries - d * 1000)):
                    yield Entry.of(base + f"/file-{f:04d}.dat".encode(), EntryKind.FILE, 4096 + f, 1_700_000_000 *
                                   10**9 + f, 0, 0, 0o100644, 1000, 1000, 1, d * 1000 + f, 1)._replace(
                                       tree_hash=os.urandom(32))
        out["entries"] = write_records(catalog, entries())
        out["catalog_bytes"] = catalog.stat().st_size
    else:
        from fs3g_hpc.snapshots.store import download_catalog, matching_snapshots, write_snapshot

        policy = _policy(work, args.bucket, args.endpoint, args.chunk_bytes)
        client = _client(policy)
        scratch = Path(tempfile.mkdtemp(dir=work))
        (work / "runs" / "bench").mkdir(parents=True, exist_ok=True)
        if args.phase == "write":
            manifest = write_snapshot(policy, catalog, client, scratch)
            out.update(snapshot=manifest.snapshot_id, chunks=len(manifest.chunks), entries=manifest.counts.entries,
                       bytes_in_bucket=sum(c.size_bytes for c in manifest.chunks))
        else:
            manifest = next(matching_snapshots(policy, client, scratch))
            out["entries"] = download_catalog(policy, client, manifest, work / "runs" / "bench" / "catalog.rec",
                                              scratch)
    out["seconds"] = round(time.monotonic() - started, 2)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--chunk-bytes", default="64MiB")
    parser.add_argument("--endpoint", default=os.environ.get("FS3G_SEAWEED_ENDPOINT", ""))
    parser.add_argument("--results", default=str(HERE / "results" / "snapshot-latest"))
    parser.add_argument("--smoke", action="store_true", help="2,000 entries, 1 MiB chunks")
    parser.add_argument("--phase", choices=["make", "write", "read"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return 0
    if not args.endpoint:
        parser.error("no endpoint: give --endpoint or eval \"$(.ci/services env)\" first")
    if args.smoke:
        args.entries, args.chunk_bytes = 2_000, "1MiB"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as work:
        bucket = f"fs3g-bench-{uuid.uuid4().hex[:12]}"
        from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

        client = make_s3_client(ClientSettings(endpoint_url=args.endpoint, region="us-east-1"))
        client.create_bucket(Bucket=bucket)
        report = {"entries": args.entries, "chunk_bytes": args.chunk_bytes, "endpoint": args.endpoint, "phases": {}}
        try:
            for name in ("make", "write", "read"):
                proc = subprocess.run([sys.executable, __file__, "--phase", name, "--work", work, "--bucket", bucket,
                                       "--entries", str(args.entries), "--chunk-bytes", args.chunk_bytes,
                                       "--endpoint", args.endpoint], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    return 1
                report["phases"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            client.delete_bucket(Bucket=bucket)
    assert report["phases"]["read"]["entries"] == args.entries == report["phases"]["write"]["entries"]
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# Snapshot write/read, {args.entries:,} entries, chunks of {args.chunk_bytes}", "",
             "| phase | seconds | peak RSS (MiB) | detail |", "|---|---|---|---|"]
    for name, p in report["phases"].items():
        detail = {k: v for k, v in p.items() if k not in ("seconds", "peak_rss_mib")}
        lines.append(f"| {name} | {p['seconds']} | {p['peak_rss_mib']} | {json.dumps(detail)} |")
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
