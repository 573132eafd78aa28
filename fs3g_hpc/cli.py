"""Command-line entry points. Exit codes live here and only here.

0 success; 1 the work ran but something differs or failed; 2 bad usage, config or input; 3 internal error;
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from enum import IntEnum
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from . import __version__
from .config import FileKind, Policy, RestoreTier, ValidationResult, load_policy, schema_keys, validate_file
from .errors import ConfigError, Fs3gError, UsageError
from .model.sizes import format_size
from .runs.executor import Executor, fs3g_argv, resolve

if TYPE_CHECKING:
    from .backup.run import PlanRequest
    from .compare.run import CompareRequest
    from .restore.run import RunVerdict
    from .restore.select import RestoreRequest

log = logging.getLogger("fs3g_hpc")


class ExitCode(IntEnum):
    OK = 0
    DIFFERENCES = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but its usage errors exit with our code 2 and one line that says what to do."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbosity < 3:  # botocore's debug output is very large; -vvv shows it
        logging.getLogger("botocore").setLevel(max(level, logging.INFO))
        logging.getLogger("urllib3").setLevel(max(level, logging.INFO))


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
    from .backup.run import plan_backup

    executor = getattr(args, "executor", None)
    summary = plan_backup(load_policy(args.config), _plan_request(args, Executor(executor) if executor else None))
    print("\n".join(summary.lines()))
    args.planned_run_dir = str(summary.run_dir)  # for a crash file
    return ExitCode.OK


def _plan_request(args: argparse.Namespace, executor: Executor | None) -> "PlanRequest":
    from .backup.run import PlanRequest
    from .scan import ScanSettings

    return PlanRequest(full=args.full, run_dir=Path(args.run_dir) if args.run_dir else None,
                       scan=ScanSettings(workers=args.scan_workers, run_records=args.scan_run_records),
                       executor=executor)


def _requeue_this_task() -> None:
    """Put this Slurm job (or array task) back in the queue; its rerun resumes from the journal."""
    from .slurm import commands

    job = os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        commands.requeue(f"{array}_{task}" if array and task else job)
        log.warning("requeued %s before its time limit; the rerun resumes from the journal", job)


def cmd_run_shard(args: argparse.Namespace) -> int:
    from .backup.task import run_shard
    from .runs.files import ShardStatus

    result = run_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    print(f"shard {args.shard if args.shard is not None else os.environ.get('SLURM_ARRAY_TASK_ID')}: "
          f"{result.status.value}: {result.uploaded:,} uploaded, {result.skipped:,} already done, {result.failed:,} failed"
          + (f" (stopped by {result.signal_name}; rerun to resume)" if result.signal_name else ""))
    if result.status == ShardStatus.INTERRUPTED:
        return ExitCode.INTERRUPTED
    return ExitCode.DIFFERENCES if result.status == ShardStatus.FAILED else ExitCode.OK


def cmd_merge(args: argparse.Namespace) -> int:
    from .backup.run import merge_and_retry

    return merge_and_retry(Path(args.run_dir), args.retry_executor)


def cmd_policy(args: argparse.Namespace) -> int:
    import json

    from .transfer.lifecycle import apply_bucket_policy, read_state

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
    from .compare.run import CompareRequest
    from .scan import ScanSettings

    return CompareRequest(tuple(args.paths), check_sha256=args.check_sha256, against_bucket=args.against_bucket,
                          workers=args.workers, as_json=args.json, limit=args.limit,
                          scan_settings=ScanSettings(workers=args.scan_workers, run_records=args.scan_run_records))


def _differences(ok: bool | None) -> int:
    return ExitCode.DIFFERENCES if ok is False else ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run

    policy = load_policy(args.config)
    if args.against_bucket:
        check_target(policy, write=False)
    if args.executor is None:
        if args.wait or args.run_dir:
            raise UsageError("--wait and --run-dir go with --executor (a compare whose hashes a job array reads)")
        return _differences(run.compare_here(policy, _compare_request(args), sys.stdout).ok)
    prepared = run.prepare_jobs(policy, _compare_request(args), Path(args.run_dir) if args.run_dir else None,
                                sys.stdout)
    if resolve(Executor(args.executor)) is Executor.LOCAL:
        from .runs.executor import run_here

        return run_here(prepared.run_dir, prepared.shards, fs3g_argv(), shard_command="compare-shard",
                        merge=partial(_compare_merge, prepared.run_dir), label="compare", resume=run.RESUME_LOCAL,
                        interrupted=ExitCode.INTERRUPTED)
    return _differences(run.submit_and_follow(policy, prepared, fs3g=fs3g_argv(), wait=args.wait, limit=args.limit,
                                              out=sys.stdout))


def cmd_submit(args: argparse.Namespace) -> int:
    from .backup.run import submit_backup_run

    return submit_backup_run(Path(args.run_dir), Executor(args.executor), args.wait)


def cmd_backup(args: argparse.Namespace) -> int:
    from .backup.run import plan_backup, submit_backup_run

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
            from .dryrun import backup_dry_run

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
    from .transfer.target import check_target as check

    check(policy, write=write)


def _human_output(as_json: bool) -> contextlib.AbstractContextManager:
    """With --json, the human lines go to stderr, so that stdout is one JSON object."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=1, default=str))


