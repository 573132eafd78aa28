"""The handlers of fs3g's subcommands (parser.py binds them): each reads its arguments, calls the typed functions of
the pipeline (backup/, restore/, compare/, estimate.py, schedule_run.py, status.py), prints, and returns an exit code
(exitcodes.py). Errors propagate to main.run_parser, which maps them."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import FileKind, Policy, RestoreTier, ValidationResult, load_policy, schema_keys, validate_file
from ..errors import UsageError
from ..model.sizes import format_size
from ..model.snapshots import is_snapshot_id, parse_as_of
from ..runs.executor import Executor, fs3g_argv, resolve
from .exitcodes import ExitCode, compare_exit_code, prune_exit_code, restore_exit_code, shard_exit_code

if TYPE_CHECKING:
    from ..backup.run import PlanRequest
    from ..prune.merge import PruneResult
    from ..compare.run import CompareRequest
    from ..restore.select import RestoreRequest
    from ..snapshots.rebuild import RebuildSummary

log = logging.getLogger("fs3g_hpc")


def _describe(policy: Policy) -> str:
    prefix = f"/{policy.s3.prefix}" if policy.s3.prefix else ""
    mem = f", slurm mem {format_size(policy.slurm.mem_bytes)}" if policy.slurm.mem_bytes else ""
    return (f"lab {policy.lab.name}, {len(policy.roots)} root(s) -> s3://{policy.s3.bucket}{prefix}/, "
            f"uploader memory ceiling {format_size(policy.uploader_memory_ceiling_bytes)} "
            f"of {format_size(policy.memory_budget_bytes)} budget{mem}")


def _show_default(path: str, default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, tuple):
        return "[" + ", ".join(map(str, default)) + "]"
    if isinstance(default, int) and not isinstance(default, bool) and path.endswith("_bytes"):
        return format_size(default)
    return str(getattr(default, "value", default))


def cmd_validate(args: argparse.Namespace) -> int:
    if args.list_keys:
        for path, doc, default in schema_keys():
            print(f"{path:38} {doc} [default: {_show_default(path, default)}]")
        return ExitCode.OK
    if not args.files:
        raise UsageError("give at least one policy file, or --list-keys")
    failed = False
    for file in args.files:
        result = validate_file(file)
        for problem in result.problems:
            print(problem, file=sys.stderr)
        failed = failed or not result.ok
        # A price table's ok line is printed even with --quiet, as before.
        if result.ok and (not args.quiet or result.kind is FileKind.PRICING):
            print(f"{file}: ok: {_describe_valid(result)}")
    return ExitCode.USAGE if failed else ExitCode.OK


def _describe_valid(result: ValidationResult) -> str:
    if result.kind is FileKind.PRICING:
        return str(result.summary)
    if result.kind is FileKind.SITE:
        return "site defaults"
    return _describe(result.policy)  # type: ignore[arg-type]


def cmd_plan(args: argparse.Namespace) -> int:
    from ..backup.run import plan_backup

    executor = getattr(args, "executor", None)
    summary = plan_backup(load_policy(args.config), _plan_request(args, Executor(executor) if executor else None))
    print("\n".join(summary.lines()))
    args.planned_run_dir = str(summary.run_dir)  # for a crash file
    return ExitCode.OK


def _plan_request(args: argparse.Namespace, executor: Executor | None) -> "PlanRequest":
    from ..backup.run import PlanRequest
    from ..scan import ScanSettings

    return PlanRequest(full=args.full, run_dir=Path(args.run_dir) if args.run_dir else None,
                       scan=ScanSettings(workers=args.scan_workers, run_records=args.scan_run_records,
                                         partitions=max(1, args.scan_workers)),
                       executor=executor)


def _requeue_this_task() -> None:
    """Put this Slurm job (or array task) back in the queue; its rerun resumes from the journal."""
    from ..slurm import commands

    job = os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        # Said first: `scontrol requeue` ends this task at once, so a line logged after it is often never written.
        log.warning("%s is requeued before its time limit; the rerun resumes from the journal", job)
        commands.requeue(f"{array}_{task}" if array and task else job)


def cmd_run_shard(args: argparse.Namespace) -> int:
    from ..backup.task import run_shard
    from ..runs.files import ShardStatus

    result = run_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    print(f"shard {args.shard if args.shard is not None else os.environ.get('SLURM_ARRAY_TASK_ID')}: "
          f"{result.status.value}: {result.uploaded:,} uploaded, {result.skipped:,} already done, {result.failed:,} failed"
          + (f" (stopped by {result.signal_name}; rerun to resume)" if result.signal_name else ""))
    return shard_exit_code(interrupted=result.status == ShardStatus.INTERRUPTED,
                           failed=result.status == ShardStatus.FAILED)


def cmd_merge(args: argparse.Namespace) -> int:
    from ..backup.run import merge_and_retry

    return merge_and_retry(Path(args.run_dir), args.retry_executor)


def cmd_policy(args: argparse.Namespace) -> int:
    from ..transfer.lifecycle import apply_bucket_policy, read_state

    policy = load_policy(args.config)
    check_target(policy, write=False)
    if args.policy_action == "show":
        state = read_state(policy)
        if args.json:
            print(json.dumps(state.to_json(), indent=2, default=str))
        else:
            print(state.text())
            if state.differs:
                print(f"to write it: fs3g policy apply --config {args.config}")
        return ExitCode.DIFFERENCES if state.differs else ExitCode.OK
    result = apply_bucket_policy(policy, dry_run=args.dry_run)
    print(result.text)
    return ExitCode.OK


def _compare_request(args: argparse.Namespace) -> "CompareRequest":
    from ..compare.run import CompareRequest
    from ..scan import ScanSettings

    if args.as_of is not None:
        if args.against_bucket:
            raise UsageError("--as-of compares with a snapshot's catalog: drop --against-bucket")
        if not is_snapshot_id(args.as_of):
            parse_as_of(args.as_of)
    return CompareRequest(tuple(args.paths), check_sha256=args.check_sha256, against_bucket=args.against_bucket,
                          as_of=args.as_of,
                          workers=args.workers, as_json=args.json, limit=args.limit,
                          scan_settings=ScanSettings(workers=args.scan_workers, run_records=args.scan_run_records))


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import run

    policy = load_policy(args.config)
    if args.against_bucket:
        check_target(policy, write=False)
    if args.executor is None:
        if args.wait or args.run_dir:
            raise UsageError("--wait and --run-dir go with --executor (a compare whose hashes a job array reads)")
        return compare_exit_code(run.compare_here(policy, _compare_request(args), sys.stdout).ok)
    prepared = run.prepare_jobs(policy, _compare_request(args), Path(args.run_dir) if args.run_dir else None,
                                sys.stdout)
    if resolve(Executor(args.executor)) is Executor.LOCAL:
        from ..runs.executor import run_here

        return run_here(prepared.run_dir, prepared.shards, fs3g_argv(), shard_command="compare-shard",
                        merge=partial(_compare_merge, prepared.run_dir), label="compare", resume=run.RESUME_LOCAL,
                        interrupted=ExitCode.INTERRUPTED)
    return compare_exit_code(run.submit_and_follow(policy, prepared, fs3g=fs3g_argv(), wait=args.wait,
                                                   limit=args.limit, out=sys.stdout))


def cmd_submit(args: argparse.Namespace) -> int:
    from ..backup.run import submit_backup_run

    return submit_backup_run(Path(args.run_dir), Executor(args.executor), args.wait)


def cmd_backup(args: argparse.Namespace) -> int:
    from ..backup.run import plan_backup, submit_backup_run

    args.run_dir = None
    if args.dry_run and args.wait:
        raise UsageError("--dry-run submits nothing to wait for: drop --wait (or --dry-run, to run the backup)")
    policy = load_policy(args.config)
    executor = Executor(args.executor)
    with _human_output(args.json):  # with --json, stdout carries only the JSON object
        summary = plan_backup(policy, _plan_request(args, executor))
        print("\n".join(summary.lines()))
        args.planned_run_dir = str(summary.run_dir)  # for a crash file
        if args.dry_run:
            from ..dryrun import backup_dry_run

            preview = backup_dry_run(policy, summary)
        else:
            code = submit_backup_run(summary.run_dir, executor, args.wait)
    if args.dry_run:
        if args.json:
            _print_json(preview.to_json())
        else:  # the plan's lines were printed above
            print("\n".join(preview.lines(with_plan=False)))
        return ExitCode.OK
    if args.json:
        _print_outcome("backup", code, summary.run_dir)
    return code


def check_target(policy: Policy, *, write: bool) -> None:
    """The preflight (transfer.target.check_target), imported when used: a command that never talks to S3 does not
    load botocore."""
    from ..transfer.target import check_target as check

    check(policy, write=write)


def _human_output(as_json: bool) -> contextlib.AbstractContextManager:
    """With --json, the human lines go to stderr, so that stdout is one JSON object."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=1, default=str))


