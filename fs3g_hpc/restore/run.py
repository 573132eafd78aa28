"""Submit, follow, retry: the route of one restore, from a selected run directory to its merge.

Local: the stage polls here (a signal ends the wait between polls), then the shards run as local processes and the
merge runs in this process (fs3g_hpc/localexec.py). Slurm: a poll job (restore-stage) that requests the Glacier
restores and resubmits itself with `--begin=now+poll_interval_s` while objects are in progress (waiting holds no
node), then the download arrays and the merge (slurm/submit.py); jobs/chain.json records each job, so `--wait` and
`status` follow a chain whose poll jobs replace each other.

Outcomes are typed (RunVerdict); exit codes are the CLI's.
"""

from __future__ import annotations

import functools
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Sequence

from ..errors import Fs3gError, UsageError
from ..runs.layout import ensure_private_dir, read_json, write_json_atomic
from .layout import RestoreLayout, load_header
from .merge import merge_and_report
from .stage import StageReport, StageVerdict, stage


class RunVerdict(str, Enum):
    COMPLETE = "complete"  # everything restored (or, not waiting: the chain was submitted)
    INCOMPLETE = "incomplete"  # the merge reports failed or refused paths
    INTERRUPTED = "interrupted"  # stopped by a signal; the same restore later resumes


_RESUME = ("fs3g restore-shard {run_dir} --shard N for each shard not done, then fs3g restore-merge {run_dir}; "
               "or the same fs3g restore again (it skips files already in place)")


def record_chain(layout: RestoreLayout, *, stage_job: str | None = None, arrays: list[str] | None = None,
                 merge_job: str | None = None) -> dict:
    """Note a job of this restore in jobs/chain.json, so `--wait` and `status` can follow a chain whose poll jobs
    replace each other."""
    ensure_private_dir(layout.chain_file.parent)
    chain = read_json(layout.chain_file) if layout.chain_file.exists() else {"stages": []}
    if stage_job:
        chain["stages"].append(stage_job)
    if arrays is not None:
        chain["arrays"] = arrays
    if merge_job:
        chain["merge"] = merge_job
    write_json_atomic(layout.chain_file, chain)
    return chain


def run_restore(run_dir: Path, *, slurm: bool, wait: bool, fs3g: Sequence[str],
                begin_at: str | None = None) -> RunVerdict:
    """Run a selected restore on Slurm (`slurm`) or here; with Slurm and `wait`, follow its chain to the merge."""
    layout, header, policy = load_header(run_dir)
    if begin_at is not None and not slurm:
        raise UsageError("--at schedules the restore's jobs: it needs Slurm (--executor slurm)")
    if slurm:
        from ..slurm.submit import submit_restore_stage

        job = submit_restore_stage(policy, run_dir, fs3g, begin_at=begin_at)
        record_chain(layout, stage_job=job)
        if begin_at:
            print(f"scheduled: the restore begins at {begin_at} (job {job}, pending until then)")
        print(f"submitted: poll job {job} (requests Glacier restores, then resubmits itself with --begin every "
              f"{policy.restore.poll_interval_s} s until the objects are ready, then the download array and merge); "
              f"logs in {run_dir / 'logs'}")
        if not wait:
            print(f"follow with: fs3g status {run_dir}   (or squeue -n fs3g-{policy.lab.name}-restore-poll)")
            return RunVerdict.COMPLETE
        return follow_restore(run_dir)
    from ..localexec import FORWARDED
    from ..runs.executor import run_here
    from ..signals import StopOnSignals

    with StopOnSignals(tuple(FORWARDED)) as signals:  # a signal ends the wait between polls, not just the process
        while True:
            report = stage(run_dir)
            if report.verdict is not StageVerdict.WAITING or signals.stop.is_set():
                break
            print(f"{report.pending:,} objects still being restored from Glacier; next poll in "
                  f"{policy.restore.poll_interval_s} s (Ctrl-C stops; the same command later resumes)")
            if signals.stop.wait(policy.restore.poll_interval_s):
                break
    if signals.first is not None:
        print(f"restore stopped by {signals.first} while waiting for Glacier; to resume: fs3g restore-stage "
              f"{run_dir} --executor none until it says ready, then fs3g restore-shard {run_dir} --shard N for each "
              f"shard and fs3g restore-merge {run_dir}; or the same fs3g restore again", file=sys.stderr)
        return RunVerdict.INTERRUPTED
    return run_here(run_dir, [s.to_json() for s in header.shards], fs3g, shard_command="restore-shard",
                    merge=functools.partial(merged_verdict, run_dir), label="restore",
                    resume=_RESUME.format(run_dir=run_dir), interrupted=RunVerdict.INTERRUPTED)