def _slurm_states() -> Callable[[list[str]], dict[int, str]] | None:
    """sacct's per-task states when Slurm answers, else None (a local run has its own files only)."""
    from .slurm import commands

    return commands.array_task_states if commands.slurm_available() else None


def _print_outcome(command: str, code: int, run_dir: Path) -> None:
    from .status import CommandOutcome, restore_status, retry_rounds, run_status

    if command == "restore":
        runs: list = [restore_status(run_dir)]
    else:
        states = _slurm_states()
        runs = [run_status(r, states) for r in retry_rounds(run_dir)]
    _print_json(CommandOutcome(command, int(code), runs).to_json())


def cmd_compare_shard(args: argparse.Namespace) -> int:
    from .compare.run import hash_shard

    hash_shard(Path(args.run_dir), args.shard, sys.stdout)
    return ExitCode.OK


def _compare_merge(run_dir: Path) -> int:
    from .compare.run import merge

    return _differences(merge(run_dir, sys.stdout).ok)


def cmd_compare_merge(args: argparse.Namespace) -> int:
    return _compare_merge(Path(args.run_dir))


def cmd_estimate(args: argparse.Namespace) -> int:
    import json
    import shutil
    import tempfile

    from .estimate import estimate, plan_figures, prices_for, render
    from .runs.layout import ensure_private_dir, lab_dir
    from .backup.plan import PlanOptions, make_plan
    from .scan import ScanSettings

    policy = load_policy(args.config)
    prices = prices_for(policy, Path(args.pricing) if args.pricing else None, args.region)
    wanted = tuple(os.fsencode(os.path.normpath(os.path.abspath(p))) for p in args.paths)
    scratch = None
    try:
        if args.run_dir:
            run_dir = Path(args.run_dir)
            scope = f"plan {run_dir}"
        else:  # a fresh scan: a full plan into a private scratch directory, removed afterwards
            scratch = Path(tempfile.mkdtemp(prefix=".estimate-", dir=ensure_private_dir(lab_dir(policy))))
            run_dir = scratch / "plan"
            make_plan(policy, run_dir, PlanOptions(full=True, catalog=None, scan=ScanSettings(
                workers=len(os.sched_getaffinity(0))), max_array_size=1001, max_array_size_source="estimate"))
            scope = f"a fresh scan of {', '.join(policy.roots)}"
        figures = plan_figures(run_dir, policy, prices, scope, wanted)
        upload, stored = figures.upload, figures.stored
        result = estimate(upload, stored, policy, prices)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"scope": figures.scope, "upload": vars(upload), "stored": vars(stored), **result.to_json()},
                         indent=1))
    else:
        print("\n".join(render(result, upload, stored, figures.scope)))
    return ExitCode.OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from .runs.layout import ensure_private_dir, lab_dir, read_json, write_json_atomic
    from .schedule import Schedule, replace_block, scrontab_lines
    from .slurm import commands
    from .slurm.jobs import schedule_job_name
    from .slurm.submit import submit_schedule_link

    config = Path(args.config).absolute()  # the chain's jobs read it from the shared filesystem
    policy = load_policy(config)
    name = schedule_job_name(policy)
    state_dir = lab_dir(policy) / "schedule"
    state_file = state_dir / "state.json"
    use_scrontab = commands.scrontab_available() and not args.chain

    if args.action == "list":
        jobs = commands.queued_jobs(name)
        for job in jobs:
            print(f"{name}: job {job.job_id} {job.state}, begins {job.begins}")
        if use_scrontab:
            block = [line for line in commands.read_scrontab().splitlines() if policy.lab.name in line or
                     line.startswith("#SCRON")]
            print("\n".join(block) or "no scrontab entries")
        if not jobs and not use_scrontab:
            print(f"no schedule installed for lab {policy.lab.name}")
        if state_file.exists():
            last = read_json(state_file)
            print(f"schedule {last.get('schedule')!r}; last fired {last.get('last_fired', 'never')}"
                  + (f", backup exit {last['last_exit']}" if "last_exit" in last else ""))
        return ExitCode.OK

    if args.action == "remove":
        jobs = commands.queued_jobs(name)
        commands.cancel([j.job_id for j in jobs])
        if use_scrontab:
            commands.write_scrontab(replace_block(commands.read_scrontab(), policy.lab.name, []), lab_dir(policy))
        state_file.unlink(missing_ok=True)
        print(f"removed the schedule of lab {policy.lab.name} ({len(jobs)} queued job(s) cancelled)")
        return ExitCode.OK

    if policy.schedule.backup is None:
        raise UsageError("no schedule in the policy", path=str(config), key="schedule.backup",
                         hint="set schedule.backup, e.g. \"0 2 * * *\" or \"every 12h\"")
    schedule = Schedule.parse(policy.schedule.backup)
    ensure_private_dir(lab_dir(policy))
    now = datetime.now().astimezone()
    due = schedule.next_after(now)

    if args.action == "install":
        if use_scrontab and schedule.interval_s is None:
            command = [*fs3g_argv(), "backup", "--config", str(config), "--executor", "slurm"]
            block = scrontab_lines(policy.lab.name, schedule, command, [f"--job-name={name}"])
            commands.write_scrontab(replace_block(commands.read_scrontab(), policy.lab.name, block), lab_dir(policy))
            print(f"scrontab: lab {policy.lab.name} backs up at {schedule.text!r}; next {due:%Y-%m-%d %H:%M}")
            return ExitCode.OK
        old = commands.queued_jobs(name)
        commands.cancel([j.job_id for j in old])  # one chain per lab: installing again replaces it
        job = submit_schedule_link(policy, config, state_dir, fs3g_argv(), due)
        write_json_atomic(state_file, {"schedule": schedule.text, "config": str(config), "next_job": job,
                                       "next_due": due.isoformat()})
        print(f"scheduled: job {job} ({name}) begins {due:%Y-%m-%d %H:%M:%S}, then renews itself; "
              f"see `fs3g schedule list --config {args.config}`" + (f" (replaced {len(old)} queued)" if old else ""))
        return ExitCode.OK

    # fire: the chain's link that is due now. The successor goes first, so a failing backup never ends the chain.
    job = submit_schedule_link(policy, config, state_dir, fs3g_argv(), due)
    state = read_json(state_file) if state_file.exists() else {"schedule": schedule.text, "config": str(config)}
    state.update(next_job=job, next_due=due.isoformat(), last_fired=now.isoformat())
    write_json_atomic(state_file, state)
    print(f"next link: job {job} at {due:%Y-%m-%d %H:%M:%S}; now backing up lab {policy.lab.name}", flush=True)
    code = subprocess.run([*fs3g_argv(), "backup", "--config", str(config), "--executor", "slurm"],
                          stdin=subprocess.DEVNULL).returncode
    state["last_exit"] = code
    write_json_atomic(state_file, state)
    return code