def _slurm_states() -> Callable[[list[str]], dict[int, str]] | None:
    """sacct's per-task states when Slurm answers, else None (a local run has its own files only)."""
    from ..slurm import commands

    return commands.array_task_states if commands.slurm_available() else None


def _print_outcome(command: str, code: int, run_dir: Path) -> None:
    from ..status import CommandOutcome, restore_status, retry_rounds, run_status

    if command == "restore":
        runs: list = [restore_status(run_dir)]
    else:
        states = _slurm_states()
        runs = [run_status(r, states) for r in retry_rounds(run_dir)]
    _print_json(CommandOutcome(command, int(code), runs).to_json())


def cmd_compare_shard(args: argparse.Namespace) -> int:
    from ..compare.run import hash_shard

    hash_shard(Path(args.run_dir), args.shard, sys.stdout)
    return ExitCode.OK


def _compare_merge(run_dir: Path) -> int:
    from ..compare.run import merge

    return compare_exit_code(merge(run_dir, sys.stdout).ok)


def cmd_compare_merge(args: argparse.Namespace) -> int:
    return _compare_merge(Path(args.run_dir))


def cmd_estimate(args: argparse.Namespace) -> int:
    from ..estimate import estimate_for, prices_for, render

    policy = load_policy(args.config)
    prices = prices_for(policy, Path(args.pricing) if args.pricing else None, args.region)
    figures, result = estimate_for(policy, prices, args.paths, Path(args.run_dir) if args.run_dir else None)
    upload, stored = figures.upload, figures.stored
    if args.json:
        print(json.dumps({"scope": figures.scope, "upload": vars(upload), "stored": vars(stored), **result.to_json()},
                         indent=1))
    else:
        print("\n".join(render(result, upload, stored, figures.scope)))
    return ExitCode.OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from .. import schedule_run

    lab = schedule_run.lab_schedule(Path(args.config), chain=args.chain)
    if args.action == "list":
        print("\n".join(schedule_run.list_schedule(lab)))
    elif args.action == "remove":
        print(schedule_run.remove_schedule(lab))
    elif args.action == "install":
        print(schedule_run.install_schedule(lab, args.config))
    else:  # fire: what a link of the chain runs; the backup runs here, as `fs3g backup` would
        from .main import main

        return schedule_run.fire_link(lab, lambda: main(schedule_run.backup_arguments(lab)), sys.stdout)
    return ExitCode.OK


