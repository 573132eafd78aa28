"""Backup schedules: cron arithmetic, scrontab blocks, and the self-renewing job chain on the real cluster; scheduled
restores with --at."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import textwrap
import time
from datetime import datetime

import helpers
import pytest

from fs3g_hpc.schedule import Schedule, ScheduleError, replace_block, scrontab_lines
from fs3g_hpc.slurm import commands

T = datetime(2026, 11, 27, 1, 30, 15)  # a Friday


@pytest.mark.parametrize("text, now, due", [
    ("0 2 * * *", T, datetime(2026, 11, 27, 2, 0)),
    ("0 2 * * *", datetime(2026, 11, 27, 2, 0), datetime(2026, 11, 28, 2, 0)),
    ("*/15 * * * *", T, datetime(2026, 11, 27, 1, 45)),
    ("0 3 * * 0", T, datetime(2026, 11, 29, 3, 0)),  # Sunday
    ("0 3 * * 7", T, datetime(2026, 11, 29, 3, 0)),  # Sunday as 7
    ("0 0 1 * 1", T, datetime(2026, 11, 30, 0, 0)),  # the 1st OR a Monday: Monday the 30th comes first
    ("30 4 1 1 *", T, datetime(2027, 1, 1, 4, 30)),
    ("0 22 * * 1-5", datetime(2026, 11, 28, 10, 0), datetime(2026, 11, 30, 22, 0)),
    ("every 20s", T, datetime(2026, 11, 27, 1, 30, 35)),
    ("every 6h", T, datetime(2026, 11, 27, 7, 30, 15)),
])
def test_next_due_time(text, now, due):
    assert Schedule.parse(text).next_after(now) == due


@pytest.mark.parametrize("text", ["61 * * * *", "* * *", "*/0 * * * *", "a b c d e", "every 0s"])
def test_bad_schedules_are_refused(text):
    with pytest.raises(ScheduleError):
        Schedule.parse(text)


def test_a_schedule_that_never_comes_due_is_refused():
    with pytest.raises(ScheduleError, match="never"):
        Schedule.parse("0 0 31 2 *").next_after(T)


def test_scrontab_block_is_replaced_and_removed_keeping_other_lines():
    block = scrontab_lines("gen", Schedule.parse("0 2 * * *"), ["fs3g", "backup", "--config", "/a b/lab.yaml"],
                           ["--job-name=fs3g-gen-schedule"])
    assert block[-2] == "0 2 * * * fs3g backup --config '/a b/lab.yaml'"
    mine = "# my own\n*/5 * * * * echo hi\n"
    with_block = replace_block(mine, "gen", block)
    assert with_block.startswith(mine) and with_block.count("# fs3g-begin gen") == 1
    again = replace_block(with_block, "gen", block)
    assert again == with_block
    assert replace_block(with_block, "gen", []) == mine
    with pytest.raises(ScheduleError):
        scrontab_lines("gen", Schedule.parse("every 1h"), ["x"], [])


# -- on the cluster ---------------------------------------------------------------------------------------------------

fs3g = functools.partial(helpers.fs3g, timeout=300)

def finished_links(name: str, since_job: int) -> list[tuple[str, str]]:
    """Links of this chain (job ids from `since_job` on: earlier runs of the test used the same name) that ended."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "--name", name, "-S", "now-1hour", "--format=JobID,State"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|")[:2] for line in out.splitlines()]
    return [(job, state) for job, state in rows if job.isdigit() and int(job) >= since_job
            and state not in ("PENDING", "RUNNING") and not state.startswith("CANCELLED")]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def test_schedule_chain_fires_launches_a_backup_and_renews_even_when_it_fails(slurm_cluster, seaweed_bucket,
                                                                            shared_tmp):
    root = shared_tmp / "data"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"scheduled")
    lab = shared_tmp / "lab.yaml"
    lab.write_text(textwrap.dedent(f"""\
        lab: {{name: sched}}
        roots: [{root}]
        s3: {{bucket: {seaweed_bucket.name}, prefix: labs/sched, endpoint_url: {seaweed_bucket.endpoint_url}}}
        run_root: {shared_tmp / 'runs'}
        slurm: {{time_limit: "10", cpus_per_task: 1, mem_bytes: 3GiB}}
        memory_budget_bytes: 2GiB
        schedule: {{backup: "every 8s"}}
        """))
    name = "fs3g-sched-schedule"
    try:
        for _ in range(2):  # installing twice gives one chain
            proc = fs3g("schedule", "install", "--config", str(lab), "--chain")
            assert proc.returncode == 0, proc.stderr
        queued = commands.queued_jobs(name)
        assert len(queued) == 1 and queued[0].state == "PENDING", queued
        since = int(queued[0].job_id)
        listing = fs3g("schedule", "list", "--config", str(lab), "--chain")
        assert queued[0].job_id in listing.stdout

        # It fires at its time and launches a backup (a run directory with a plan, its jobs submitted).
        first = wait_for(lambda: finished_links(name, since), 90, "the first link to run")
        runs = shared_tmp / "runs" / "sched"
        wait_for(lambda: list(runs.glob("sched-*/plan.json")), 30, "the backup's plan")
        assert len(commands.queued_jobs(name)) == 1  # its successor

        # A backup that fails (the root is gone) does not end the chain.
        shutil.rmtree(root)
        failed = wait_for(lambda: [j for j in finished_links(name, since) if j[1] == "FAILED"], 90, "a failed link")
        assert failed and len(finished_links(name, since)) > len(first)
        assert len(commands.queued_jobs(name)) == 1
        state = json.loads((runs / "schedule" / "state.json").read_text())
        assert state["last_exit"] == 2
    finally:
        proc = fs3g("schedule", "remove", "--config", str(lab), "--chain")
    assert proc.returncode == 0, proc.stderr
    time.sleep(1)
    assert commands.queued_jobs(name) == []
    assert not (shared_tmp / "runs" / "sched" / "schedule" / "state.json").exists()


def test_restore_at_a_time_is_submitted_to_begin_then(slurm_cluster, seaweed_bucket, shared_tmp):
    from test_restore import backup, make_tree, write_policy

    root = shared_tmp / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(shared_tmp, "at", root, seaweed_bucket)
    backup(policy)
    bad = fs3g("restore", "--config", str(policy), "--at", "next tuesday", "--executor", "slurm")
    assert bad.returncode == 2 and "--begin" in bad.stderr
    proc = fs3g("restore", "--config", str(policy), "--dest", str(shared_tmp / "r"), "--at", "now+2hours",
                "--executor", "slurm")
    assert proc.returncode == 0, proc.stderr
    run = max((shared_tmp / "runs" / "at").glob("restore-*"))
    job = json.loads((run / "jobs" / "chain.json").read_text())["stages"][0]
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r|%S"], capture_output=True, text=True,
                             check=True).stdout.strip()
        state, reason, start = out.split("|")
        assert state == "PENDING" and reason == "BeginTime", out
        assert (datetime.fromisoformat(start) - datetime.now()).total_seconds() > 3600
    finally:
        commands.cancel([job])
    assert not (shared_tmp / "r").exists()  # nothing restored before its time