def cmd_restore(args: argparse.Namespace) -> int:
    from .config import RestoreTier
    from .restore.run import run_restore
    from .restore.select import RestoreRequest, default_restore_dir, prepare_restore

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
    request = RestoreRequest(tuple(args.paths), dest, tier, args.days or policy.restore.days, args.overwrite)
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


def restore_exit_code(verdict: RunVerdict) -> int:
    from .restore.run import RunVerdict

    return {RunVerdict.COMPLETE: ExitCode.OK, RunVerdict.INCOMPLETE: ExitCode.DIFFERENCES,
            RunVerdict.INTERRUPTED: ExitCode.INTERRUPTED}[verdict]


def _restore_dry_run(policy: Policy, request: RestoreRequest, args: argparse.Namespace) -> int:
    from .dryrun import preview_restore

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
    from .model.begintime import EXAMPLES, is_begin_time
    from .slurm import commands

    verdict = commands.begin_time_accepted(text) if commands.slurm_available() else None
    if not (is_begin_time(text) if verdict is None else verdict):
        raise UsageError(f"--at {text!r}: not a time sbatch --begin takes",
                         hint=f"e.g. {EXAMPLES} (see sbatch(1), --begin)")
    return text


def cmd_restore_stage(args: argparse.Namespace) -> int:
    from .restore.run import stage_step

    stage_step(Path(args.run_dir), chain_on_slurm=args.executor == "slurm", fs3g=fs3g_argv())
    return ExitCode.OK