def cmd_restore(args: argparse.Namespace) -> int:
    from ..restore.run import run_restore
    from ..restore.select import RestoreRequest, default_restore_dir, prepare_restore

    if args.at is not None:
        args.at = checked_begin_time(args.at)
    policy = load_policy(args.config)
    if args.at and args.executor == Executor.LOCAL.value:
        raise UsageError("--at schedules the restore's jobs: it needs Slurm (--executor slurm)")
    tier = RestoreTier(args.tier) if args.tier else policy.restore.tier
    # Resolved here: the jobs that write it run in another working directory.
    dest = Path(args.dest or policy.restore.destination).absolute()
    run_dir = Path(args.run_dir) if args.run_dir else default_restore_dir(policy, datetime.now(timezone.utc))
    check_target(policy, write=False)
    if args.as_of is not None and not is_snapshot_id(args.as_of):
        parse_as_of(args.as_of)  # bad input says so before anything is read
    request = RestoreRequest(tuple(args.paths), dest, tier, args.days or policy.restore.days, args.overwrite,
                             as_of=args.as_of)
    if args.dry_run:
        return _restore_dry_run(policy, request, args)
    with _human_output(args.json):  # with --json, stdout carries only the JSON object
        layout, header = prepare_restore(policy, request, run_dir)
        print(f"restore {layout.run_dir}: {header['planned']['files']:,} files "
              f"{format_size(header['planned']['bytes'])} in {header['shard_count']} "
              f"shard{'' if header['shard_count'] == 1 else 's'} from {header['source']} "
              f"-> {dest}" + (f"; {header['refused']} refused (see {layout.refused_file})" if header["refused"]
                              else ""))
        verdict = run_restore(layout.run_dir, slurm=resolve(Executor(args.executor)) is Executor.SLURM, wait=args.wait,
                              fs3g=fs3g_argv(), begin_at=args.at)
        code = restore_exit_code(verdict)
    if args.json:
        _print_outcome("restore", code, layout.run_dir)
    return code