def merged_verdict(run_dir: Path) -> RunVerdict:
    """The merge (its report printed), as a verdict."""
    return RunVerdict.COMPLETE if merge_and_report(run_dir).ok else RunVerdict.INCOMPLETE


def follow_restore(run_dir: Path, timeout_s: float = 7 * 86400, poll_s: float = 3.0) -> RunVerdict:
    """Follow a restore's chain of poll jobs to its merge, and return the merge's verdict."""
    from ..slurm import commands
    from ..slurm.submit import wait_for_job

    layout = RestoreLayout(run_dir)
    deadline = time.monotonic() + timeout_s
    seen_finished: str | None = None
    while time.monotonic() < deadline:
        chain = read_json(layout.chain_file)
        if "merge" in chain:
            state = wait_for_job(chain["merge"], timeout_s=max(deadline - time.monotonic(), 1))
            if not layout.report_file.exists():
                raise Fs3gError(f"restore merge job {chain['merge']} ended {state.value} without a report",
                                hint=f"see {run_dir / 'logs'}")
            data = read_json(layout.report_file)
            print(f"restore merge {chain['merge']} {state.value}: {data['restored']['files']:,} restored, "
                  f"{data['already_present']:,} already present, {data['failed']['files']:,} failed, "
                  f"{data['refused']:,} refused")
            ok = data["failed"]["files"] == 0 and data["refused"] == 0
            return RunVerdict.COMPLETE if ok else RunVerdict.INCOMPLETE
        last = chain["stages"][-1]
        records = [r for r in commands.accounting([last]) if r.job_id == last]
        if records and records[0].state.finished:
            if seen_finished == last:  # ended, and a re-read of the chain shows nothing after it
                raise Fs3gError(f"restore poll job {last} ended {records[0].state.value} without scheduling the "
                                "next step", hint=f"see {run_dir / 'logs'}; rerun with fs3g restore-stage {run_dir} "
                                                  "--executor slurm")
            seen_finished = last
        time.sleep(poll_s)
    raise Fs3gError(f"restore {run_dir} has not finished after {timeout_s:.0f} s", hint=f"fs3g status {run_dir}")


def stage_step(run_dir: Path, *, chain_on_slurm: bool, fs3g: Sequence[str]) -> StageReport:
    """One poll of a restore's stage (the poll job's body, or `restore-stage --executor none`). With
    `chain_on_slurm`: while objects are in progress, the next poll job (`--begin=now+poll_interval_s`); once ready, or
    the wait limit passed, the download arrays and the merge."""
    report = stage(run_dir)
    print(f"stage: {report.requested:,} Glacier restore requests so far; {report.pending:,} objects in progress "
          f"after poll {report.polls}: {report.verdict.value}")
    if not chain_on_slurm:
        return report
    from ..slurm.submit import submit_restore_download, submit_restore_stage

    layout, header, policy = load_header(run_dir)
    if report.verdict is StageVerdict.WAITING:
        job = submit_restore_stage(policy, layout.run_dir, fs3g, begin_in_s=policy.restore.poll_interval_s)
        record_chain(layout, stage_job=job)
        print(f"next poll: job {job}, begins in {policy.restore.poll_interval_s} s")
        return report
    if report.verdict is StageVerdict.GAVE_UP:
        print(f"wait limit reached: downloading what is ready; {report.pending:,} objects will be reported not ready")
    submitted = submit_restore_download(policy, layout.run_dir, header.shard_count, fs3g)
    record_chain(layout, arrays=submitted.array_ids, merge_job=submitted.merge_id)
    print(f"submitted: restore arrays {', '.join(submitted.array_ids) or '(none)'}; merge {submitted.merge_id}")
    return report