def cmd_restore_shard(args: argparse.Namespace) -> int:
    from .restore.task import ShardState, restore_shard

    result = restore_shard(Path(args.run_dir), args.shard, on_requeue=_requeue_this_task)
    print(f"restore shard: {result.state.value}: {result.restored:,} restored, {result.present:,} already present, "
          f"{result.failed:,} failed" + (f" (stopped by {result.signal_name}; rerun to resume)"
                                         if result.signal_name else ""))
    if result.state is ShardState.INTERRUPTED:
        return ExitCode.INTERRUPTED
    return ExitCode.DIFFERENCES if result.state is ShardState.FAILED else ExitCode.OK


def cmd_restore_merge(args: argparse.Namespace) -> int:
    from .restore.merge import merge_and_report

    return ExitCode.OK if merge_and_report(Path(args.run_dir)).ok else ExitCode.DIFFERENCES


def cmd_demo(args: argparse.Namespace) -> int:
    import contextlib

    from .config import load_policy
    from .demo import make_sample_tree, moto_server, write_demo_policy
    from .backup.plan import PlanOptions, make_plan
    from .backup.run import cluster_max_array_size, submit_backup_run
    from .runs.catalog import catalog_path
    from .scan import ScanSettings
    from .transfer.client import ClientSettings, ensure_bucket, make_s3_client

    base = Path(args.dir).resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    count = make_sample_tree(base / "data")
    print(f"demo: sample tree {base / 'data'} ({count} files and links)")
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL")
        fresh_endpoint = endpoint is None
        if endpoint is None:
            endpoint = stack.enter_context(moto_server(base / "moto.log"))
            # moto accepts any credentials; these dummy ones live only in this process's environment and its children.
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "fs3g-demo")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "fs3g-demo")
            print(f"demo: started a moto server at {endpoint} (stopped at the end)")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        policy_file = base / "lab.yaml"
        write_demo_policy(policy_file, base / "data", base / "runs", endpoint, args.bucket)
        policy = load_policy(policy_file, environ={})
        ensure_bucket(make_s3_client(ClientSettings.from_policy(policy)), policy.s3.bucket)
        max_array, source = cluster_max_array_size(Executor(args.executor))
        # A moto server started here is empty: whatever the catalog says, everything must go again.
        summary = make_plan(policy, _default_demo_run(policy), PlanOptions(
            full=fresh_endpoint, catalog=catalog_path(policy), scan=ScanSettings(workers=len(os.sched_getaffinity(0))),
            max_array_size=max_array, max_array_size_source=source))
        print("\n".join(summary.lines()))
        code = submit_backup_run(summary.run_dir, Executor(args.executor), wait=True)
        print(f"demo: run directory {summary.run_dir} (report.json, summary.txt); policy {policy_file}")
        return code


def _default_demo_run(policy: Policy) -> Path:
    from .runs.layout import default_run_dir

    return default_run_dir(policy, datetime.now(timezone.utc))