def _restore_dry_run(policy: Policy, request: RestoreRequest, args: argparse.Namespace) -> int:
    from ..dryrun import preview_restore

    if args.run_dir or args.wait or args.at:
        raise UsageError("--dry-run keeps no restore run and submits nothing: drop --run-dir, --wait and --at")
    preview = preview_restore(policy, request)
    if args.json:
        _print_json(preview.to_json())
    else:
        print("\n".join(preview.lines()))
    return ExitCode.OK


def checked_begin_time(text: str) -> str:
    """`--at TIME`, checked before anything is selected or written: by the cluster's own `sbatch --test-only` where
    Slurm answers (so every form that sbatch takes is taken), else by the grammar of sbatch(1) (model/begintime.py)."""
    from ..model.begintime import EXAMPLES, is_begin_time
    from ..slurm import commands

    verdict = commands.begin_time_accepted(text) if commands.slurm_available() else None
    if not (is_begin_time(text) if verdict is None else verdict):
        raise UsageError(f"--at {text!r}: not a time sbatch --begin takes",
                         hint=f"e.g. {EXAMPLES} (see sbatch(1), --begin)")
    return text


def cmd_catalog(args: argparse.Namespace) -> int:
    from ..runs.executor import choose_executor
    from ..snapshots import rebuild

    policy = load_policy(args.config)
    check_target(policy, write=True)
    if args.resume:
        if args.run_dir:
            raise UsageError("--resume continues an earlier rebuild run: drop --run-dir")
        layout, header, _policy = rebuild.load_rebuild(Path(args.resume))
    else:
        run_dir = Path(args.run_dir) if args.run_dir else rebuild.default_rebuild_dir(policy, datetime.now(timezone.utc))
        layout, header = rebuild.prepare_rebuild(policy, run_dir, workers=args.workers)
    print(f"catalog rebuild {layout.run_dir}: {header.listed:,} objects listed, {header.shard_count} shard(s) to "
          "HEAD")
    spec = rebuild.rebuild_spec(policy, layout, header, partial(_rebuild_merge, layout.run_dir))
    executor = resolve(Executor(args.executor))
    if executor is Executor.LOCAL:
        return int(choose_executor(executor).run(spec, wait=True).exit_code or 0)
    outcome = choose_executor(executor).run(spec, wait=args.wait)
    submitted = outcome.submitted
    assert submitted is not None
    print(f"submitted: arrays {', '.join(submitted.array_ids) or '(none)'}; merge {submitted.merge_id} (afterany); "
          f"the report goes to {layout.report_file}")
    if not args.wait:
        return ExitCode.OK
    summary = rebuild.read_rebuild_report(layout.run_dir)
    if summary is None:
        raise UsageError(f"catalog rebuild merge job {submitted.merge_id} ended "
                         f"{outcome.merge_state.value if outcome.merge_state else ''} without a report",
                         hint=f"see {layout.run_dir / 'logs'}; then {rebuild.resume_hint(policy, layout.run_dir)}")
    print("\n".join(summary.lines()))
    return _rebuild_exit(policy, layout.run_dir, summary)


