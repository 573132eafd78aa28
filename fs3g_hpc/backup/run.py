"""A backup run from end to end: plan, submit (slurm or local, runs/executor.py), follow the merge and the retry
rounds it submits, and the merge's own retry decision. The CLI's backup handlers call these with typed arguments.

    plan_backup       scan and plan into a run directory (backup/plan.py), MaxArraySize from the cluster when it answers
    submit_backup_run the preflight, then the run on its executor; with `wait` (Slurm), its merges followed
    merge_and_retry   `fs3g merge`: verify, report, and when failures may mend and rounds are left, a retry round on
                      the retry executor (recorded in report.json's `retry`)

Exit codes (RunVerdict, cli.exitcodes.ExitCode's values): 0 everything verified, 1 some files not backed up,
130 stopped.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..config import Policy
from ..errors import Fs3gError, UsageError
from ..runs.catalog import catalog_path
from ..runs.executor import Executor, RunSpec, choose_executor, fs3g_argv, resolve, wait_for_job
from ..runs.files import PlanHeader, Report
from ..runs.layout import RunLayout, default_run_dir, read_json, write_json_atomic
from ..runs.report import describe_failures
from ..scan import ScanSettings
from ..snapshots.baseline import prepare_baseline
from .plan import PlanOptions, PlanSummary, make_plan, make_retry_plan

if TYPE_CHECKING:
    from ..slurm.submit import SubmittedRun

log = logging.getLogger(__name__)


class RunVerdict(IntEnum):
    """How a backup command ended; the values are the process exit codes (cli.exitcodes.ExitCode)."""

    OK = 0
    DIFFERENCES = 1
    INTERRUPTED = 130


@dataclass(frozen=True)
class PlanRequest:
    full: bool = False
    run_dir: Path | None = None
    scan: ScanSettings = ScanSettings()
    executor: Executor | None = None  # the plan only reports MaxArraySize: a local run does not ask Slurm
    baseline: bool = True  # consult the bucket's snapshots for the catalog (snapshots/baseline.py)


def cluster_max_array_size(executor: Executor | None = None) -> tuple[int, str]:
    """MaxArraySize from the cluster when Slurm answers; else Slurm's default. The plan only reports it (submission
    asks the cluster again), so a run for the local executor does not pay for two Slurm commands."""
    from ..slurm import commands

    if executor is Executor.LOCAL:
        return 1001, "local executor"
    if commands.slurm_available():
        return commands.max_array_size(), "from scontrol"
    return 1001, "Slurm not reachable: its default"


def plan_backup(policy: Policy, request: PlanRequest, now: datetime | None = None) -> PlanSummary:
    """A plan of the policy's roots against the lab's catalog (everything with `full`) in `run_dir` (default: a new
    run directory of the lab)."""
    now = now or datetime.now(timezone.utc)
    run_dir = request.run_dir or default_run_dir(policy, now)
    max_array, source = cluster_max_array_size(request.executor)
    # The local catalog, or the bucket's newest snapshot when that is missing, damaged or older (snapshots/).
    baseline = (lambda: prepare_baseline(policy, full=request.full)) if request.baseline else None
    options = PlanOptions(full=request.full, catalog=catalog_path(policy), scan=request.scan,
                          max_array_size=max_array, max_array_size_source=source, prepare_catalog=baseline)
    return make_plan(policy, run_dir, options, now)


def preflight(policy: Policy, run_dir: Path) -> None:
    """The bucket checked before any job (transfer.target.check_target: one line and exit 2 when it is missing, the
    credentials are absent or refused, access is denied or the endpoint does not answer); the plan is kept, and the
    error says how to go on from it once fixed."""
    from ..transfer.target import check_target

    try:
        check_target(policy, write=True)
    except UsageError as e:
        e.hint = f"{e.hint}; then run `fs3g submit {run_dir}`" if e.hint else f"then run `fs3g submit {run_dir}`"
        raise


def _spec(run_dir: Path, header: PlanHeader, policy: Policy) -> RunSpec:
    def submit(fs3g: Sequence[str]) -> "SubmittedRun":  # slurm/ and submitit (~50 ms) only for a Slurm run
        from ..slurm.submit import submit_backup

        return submit_backup(policy, run_dir, header.shard_count, fs3g)

    return RunSpec(run_dir, header.shards, "run-shard",
                   merge=lambda: merge_and_retry(run_dir, "local"),
                   submit=submit,
                   label="backup",
                   resume=f"fs3g submit {run_dir} --executor local (each shard resumes from its journal)",
                   fs3g=fs3g_argv())


def _header(run_dir: Path) -> tuple[PlanHeader, Policy]:
    layout = RunLayout(run_dir)
    header = PlanHeader.from_json(read_json(layout.plan_file), layout.plan_file)
    return header, header.policy_snapshot(layout.plan_file)


def run_backup_locally(run_dir: Path) -> int:
    """A backup run on the local executor: its shards as processes, then the merge (with local retries) here."""
    header, policy = _header(run_dir)
    return int(choose_executor(Executor.LOCAL).run(_spec(run_dir, header, policy), wait=True).exit_code or 0)


def submit_backup_run(run_dir: Path, executor: Executor, wait: bool) -> int:
    """`fs3g submit`: the planned run on its executor (the bucket checked first); with `wait`, to the last verdict."""
    header, policy = _header(run_dir)
    executor = resolve(executor)
    if header.shard_count == 0:
        _check_no_prune(policy)  # the merge still writes a snapshot
        print("nothing to upload; merging to record the catalog")
    else:  # before any job: a missing bucket would otherwise fail every file, then every retry round
        preflight(policy, run_dir)
        _take_backup_lock(policy, run_dir)
    spec = _spec(run_dir, header, policy)
    if executor is Executor.LOCAL:
        return int(choose_executor(executor).run(spec, wait=True).exit_code or 0)
    outcome = choose_executor(executor).run(spec, wait=False)
    submitted = outcome.submitted
    assert submitted is not None
    print(f"submitted: arrays {', '.join(submitted.array_ids)}; merge {submitted.merge_id} (afterany); "
          f"logs in {run_dir / 'logs'}")
    if not wait:
        print(f"follow with: fs3g status {run_dir}   (or squeue -j {submitted.merge_id})")
        return RunVerdict.OK
    return follow_merges(submitted.merge_id, run_dir)


def _take_backup_lock(policy: Policy, run_dir: Path) -> None:
    """locks/backup.json (prune/locks.py): refused (exit 2) while a prune holds locks/prune.json; prune refuses while
    ours exists; the run's last merge removes it."""
    from ..model.locks import LockKind
    from ..prune.locks import take_exclusive
    from ..snapshots.baseline import default_client

    take_exclusive(policy, default_client(policy), LockKind.BACKUP, str(run_dir))


