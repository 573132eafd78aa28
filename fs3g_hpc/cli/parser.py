"""The fs3g command line: every subcommand, its options and help (what `fs3g --help`, the completion script and the
man page show; shellsupport.py reads it). Each subcommand's handler is in handlers.py. Nothing here imports boto3:
the handlers import what they use when they run."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

from .. import __version__
from ..config import RestoreTier
from ..runs.executor import Executor
from . import handlers
from .exitcodes import ExitCode


class Parser(argparse.ArgumentParser):
    """argparse, but its usage errors exit with our code 2 and one line that says what to do."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.AUTO.value,
                   help="slurm, local, or auto (slurm when `scontrol ping` answers)")
    p.add_argument("--wait", action="store_true", help="wait for the merge (and its retries) and exit with the verdict")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fs3g", description="Back up and restore research filesystems to S3 and Glacier "
                                              "with Slurm job arrays.")
    parser.add_argument("--version", action="version", version=f"fs3g-hpc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: -v progress, -vv debug, -vvv botocore too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("validate", help="check site and lab policy files",
                       description="Check policy files. A lab file is checked together with its site file. "
                                   "Exit 0 when all are valid, 2 with one line per problem otherwise.")
    p.add_argument("files", nargs="*", metavar="FILE", help="policy YAML files")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.add_argument("--list-keys", action="store_true", help="list every policy key with its default and meaning")
    p.set_defaults(func=handlers.cmd_validate)

    p = sub.add_parser("plan", help="scan a lab's roots and write a run directory of shards",
                       description="Walk the policy's roots in parallel, compare with the lab's catalog (the last "
                                   "successful backup), and cut what is new or changed into shards for a job array.")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--run-dir", metavar="DIR", help="new or empty directory (default: <run_root>/<lab>/<lab>-<time>)")
    p.add_argument("--full", action="store_true", help="ignore the catalog: plan every file")
    p.add_argument("--scan-workers", type=positive, default=len(os.sched_getaffinity(0)), metavar="N",
                   help="walker processes, and diff processes after the walk (default: the CPUs this process may use)")
    p.add_argument("--scan-run-records", type=positive, default=100_000, metavar="N",
                   help="entries each walker holds before spilling a sorted run; memory ≈ workers × N × 300 B")
    p.set_defaults(func=handlers.cmd_plan)

    p = sub.add_parser("run-shard", help="upload one shard of a plan (what each array task runs)",
                       description="Upload the entries of one shard with the policy the plan recorded. Resumes from "
                                   "its journal when run again. Exit 0 when every file is backed up, 1 when some "
                                   "failed (listed in results/shard-N.failures.jsonl), 130 when stopped by a signal.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    p.add_argument("--shard", type=positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=handlers.cmd_run_shard)

    p = sub.add_parser("merge", help="verify a run against the bucket, write the catalog and report.json",
                       description="Check every planned entry: journaled by its shard and listed in the bucket with "
                                   "the recorded size and ETag. Writes report.json, summary.txt, failures.jsonl and "
                                   "the lab's catalog. Exit 0 only when every planned entry is verified.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    p.add_argument("--retry-executor", choices=["none", "local", "slurm"], default="none",
                   help="on failure, run exactly what failed again (RUN_DIR/retry-N, with its own merge), up to the "
                        "policy's retry_rounds (default: none, print how to retry)")
    p.set_defaults(func=handlers.cmd_merge)

    p = sub.add_parser("submit", help="run a planned backup: shard arrays, then the merge",
                       description="Submit one job array per MaxArraySize shards and, right away, the merge with "
                                   "afterany on every array (slurm); or run the shards as local processes and then "
                                   "the merge (local). auto picks slurm when `scontrol ping` answers.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    add_executor_arguments(p)
    p.set_defaults(func=handlers.cmd_submit)

    p = sub.add_parser("backup", help="plan, then submit (the main job)",
                       description="`fs3g plan` into a new run directory under the policy's run root, then "
                                   "`fs3g submit` it.")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--full", action="store_true", help="ignore the catalog: back up every file")
    add_executor_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="plan, then print what would be uploaded (counts and bytes by class), the requests and the "
                        "estimated cost; upload nothing and submit no job. The plan is kept: `fs3g submit RUN_DIR` "
                        "runs exactly it")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the dry run, or the run's status and final report); the "
                        "progress lines go to stderr")
    p.set_defaults(func=handlers.cmd_backup, scan_workers=len(os.sched_getaffinity(0)), scan_run_records=100_000)

    p = sub.add_parser("compare", help="what differs between the filesystem and its backup",
                       description="Compare the policy's roots (or PATHs inside them) with the lab's catalog, or with "
                                   "the bucket itself (--against-bucket), by size and mtime, or also by SHA-256 tree "
                                   "hash (--check-sha256). One line per discrepancy: CATEGORY CLASS PATH, then a "
                                   "table. Exit 0 when nothing differs, 1 when something does, 2 for bad input.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="subtrees to compare (default: the policy's roots)")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--check-sha256", action="store_true",
                   help="also read every file that looks unchanged and compare its SHA-256 tree hash")
    p.add_argument("--against-bucket", action="store_true",
                   help="list the bucket (and HEAD objects for their mtime) instead of reading the catalog")
    p.add_argument("--workers", type=positive, default=8, metavar="N",
                   help="files hashed / objects read at once (default 8)")
    p.add_argument("--as-of", metavar="TIME|SNAPSHOT", default=None,
                   help="use the bucket's catalog snapshot of that id, or the newest at or before TIME (ISO 8601, "
                        "UTC unless a zone is given; `fs3g snapshots` lists them) instead of the newest catalog")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines and a table")
    p.add_argument("--limit", type=positive, default=None, metavar="N",
                   help="print at most N discrepancies (the counts stay complete)")
    p.add_argument("--scan-workers", type=positive, default=len(os.sched_getaffinity(0)), metavar="N",
                   help="walker processes, and diff processes after the walk (default: the CPUs this process may use)")
    p.add_argument("--scan-run-records", type=positive, default=100_000, metavar="N",
                   help="entries each walker holds before spilling a sorted run; memory ≈ workers × N × 300 B")
    p.add_argument("--executor", choices=[e.value for e in Executor], default=None,
                   help="with --check-sha256: read and hash the files in a job array (slurm), or in local "
                        "processes (local), instead of in this process; the rest of the compare runs here")
    p.add_argument("--wait", action="store_true", help="with --executor: wait for the array's merge and print it")
    p.add_argument("--run-dir", metavar="DIR", help="with --executor: new or empty run directory (default: "
                                                    "<run_root>/<lab>/compare-<time>)")
    p.set_defaults(func=handlers.cmd_compare)

    p = sub.add_parser("compare-shard", help="hash one shard of a compare run (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=handlers.cmd_compare_shard)

    p = sub.add_parser("rebuild-shard", help="HEAD one key range of a catalog rebuild (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=handlers.cmd_rebuild_shard)

    p = sub.add_parser("rebuild-merge", help="merge a catalog rebuild's shards into the catalog and its snapshot")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=handlers.cmd_rebuild_merge)

    p = sub.add_parser("compare-merge", help="add a compare run's hash checks together and print the verdict")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=handlers.cmd_compare_merge)

    p = sub.add_parser("restore", help="restore paths from S3/Glacier as cluster jobs",
                       description="Select the backed-up files under PATH (from the catalog; from bucket listings "
                                   "when there is none), request Glacier restores, wait for them in a poll job that "
                                   "resubmits itself with --begin (no node held), download in a job array, verify "
                                   "each file's SHA-256 tree hash, and put mtime, mode, symlinks (and ownership as "
                                   "root) back. Exit 0 when everything is restored, 1 otherwise.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="backed-up absolute paths (default: the policy's roots)")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--dest", metavar="DIR", help="destination (default: the policy's restore.destination, "
                                                 "./glacierrestore); files go to DIR/<path relative to PATH>")
    p.add_argument("--tier", choices=[t.value for t in RestoreTier], help="Glacier retrieval tier (default: policy)")
    p.add_argument("--days", type=positive, metavar="N", help="days the restored copies stay readable")
    p.add_argument("--overwrite", action="store_true", help="replace existing files that differ")
    p.add_argument("--as-of", metavar="TIME|SNAPSHOT", default=None,
                   help="use the bucket's catalog snapshot of that id, or the newest at or before TIME (ISO 8601, "
                        "UTC unless a zone is given; `fs3g snapshots` lists them) instead of the newest catalog")
    p.add_argument("--at", metavar="TIME",
                   help="begin the whole restore chain at TIME, any time sbatch --begin takes (02:00, 4:00PM, "
                        "16:00 tomorrow, 2026-12-01T02:00, now+2hours, now+30minutes, tomorrow, 0101); "
                        "selection happens now")
    p.add_argument("--run-dir", metavar="DIR", help="new or empty directory (default: <run_root>/<lab>/restore-<time>)")
    add_executor_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="select, then print how many objects are ready and how many are archived and would need a "
                        "restore request (at the tier), the requests and the estimated cost; request, download and "
                        "write nothing, keep no run directory")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the dry run, or the run's status and report); the "
                        "progress lines go to stderr")
    p.set_defaults(func=handlers.cmd_restore)

    p = sub.add_parser("catalog", help="the lab's catalog: rebuild it from the bucket",
                       description="rebuild: build the lab's catalog (and a snapshot in the bucket) from listings and "
                                   "each object's metadata (one HEAD per object), for a bucket written per object "
                                   "without snapshots (the original tool's); the next backup then uploads only "
                                   "what changed.")
    actions = p.add_subparsers(dest="catalog_action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    q = actions.add_parser("rebuild", help="build the catalog from the bucket's objects and metadata",
                           description="List the roots' objects, cut them by key range into shards of "
                                       "snapshots.rebuild_shard_keys keys, HEAD each shard's objects as one task of a "
                                       "job array (or a local process), then merge the shards into the lab's catalog "
                                       "and write its snapshot. A stopped rebuild resumes with --resume RUN_DIR: "
                                       "shards already done are kept.")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--workers", type=positive, default=32, metavar="N", help="HEAD requests in flight per task")
    q.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.LOCAL.value,
                   help="local (the default: processes here, then the merge), slurm (a job array and a merge job), "
                        "or auto (slurm when `scontrol ping` answers)")
    q.add_argument("--wait", action="store_true", help="slurm: wait for the merge job and print its report")
    q.add_argument("--run-dir", metavar="DIR", help="new or empty run directory (default: "
                                                    "<run_root>/<lab>/rebuild-<UTC time>)")
    q.add_argument("--resume", metavar="RUN_DIR", help="an earlier rebuild run: its shards not done, then the merge")
    q.set_defaults(func=handlers.cmd_catalog)

    p = sub.add_parser("snapshots", help="the catalog snapshots in the bucket",
                       description="List the lab's catalog snapshots ([PREFIX/]catalog/<id>/): time, files, bytes "
                                   "and what changed since the one before.")
    p.add_argument("--config", metavar="LAB.yaml", help="the lab policy (required)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    actions = p.add_subparsers(dest="snapshots_action", metavar="ACTION", parser_class=Parser)
    q = actions.add_parser("verify", help="every object or pack a snapshot names is in the bucket with its size",
                           description="Check, from listings (no HEAD), that every object or pack SNAPSHOT (default: "
                                       "the newest) names is in the bucket with its recorded size. Exit 0 when all "
                                       "are, 1 naming those that are not, 2 for a chunk that fails its checksum.")
    q.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help="a snapshot id, or a time (the newest before it)")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--json", action="store_true", help="one JSON object on stdout")
    q.set_defaults(func=handlers.cmd_snapshots)
    p.set_defaults(func=handlers.cmd_snapshots)

    p = sub.add_parser("prune", help="forget snapshots the retention rule does not keep, delete what no kept "
                                     "snapshot references (a dry run unless --apply)",
                       description="Apply the policy's retention: section. By default a dry run: the snapshots "
                                   "kept and forgotten, the objects and packs no kept snapshot references, the "
                                   "bytes and monthly cost freed and the early-deletion charge of deleting them now. "
                                   "Runs as a job array of key ranges (--executor): each task lists its range, "
                                   "writes its delete list, then (--apply) deletes it in journaled batches; the "
                                   "merge deletes the forgotten snapshots' chunks, their manifests last. Refuses "
                                   "while a backup holds the lab's lock; holds locks/prune.json while it deletes "
                                   "(backups refuse meanwhile). After a kill, --apply again resumes the run.")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--apply", action="store_true", help="delete (default: only say what would be deleted)")
    p.add_argument("--allow-early-delete", action="store_true",
                   help="also delete objects still inside their class's minimum duration (the charge is shown)")
    p.add_argument("--include-archived", action="store_true",
                   help="compact packs in GLACIER or DEEP_ARCHIVE too (restore-requested first, the thaw cost shown; "
                        "compacted by the prune after the copy is readable)")
    p.add_argument("--break-lock", action="store_true",
                   help="remove a stale backup (or prune) lock, then stop; check the backup is gone first")
    p.add_argument("--region", help="price region (default: the policy's s3.region, else us-east-1)")
    p.add_argument("--pricing", metavar="FILE", help="price table (default: the shipped configs/pricing.yaml)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.AUTO.value,
                   help="the key-range shards as a Slurm job array (slurm), as local processes (local), or auto "
                        "(slurm when `scontrol ping` answers)")
    p.add_argument("--wait", action="store_true",
                   help="with --apply on Slurm: wait for the merge job and print the report (a dry run always waits)")
    p.add_argument("--batch-keys", type=positive, default=1000, metavar="N",
                   help="keys per DeleteObjects request, 1-1000 (default 1000; some stores take fewer)")
    p.set_defaults(func=handlers.cmd_prune)

    p = sub.add_parser("prune-shard", help="list, join and delete one key range of a prune run (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=handlers.cmd_prune_shard)

    p = sub.add_parser("prune-merge", help="delete a prune run's forgotten snapshots, release its lock, report")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=handlers.cmd_prune_merge)

    p = sub.add_parser("restore-stage", help="request and poll Glacier restores of a restore run (the poll job)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--executor", choices=["slurm", "none"], default="none",
                   help="slurm: resubmit itself with --begin while waiting, then submit the download (default: "
                        "none, poll once and print)")
    p.set_defaults(func=handlers.cmd_restore_stage)

    p = sub.add_parser("restore-shard", help="download and verify one shard of a restore (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=handlers.cmd_restore_shard)

    p = sub.add_parser("restore-merge", help="write a restore's report.json")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=handlers.cmd_restore_merge)

    p = sub.add_parser("estimate", help="what a backup, its storage and a restore cost, before anything moves",
                       description="Request counts (PUT, LIST, HEAD), lifecycle transitions, monthly storage by class "
                                   "(with Glacier's per-object overhead and minimum sizes), restore cost and time per "
                                   "tier, and early-deletion exposure, from a plan (--run-dir) or a fresh scan, with "
                                   "the prices of configs/pricing.yaml (dated, per region).")
    p.add_argument("paths", nargs="*", metavar="PATH", help="only files under these paths")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--run-dir", metavar="DIR", help="a plan made by `fs3g plan` (default: scan the roots now)")
    p.add_argument("--region", help="price region (default: the policy's s3.region, else us-east-1)")
    p.add_argument("--pricing", metavar="FILE", help="price table (default: the shipped configs/pricing.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=handlers.cmd_estimate)

    p = sub.add_parser("schedule", help="the lab's backup schedule as cluster jobs",
                       description="install: the policy's schedule.backup as scrontab entries where scrontab exists, "
                                   "otherwise a self-renewing chain: a job pending with --begin until the next due "
                                   "time, which submits its successor and then the backup (a failed backup never "
                                   "breaks the chain); one chain per lab (installing again replaces it). list: the "
                                   "queued links. remove: cancels them. fire: what a link runs.")
    p.add_argument("action", choices=["install", "list", "remove", "fire"])
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy (on a shared filesystem)")
    p.add_argument("--chain", action="store_true", help="use the job chain even where scrontab exists")
    p.set_defaults(func=handlers.cmd_schedule)

    p = sub.add_parser("status", help="where a run (or every run of a lab) stands",
                       description="Per shard: pending, running, done, failed, interrupted, or its Slurm state "
                                   "(from sacct); files and bytes done, rate, ETA; the merge's verdict when there is "
                                   "one.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--config", metavar="LAB.yaml", help="every run under the lab's run root")
    p.add_argument("--json", action="store_true",
                   help="print the run as one JSON object (with --config: a JSON list of the lab's runs)")
    p.set_defaults(func=handlers.cmd_status)

    p = sub.add_parser("policy", help="the bucket lifecycle rules a lab policy implies: show or apply them",
                       description="A lab owns two lifecycle rules (IDs fs3g-<lab>-...): [PREFIX/]largefile/ moves "
                                   "to storage.archive_storage_class after storage.lifecycle_days, and incomplete "
                                   "multipart uploads under [PREFIX/] are aborted after 7 days. Rules that are not "
                                   "the lab's are always kept.")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    q = actions.add_parser("show", help="compare the lab's rules with the bucket's (exit 1 when they differ)",
                           description="Print the desired and current rules and the difference. Never writes. "
                                       "Exit 0 when the bucket matches the policy, 1 when it differs.")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--json", action="store_true", help='print {"desired", "current", "diff"} as JSON')
    q.set_defaults(func=handlers.cmd_policy)
    q = actions.add_parser("apply", help="write the lab's rules, keeping every other rule",
                           description="Write the lab's rules beside every rule that is not the lab's, remove the "
                                       "lab's stale rules, read the result back, and print what changed.")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    q.set_defaults(func=handlers.cmd_policy)

    p = sub.add_parser("demo", help="a whole backup of a sample tree on this machine",
                       description="Generate a sample tree, start a loopback moto server (unless --endpoint or "
                                   "AWS_ENDPOINT_URL names one), back the tree up on the local executor (or Slurm), "
                                   "verify it, print the report. Leaves nothing running.")
    p.add_argument("--dir", default="fs3g-demo", help="where the tree, policy and runs go (default ./fs3g-demo)")
    p.add_argument("--endpoint", help="use this S3 endpoint instead of a local moto server")
    p.add_argument("--bucket", default="fs3g-demo", help="bucket to use (created when missing)")
    p.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.LOCAL.value)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("completion", help="print the bash or zsh completion script",
                       description='bash: `eval "$(fs3g completion bash)"` in ~/.bashrc, or save it as '
                                   "/etc/bash_completion.d/fs3g; zsh: save it as _fs3g in a directory of $fpath.")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    p.set_defaults(func=handlers.cmd_completion)

    p = sub.add_parser("manpage", help="print the fs3g(1) man page (roff)",
                       description="e.g. `fs3g manpage > /usr/local/share/man/man1/fs3g.1`, then `man fs3g`.")
    p.set_defaults(func=handlers.cmd_manpage)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    """`fs3g demo`, imported when run: every other command's process (a restore or backup task on a node) is spared
    loading it and what it brings (urllib.request, http.client: ~40 ms of start-up)."""
    from . import demo

    return demo.cmd_demo(args)