def cmd_status(args: argparse.Namespace) -> int:
    from .status import is_run_dir, run_status, runs_of_lab

    if (args.run_dir is None) == (args.config is None):
        raise UsageError("give a RUN_DIR or --config LAB.yaml")
    slurm_states = _slurm_states()
    if args.run_dir is not None:
        run = Path(args.run_dir)
        if not is_run_dir(run):
            raise UsageError("not a run directory (no plan.json, restore.json or compare.json)", path=str(run),
                             hint="give a directory made by fs3g plan, backup, restore or compare, or --config "
                                  "LAB.yaml")
        if args.json:
            _print_json(run_status(run, slurm_states).to_json())
        else:
            print("\n".join(run_status(run, slurm_states).lines()))
        return ExitCode.OK
    from .runs.layout import lab_dir

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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_completion(args: argparse.Namespace) -> int:
    from .shellsupport import Shell, completion_script

    sys.stdout.write(completion_script(build_parser(), Shell(args.shell)))
    return ExitCode.OK


def cmd_manpage(args: argparse.Namespace) -> int:
    from .shellsupport import manpage

    sys.stdout.write(manpage(build_parser()))
    return ExitCode.OK


def _add_executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.AUTO.value,
                   help="slurm, local, or auto (slurm when `scontrol ping` answers)")
    p.add_argument("--wait", action="store_true", help="wait for the merge (and its retries) and exit with the verdict")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fs3g", description="Back up and restore research filesystems to S3 and Glacier "
                                              "with Slurm job arrays.")
    parser.add_argument("--version", action="version", version=f"fs3g-hpc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: -v progress, -vv debug, -vvv botocore too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("validate", help="check site and lab policy files",
                       description="Check policy files. A lab file is checked together with its site file. "
                                   "Exit 0 when all are valid, 2 with one line per problem otherwise.")
    p.add_argument("files", nargs="*", metavar="FILE", help="policy YAML files")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.add_argument("--list-keys", action="store_true", help="list every policy key with its default and meaning")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="scan a lab's roots and write a run directory of shards",
                       description="Walk the policy's roots in parallel, compare with the lab's catalog (the last "
                                   "successful backup), and cut what is new or changed into shards for a job array.")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--run-dir", metavar="DIR", help="new or empty directory (default: <run_root>/<lab>/<lab>-<time>)")
    p.add_argument("--full", action="store_true", help="ignore the catalog: plan every file")
    p.add_argument("--scan-workers", type=_positive, default=len(os.sched_getaffinity(0)), metavar="N",
                   help="walker processes (default: the CPUs this process may use; 0 walks in-process)")
    p.add_argument("--scan-run-records", type=_positive, default=100_000, metavar="N",
                   help="entries each walker holds before spilling a sorted run; memory ≈ workers × N × 300 B")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run-shard", help="upload one shard of a plan (what each array task runs)",
                       description="Upload the entries of one shard with the policy the plan recorded. Resumes from "
                                   "its journal when run again. Exit 0 when every file is backed up, 1 when some "
                                   "failed (listed in results/shard-N.failures.jsonl), 130 when stopped by a signal.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    p.add_argument("--shard", type=_positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=cmd_run_shard)

    p = sub.add_parser("merge", help="verify a run against the bucket, write the catalog and report.json",
                       description="Check every planned entry: journaled by its shard and listed in the bucket with "
                                   "the recorded size and ETag. Writes report.json, summary.txt, failures.jsonl and "
                                   "the lab's catalog. Exit 0 only when every planned entry is verified.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    p.add_argument("--retry-executor", choices=["none", "local", "slurm"], default="none",
                   help="on failure, run exactly what failed again (RUN_DIR/retry-N, with its own merge), up to the "
                        "policy's retry_rounds (default: none, print how to retry)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("submit", help="run a planned backup: shard arrays, then the merge",
                       description="Submit one job array per MaxArraySize shards and, right away, the merge with "
                                   "afterany on every array (slurm); or run the shards as local processes and then "
                                   "the merge (local). auto picks slurm when `scontrol ping` answers.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `fs3g plan`")
    _add_executor_arguments(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("backup", help="plan, then submit (the main job)",
                       description="`fs3g plan` into a new run directory under the policy's run root, then "
                                   "`fs3g submit` it.")
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    p.add_argument("--full", action="store_true", help="ignore the catalog: back up every file")
    _add_executor_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="plan, then print what would be uploaded (counts and bytes by class), the requests and the "
                        "estimated cost; upload nothing and submit no job. The plan is kept: `fs3g submit RUN_DIR` "
                        "runs exactly it")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the dry run, or the run's status and final report); the "
                        "progress lines go to stderr")
    p.set_defaults(func=cmd_backup, scan_workers=len(os.sched_getaffinity(0)), scan_run_records=100_000)

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
    p.add_argument("--workers", type=_positive, default=8, metavar="N",
                   help="files hashed / objects read at once (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines and a table")
    p.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help="print at most N discrepancies (the counts stay complete)")
    p.add_argument("--scan-workers", type=_positive, default=len(os.sched_getaffinity(0)), metavar="N",
                   help="walker processes (default: the CPUs this process may use; 0 walks in-process)")
    p.add_argument("--scan-run-records", type=_positive, default=100_000, metavar="N",
                   help="entries each walker holds before spilling a sorted run; memory ≈ workers × N × 300 B")
    p.add_argument("--executor", choices=[e.value for e in Executor], default=None,
                   help="with --check-sha256: read and hash the files in a job array (slurm), or in local "
                        "processes (local), instead of in this process; the rest of the compare runs here")
    p.add_argument("--wait", action="store_true", help="with --executor: wait for the array's merge and print it")
    p.add_argument("--run-dir", metavar="DIR", help="with --executor: new or empty run directory (default: "
                                                    "<run_root>/<lab>/compare-<time>)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("compare-shard", help="hash one shard of a compare run (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=_positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=cmd_compare_shard)

    p = sub.add_parser("compare-merge", help="add a compare run's hash checks together and print the verdict")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_compare_merge)

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
    p.add_argument("--days", type=_positive, metavar="N", help="days the restored copies stay readable")
    p.add_argument("--overwrite", action="store_true", help="replace existing files that differ")
    p.add_argument("--at", metavar="TIME",
                   help="begin the whole restore chain at TIME, any time sbatch --begin takes (02:00, 4:00PM, "
                        "16:00 tomorrow, 2026-12-01T02:00, now+2hours, now+30minutes, tomorrow, 0101); "
                        "selection happens now")
    p.add_argument("--run-dir", metavar="DIR", help="new or empty directory (default: <run_root>/<lab>/restore-<time>)")
    _add_executor_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="select, then print how many objects are ready and how many are archived and would need a "
                        "restore request (at the tier), the requests and the estimated cost; request, download and "
                        "write nothing, keep no run directory")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the dry run, or the run's status and report); the "
                        "progress lines go to stderr")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("restore-stage", help="request and poll Glacier restores of a restore run (the poll job)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--executor", choices=["slurm", "none"], default="none",
                   help="slurm: resubmit itself with --begin while waiting, then submit the download (default: "
                        "none, poll once and print)")
    p.set_defaults(func=cmd_restore_stage)

    p = sub.add_parser("restore-shard", help="download and verify one shard of a restore (each array task)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--shard", type=_positive, metavar="N", help="shard number (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=cmd_restore_shard)

    p = sub.add_parser("restore-merge", help="write a restore's report.json")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_restore_merge)

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
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("schedule", help="the lab's backup schedule as cluster jobs",
                       description="install: the policy's schedule.backup as scrontab entries where scrontab exists, "
                                   "otherwise a self-renewing chain: a job pending with --begin until the next due "
                                   "time, which submits its successor and then the backup (a failed backup never "
                                   "breaks the chain); one chain per lab (installing again replaces it). list: the "
                                   "queued links. remove: cancels them. fire: what a link runs.")
    p.add_argument("action", choices=["install", "list", "remove", "fire"])
    p.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy (on a shared filesystem)")
    p.add_argument("--chain", action="store_true", help="use the job chain even where scrontab exists")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("status", help="where a run (or every run of a lab) stands",
                       description="Per shard: pending, running, done, failed, interrupted, or its Slurm state "
                                   "(from sacct); files and bytes done, rate, ETA; the merge's verdict when there is "
                                   "one.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--config", metavar="LAB.yaml", help="every run under the lab's run root")
    p.add_argument("--json", action="store_true",
                   help="print the run as one JSON object (with --config: a JSON list of the lab's runs)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("policy", help="the bucket lifecycle rules a lab policy implies: show or apply them",
                       description="A lab owns two lifecycle rules (IDs fs3g-<lab>-...): [PREFIX/]largefile/ moves "
                                   "to storage.archive_storage_class after storage.lifecycle_days, and incomplete "
                                   "multipart uploads under [PREFIX/] are aborted after 7 days. Rules that are not "
                                   "the lab's are always kept.")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    q = actions.add_parser("show", help="compare the lab's rules with the bucket's (exit 1 when they differ)",
                           description="Print the desired and current rules and the difference. Never writes. "
                                       "Exit 0 when the bucket matches the policy, 1 when it differs.")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--json", action="store_true", help='print {"desired", "current", "diff"} as JSON')
    q.set_defaults(func=cmd_policy)
    q = actions.add_parser("apply", help="write the lab's rules, keeping every other rule",
                           description="Write the lab's rules beside every rule that is not the lab's, remove the "
                                       "lab's stale rules, read the result back, and print what changed.")
    q.add_argument("--config", required=True, metavar="LAB.yaml", help="the lab policy")
    q.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    q.set_defaults(func=cmd_policy)

    p = sub.add_parser("demo", help="a whole backup of a sample tree on this machine",
                       description="Generate a sample tree, start a loopback moto server (unless --endpoint or "
                                   "AWS_ENDPOINT_URL names one), back the tree up on the local executor (or Slurm), "
                                   "verify it, print the report. Leaves nothing running.")
    p.add_argument("--dir", default="fs3g-demo", help="where the tree, policy and runs go (default ./fs3g-demo)")
    p.add_argument("--endpoint", help="use this S3 endpoint instead of a local moto server")
    p.add_argument("--bucket", default="fs3g-demo", help="bucket to use (created when missing)")
    p.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.LOCAL.value)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("completion", help="print the bash or zsh completion script",
                       description='bash: `eval "$(fs3g completion bash)"` in ~/.bashrc, or save it as '
                                   "/etc/bash_completion.d/fs3g; zsh: save it as _fs3g in a directory of $fpath.")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    p.set_defaults(func=cmd_completion)

    p = sub.add_parser("manpage", help="print the fs3g(1) man page (roff)",
                       description="e.g. `fs3g manpage > /usr/local/share/man/man1/fs3g.1`, then `man fs3g`.")
    p.set_defaults(func=cmd_manpage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen command, and turn every outcome into one of our exit codes (fs3g and
    fasts3plusglacier alike). An internal error's traceback goes to a crash file (see crash.py) named in its line."""
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ConfigError as e:
        print(e, file=sys.stderr)
        return ExitCode.USAGE
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as e:  # noqa: BLE001 - the last resort: one line, the traceback in a crash file
        target = _target_error(e)
        if target is not None:  # the bucket, credentials or endpoint: the user's to fix
            print(f"{parser.prog}: error: {target}", file=sys.stderr)
            return ExitCode.USAGE
        log.debug("internal error", exc_info=True)
        where = _crash_file(e, argv, args)
        if isinstance(e, Fs3gError):
            print(f"{parser.prog}: error: {e}{where}", file=sys.stderr)
        else:
            print(f"{parser.prog}: internal error: {type(e).__name__}: {e}{where}; please report it",
                  file=sys.stderr)
        return ExitCode.INTERNAL


def _target_error(e: BaseException) -> Fs3gError | None:
    """The one-line TargetError for a botocore failure the user must fix (no credentials, no such bucket, access
    denied, endpoint unreachable) that reached the top; None for anything else. botocore is only looked at when it
    was loaded: a command that never talked to S3 does not import it here."""
    if "botocore" not in sys.modules:
        return None
    from .transfer.target import target_error

    return target_error(e)


def _crash_file(e: BaseException, argv: Sequence[str] | None, args: argparse.Namespace | None) -> str:
    """Write the traceback to a crash file (RUN_DIR/logs when the command has a run directory) and return the text
    naming it for the error line."""
    from .crash import write_crash_file

    run_dir = getattr(args, "run_dir", None) or getattr(args, "planned_run_dir", None)
    try:
        path = write_crash_file(e, [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)], run_dir)
    except OSError as write_error:
        return f" (no crash file: {write_error}; rerun with -vv for the traceback)"
    return f" (traceback in {path})"


def console_main() -> None:
    sys.exit(main())