def _check_no_prune(policy: Policy) -> None:
    """A run with nothing to upload takes no lock but still refuses beside a prune; a bucket it cannot reach is left
    to the merge (which records the catalog here whatever the bucket says)."""
    from ..model.locks import LockError
    from ..prune.locks import check_no_prune
    from ..snapshots.baseline import default_client

    try:
        check_no_prune(policy, default_client(policy))
    except LockError:
        raise
    except Exception as e:  # noqa: BLE001 - unreachable bucket: the merge says so in its own words
        log.debug("prune lock not checked: %s", e)


def _release_backup_lock(run_dir: Path) -> None:
    """The merge that ends a run (no retry round follows) removes the backup lock; a failure to is logged only
    (the lock then goes stale after retention.backup_lock_stale_hours, and prune says how to break it)."""
    from ..model.locks import LockKind
    from ..prune.locks import release_lock
    from ..snapshots.baseline import default_client

    try:
        _, policy = _header(run_dir)
        release_lock(policy, default_client(policy), LockKind.BACKUP)
    except Exception as e:  # noqa: BLE001 - the merge's verdict stands; the lock is only advice to prune
        log.warning("could not remove the backup lock: %s", e)


def follow_merges(merge_id: str, run_dir: Path) -> int:
    """Follow a merge job, and the retries it submits, to the last verdict."""
    current = run_dir
    while True:
        state = wait_for_job(merge_id)
        layout = RunLayout(current)
        if not layout.report_file.exists():
            raise Fs3gError(f"merge job {merge_id} ended {state.value} without writing {layout.report_file}",
                            hint=f"see {layout.logs_dir}")
        report = Report.from_json(read_json(layout.report_file), layout.report_file)
        failed = report.failed.files if report.failed else 0
        verified = report.verified.files if report.verified else 0
        print(f"merge {merge_id} {state.value}: {verified:,} verified, {failed:,} failed")
        retry = report.retry
        if failed == 0 or not retry or "merge_job" not in retry:
            return RunVerdict.OK if failed == 0 else RunVerdict.DIFFERENCES
        merge_id, current = retry["merge_job"], Path(retry["run_dir"])
        print(f"following retry {retry['round']}: merge {merge_id}")


def merge_and_retry(run_dir: Path, retry_executor: str) -> int:
    """`fs3g merge`: verify and report; failures a retry may mend, with rounds left, go to a retry round on
    `retry_executor` (slurm, local, or none: only the advice)."""
    from .merge import may_retry, merge_run, retryable_failures

    report = merge_run(run_dir)
    print("\n".join(report.lines()))
    if report.ok:
        _release_backup_lock(run_dir)
        return RunVerdict.OK
    print("\n".join(describe_failures(report.run_dir)))
    if retry_executor == "none" or not may_retry(report):
        why = ("" if retry_executor == "none" else
               " (no automatic retry: none of these failures is one a retry can mend, such as access denied or a "
               "vanished or unreadable file; fix them first)" if retryable_failures(report) == 0 else
               f" (the policy's {report.data['retry_rounds']} automatic retries are used up)")
        print(f"  to retry: fs3g run-shard {report.run_dir} --shard N for the shards listed above, then fs3g merge "
              "again" + why)
        _release_backup_lock(run_dir)
        return RunVerdict.DIFFERENCES
    layout = RunLayout(report.run_dir)
    retry = make_retry_plan(report.run_dir, layout.failed_file)
    print(f"  retry {retry.header['retry_round']}: {retry.header['planned']['files']:,} files in "
          f"{retry.header['shard_count']} shards: {retry.run_dir}")
    record: dict = {"run_dir": str(retry.run_dir), "round": retry.header["retry_round"]}
    if retry_executor == "local":
        code = run_backup_locally(retry.run_dir)
        record["exit"] = code
        write_json_atomic(layout.report_file, {**report.data, "retry": record})
        return code
    header, policy = _header(retry.run_dir)
    outcome = choose_executor(Executor.SLURM).run(_spec(retry.run_dir, header, policy), wait=False)
    submitted = outcome.submitted
    assert submitted is not None
    record["merge_job"] = submitted.merge_id
    write_json_atomic(layout.report_file, {**report.data, "retry": record})
    print(f"  retry submitted: arrays {', '.join(submitted.array_ids)}; merge {submitted.merge_id}")
    return RunVerdict.DIFFERENCES