def _rebuild_exit(policy: Policy, run_dir: Path, summary: "RebuildSummary") -> int:
    if summary.not_done:
        from ..snapshots.rebuild import resume_hint

        print(f"to resume: {resume_hint(policy, run_dir)}", file=sys.stderr)
        return ExitCode.DIFFERENCES
    return ExitCode.DIFFERENCES if summary.failed else ExitCode.OK


def _rebuild_merge(run_dir: Path) -> int:
    from ..snapshots.rebuild import load_rebuild, merge_rebuild

    _verdict, summary = merge_rebuild(run_dir)
    print("\n".join(summary.lines()))
    return _rebuild_exit(load_rebuild(run_dir)[2], run_dir, summary)


def cmd_rebuild_merge(args: argparse.Namespace) -> int:
    return _rebuild_merge(Path(args.run_dir))


def cmd_rebuild_shard(args: argparse.Namespace) -> int:
    from ..runs.files import ShardStatus
    from ..snapshots.rebuild import rebuild_shard

    result = rebuild_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    if result is None:
        print("rebuild shard: done before, kept")
        return ExitCode.OK
    print(f"rebuild shard {result.shard}: {result.count('heads'):,} HEADs, {result.count('entries'):,} records, "
          f"{result.count('failed'):,} failed: {result.status.value}")
    return shard_exit_code(interrupted=result.status is ShardStatus.INTERRUPTED,
                           failed=result.status is ShardStatus.FAILED)


def cmd_snapshots(args: argparse.Namespace) -> int:
    from ..snapshots.listing import list_snapshots

    if args.config is None:
        raise UsageError("fs3g snapshots: --config LAB.yaml is required")
    policy = load_policy(args.config)
    check_target(policy, write=False)
    if getattr(args, "snapshots_action", None) == "verify":
        return _verify_snapshot(policy, args)
    listing = list_snapshots(policy)
    if args.json:
        _print_json(listing.to_json())
    else:
        print("\n".join(listing.lines()))
    return ExitCode.OK


