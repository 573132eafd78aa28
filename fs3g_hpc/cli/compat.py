"""`fasts3plusglacier`: the original tool's command line, on fs3g's engine, run on this machine.

    fasts3plusglacier [--restore] [--backup] [--show-bucket-policy] [--check-sha256] --bucketname BUCKET [--verbose]
                      [--num-smallfile-workers N] [--num-largefile-workers N] [--num-largefile-buffers N]
                      [--dry-run] [directories ...]

No mode flag compares the directories with the bucket itself (mtime and size, or the SHA-256 tree hash with
--check-sha256); --backup uploads what is new or changed; --restore restores the directories into
./glacierrestore/ (requesting Glacier restores for archived objects and downloading what is readable now: run it
again later for the rest, as before); --show-bucket-policy prints the lifecycle rules. Keys, metadata and the
lifecycle rule are the original layout (no prefix, one object per small file and symlink: `storage.small_files` is
`objects`, never packs; `largefile/` to GLACIER after 1 day), so `fs3g` reads what this writes and the reverse.

The policy is built in memory from the flags. The catalog and run directories go to
`$FS3G_RUN_ROOT/dirs-<hash of the directories>/fasts3plusglacier-<bucket>/` (default `~/.fs3g`): one catalog per bucket
and set of directories. The endpoint and credentials come from the standard AWS
configuration (`AWS_ENDPOINT_URL`, profiles).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..config import Policy, SmallFiles, policy_from_snapshot
from ..errors import UsageError
from ..model.sizes import MIB
from ..runs.executor import Executor
from .exitcodes import ExitCode, restore_exit_code
from .handlers import check_target
from .main import run_parser
from .parser import Parser, positive

# The original's sizes: 128 KiB splits small from large, each large-file buffer is 40 MB.
SMALL_FILE_THRESHOLD_BYTES = 128 * 1024
BUFFER_SIZE_BYTES = 40 * MIB
ORIGINAL_ARCHIVE_CLASS = "GLACIER"
ORIGINAL_LIFECYCLE_DAYS = 1
OVERHEAD_BYTES = 256 * MIB


def run_root(environ: dict[str, str] | os._Environ = os.environ) -> str:
    return environ.get("FS3G_RUN_ROOT") or str(Path.home() / ".fs3g")


def build_policy(args: argparse.Namespace, directories: Sequence[str]) -> Policy:
    roots = sorted({str(Path(d).absolute()) for d in directories})
    # A catalog per (bucket, directories): a plan only knows the roots it walked, so another directory set must not
    # share (and rewrite) this one's catalog. The lab name, which names the lifecycle rules, is the bucket's alone.
    digest = hashlib.sha256("\0".join(roots).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    lab = f"fasts3plusglacier-{args.bucketname}"[:63]
    large = args.num_largefile_workers * args.num_largefile_buffers * BUFFER_SIZE_BYTES
    ceiling = large + args.num_smallfile_workers * SMALL_FILE_THRESHOLD_BYTES + OVERHEAD_BYTES
    data = {
        "lab": {"name": lab},
        "roots": roots,
        "s3": {"bucket": args.bucketname, "prefix": ""},
        # the original layout: every small file and symlink its own object (smallfile/, symlinks/), never packs
        "storage": {"small_file_threshold_bytes": SMALL_FILE_THRESHOLD_BYTES,
                    "archive_storage_class": ORIGINAL_ARCHIVE_CLASS, "lifecycle_days": ORIGINAL_LIFECYCLE_DAYS,
                    "small_files": SmallFiles.OBJECTS.value},
        "uploader": {"small_workers": args.num_smallfile_workers, "large_workers": args.num_largefile_workers,
                     "large_buffers": args.num_largefile_buffers, "buffer_size_bytes": BUFFER_SIZE_BYTES,
                     "readers_per_file": 1},
        "memory_budget_bytes": max(2048 * MIB, ceiling),
        "slurm": {"mem_bytes": None},
        "run_root": str(Path(run_root()) / f"dirs-{digest}"),
    }
    return policy_from_snapshot(data, "fasts3plusglacier arguments")


def _positive_count(text: str) -> int:
    value = positive(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fasts3plusglacier", description="Research Computing S3/Glacier backups (fs3g-hpc's "
                                                           "compatible command)")
    parser.add_argument("directories", nargs="*", help="dirs to scan (default: the current directory)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--restore", action="store_true", help="restore given directory from Glacier")
    mode.add_argument("--backup", action="store_true", help="backup files in listed directories to S3/Glacier")
    mode.add_argument("--show-bucket-policy", action="store_true",
                      help="show bucket policy for moving files to glacier")
    parser.add_argument("--check-sha256", action="store_true", help="when comparing, use sha hash instead of mtime")
    parser.add_argument("--bucketname", required=True, help="which bucket to use")
    parser.add_argument("--verbose", action="store_const", const=1, default=0, dest="verbose", help="verbose output")
    parser.add_argument("--num-smallfile-workers", type=_positive_count, default=20, metavar="N",
                        help="number of threads to upload small files")
    parser.add_argument("--num-largefile-workers", type=_positive_count, default=4, metavar="N",
                        help="number of threads to upload large files")
    parser.add_argument("--num-largefile-buffers", type=_positive_count, default=8, metavar="N",
                        help="number of buffers used by largefile threads. each buffer is 40MB.")
    # Not one of the original's flags: an addition that changes none of them (no original flag starts with --d).
    parser.add_argument("--dry-run", action="store_true",
                        help="with --backup or --restore: print what would be uploaded or restored, the requests and "
                             "the estimated cost; write nothing to the bucket and request no Glacier restore")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    directories = args.directories or [os.getcwd()]
    for d in directories:
        if not Path(d).is_dir():
            raise UsageError("not a directory", path=d)
    if args.dry_run and not (args.backup or args.restore):
        raise UsageError("--dry-run goes with --backup or --restore (comparing and --show-bucket-policy write "
                         "nothing anyway)")
    policy = build_policy(args, directories)
    if args.show_bucket_policy or args.restore or not args.backup:  # --backup: after its plan (submit_backup_run)
        check_target(policy, write=False)
    if args.show_bucket_policy:
        from ..transfer.lifecycle import show_bucket_policy

        text, _differs = show_bucket_policy(policy)
        print(text)
        return ExitCode.OK
    if args.backup:
        return _backup(policy, dry_run=args.dry_run)
    if args.restore:
        return _restore(policy, directories, dry_run=args.dry_run)
    return _compare(policy, args.check_sha256)


def _backup(policy: Policy, *, dry_run: bool = False) -> int:
    from ..backup.plan import PlanOptions, make_plan
    from ..runs.catalog import catalog_path
    from ..runs.layout import default_run_dir
    from ..scan import ScanSettings
    from ..snapshots.baseline import NeedsRebuild, prepare_baseline

    now = datetime.now(timezone.utc)
    cpus = max(1, len(os.sched_getaffinity(0)))

    def baseline() -> Path:
        try:
            return prepare_baseline(policy, full=False)
        except NeedsRebuild:
            if dry_run:
                raise
            # The original tool skipped what the bucket already held with the same mtime: so does this, by building
            # the catalog from the bucket first (once; its snapshot serves every later run).
            from ..snapshots.rebuild import rebuild_catalog

            print("catalog: none here and no snapshot in the bucket; building it from the bucket's objects")
            print("\n".join(rebuild_catalog(policy).lines()))
            return prepare_baseline(policy, full=False)

    summary = make_plan(policy, default_run_dir(policy, now), PlanOptions(
        full=False, catalog=catalog_path(policy), scan=ScanSettings(workers=cpus, partitions=cpus), max_array_size=1001,
        max_array_size_source="local executor", prepare_catalog=baseline), now)
    print("\n".join(summary.lines()))
    if dry_run:
        from ..dryrun import backup_dry_run

        print("\n".join(backup_dry_run(policy, summary).lines(with_plan=False)))
        return ExitCode.OK
    from ..backup.run import submit_backup_run

    return submit_backup_run(summary.run_dir, Executor.LOCAL, wait=True)


def _restore(policy: Policy, directories: Sequence[str], *, dry_run: bool = False) -> int:
    from ..runs.executor import fs3g_argv
    from ..restore.run import run_restore
    from ..restore.select import RestoreRequest, default_restore_dir, prepare_restore

    request = RestoreRequest(tuple(str(Path(d).absolute()) for d in directories), Path("glacierrestore").absolute(),
                             policy.restore.tier, policy.restore.days, wait=False)
    if dry_run:
        from ..dryrun import preview_restore

        print("\n".join(preview_restore(policy, request).lines()))
        return ExitCode.OK
    layout, header = prepare_restore(policy, request, default_restore_dir(policy, datetime.now(timezone.utc)))
    print(f"restore {layout.run_dir}: {header['planned']['files']:,} files from {header['source']} -> "
          f"{request.destination}")
    return restore_exit_code(run_restore(layout.run_dir, slurm=False, wait=False, fs3g=fs3g_argv()))


def _compare(policy: Policy, check_sha256: bool) -> int:
    from ..compare import TextReport, compare_tree

    report = TextReport(sys.stdout)
    summary = compare_tree(policy, policy.roots, check_sha256=check_sha256, against_bucket=True, out=report)
    report.finish(summary)
    return ExitCode.OK if summary.ok else ExitCode.DIFFERENCES


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