def _verify_snapshot(policy: Policy, args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from ..runs.layout import lab_dir
    from ..snapshots.baseline import default_client
    from ..snapshots.verify import verify_snapshot

    lab = lab_dir(policy)
    lab.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".verify-", dir=lab))
    try:
        report = verify_snapshot(policy, default_client(policy), work, args.snapshot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        _print_json(report.to_json())
    else:
        print("\n".join(report.lines()))
    return ExitCode.OK if report.ok else ExitCode.DIFFERENCES
def cmd_prune(args: argparse.Namespace) -> int:
    from ..estimate import prices_for
    from ..prune.run import break_lock, prune

    policy = load_policy(args.config)
    check_target(policy, write=args.apply or args.break_lock)
    if args.break_lock:
        print(break_lock(policy))
        return ExitCode.OK
    if args.wait and not args.apply:
        raise UsageError("--wait goes with --apply (a dry run always waits for its report)")
    try:
        prices = prices_for(policy, Path(args.pricing) if args.pricing else None, args.region)
    except UsageError:
        if args.pricing or args.region:
            raise
        prices = None  # a region the shipped table lacks: costs shown as 0
    with _human_output(args.json):
        result = prune(policy, apply=args.apply, allow_early_delete=args.allow_early_delete, prices=prices,
                       executor=Executor(args.executor), wait=args.wait, batch_keys=args.batch_keys,
                       out=sys.stdout, fs3g=fs3g_argv(), include_archived=args.include_archived)
    _print_prune(result, args.apply, args.json)
    return prune_exit_code(result.verdict)


def _print_prune(result: "PruneResult", applied: bool, as_json: bool) -> None:
    from ..prune.merge import PruneVerdict, summary_lines

    if as_json:
        data = result.plan.to_json()
        data.update({"applied": applied, "verdict": result.verdict.value, "deleted": result.deleted,
                     "errors": result.refused, "unfinished_shards": result.unfinished,
                     "run_dir": str(result.run_dir) if result.run_dir else None,
                     "compaction": result.compaction.to_json() if result.compaction else None})
        _print_json(data)
    elif result.verdict is PruneVerdict.SUBMITTED:
        print(f"follow with: fs3g status {result.run_dir}   (the merge job deletes the forgotten snapshots, releases "
              "the lock and writes report.json)")
    elif result.verdict is not PruneVerdict.INTERRUPTED:
        lines = summary_lines(result, applied)
        if applied and result.run_dir is None:
            lines[-1] = "nothing to delete"
        print("\n".join(lines))


def cmd_prune_shard(args: argparse.Namespace) -> int:
    from ..prune.task import prune_shard
    from ..runs.files import ShardStatus

    counts = prune_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    status = counts.get("status")
    print(f"prune shard: {counts.get('unreferenced', 0):,} unreferenced, {counts.get('listed_for_deletion', 0):,} "
          f"listed for deletion, {counts.get('deleted', 0):,} deleted, {counts.get('refused', 0):,} refused")
    return shard_exit_code(interrupted=status == ShardStatus.INTERRUPTED.value,
                           failed=status == ShardStatus.FAILED.value)


def cmd_prune_merge(args: argparse.Namespace) -> int:
    from ..prune.merge import merge_prune, summary_lines
    from ..prune.task import load_prune

    _, header, _ = load_prune(Path(args.run_dir))
    result = merge_prune(Path(args.run_dir))
    print("\n".join(summary_lines(result, header.apply)))
    return prune_exit_code(result.verdict)


def cmd_restore_stage(args: argparse.Namespace) -> int:
    from ..restore.run import stage_step

    stage_step(Path(args.run_dir), chain_on_slurm=args.executor == "slurm", fs3g=fs3g_argv())
    return ExitCode.OK


def cmd_restore_shard(args: argparse.Namespace) -> int:
    from ..restore.task import restore_shard
    from ..runs.files import ShardStatus

    result = restore_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    print(f"restore shard: {result.state.value}: {result.restored:,} restored, {result.present:,} already present, "
          f"{result.failed:,} failed" + (f" (stopped by {result.signal_name}; rerun to resume)"
                                         if result.signal_name else ""))
    return shard_exit_code(interrupted=result.state is ShardStatus.INTERRUPTED,
                           failed=result.state is ShardStatus.FAILED)


def cmd_restore_merge(args: argparse.Namespace) -> int:
    from ..restore.merge import merge_and_report

    return ExitCode.OK if merge_and_report(Path(args.run_dir)).ok else ExitCode.DIFFERENCES

def cmd_status(args: argparse.Namespace) -> int:
    from ..status import is_run_dir, run_status, runs_of_lab

    if (args.run_dir is None) == (args.config is None):
        raise UsageError("give a RUN_DIR or --config LAB.yaml")
    slurm_states = _slurm_states()
    if args.run_dir is not None:
        run = Path(args.run_dir)
        if not is_run_dir(run):
            raise UsageError("not a run directory (no plan.json, restore.json, compare.json, rebuild.json or "
                             "prune.json)", path=str(run),
                             hint="give a directory made by fs3g plan, backup, restore, compare, catalog rebuild or "
                                  "prune --apply, or --config "
                                  "LAB.yaml")
        if args.json:
            _print_json(run_status(run, slurm_states).to_json())
        else:
            print("\n".join(run_status(run, slurm_states).lines()))
        return ExitCode.OK
    from ..runs.layout import lab_dir

    runs = runs_of_lab(lab_dir(load_policy(args.config)))
    if args.json:  # a JSON list, one run at a time: a lab's runs are never all held at once
        sys.stdout.write("[")
        for i, run in enumerate(runs):
            sys.stdout.write(("," if i else "") + "\n" + json.dumps(run_status(run, slurm_states).to_json(),
                                                                   indent=1, default=str))
        sys.stdout.write("\n]\n")
        return ExitCode.OK
    if not runs:
        print("no runs yet")
    for run in runs:
        print("\n".join(run_status(run, slurm_states).lines()))
    return ExitCode.OK

def cmd_completion(args: argparse.Namespace) -> int:
    from ..shellsupport import Shell, completion_script
    from .parser import build_parser

    sys.stdout.write(completion_script(build_parser(), Shell(args.shell)))
    return ExitCode.OK


def cmd_manpage(args: argparse.Namespace) -> int:
    from ..shellsupport import manpage
    from .parser import build_parser

    sys.stdout.write(manpage(build_parser()))
    return ExitCode.OK
