"""Job-script rendering: pure, golden-file pinned, every body value quoted."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from fs3g_hpc.config import SlurmSettings
from fs3g_hpc.model.sizes import GIB
from fs3g_hpc.slurm.render import JobSpec, RenderError, policy_directives, render_job_script

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FS3G_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with FS3G_UPDATE_GOLDEN=1 if intended"


def sample_spec() -> JobSpec:
    slurm = SlurmSettings(partition="service", account="rc-backup", qos="long", time_limit="2-00:00:00",
                          cpus_per_task=8, mem_bytes=8 * GIB, extra_sbatch_options=("--constraint=ib",))
    return JobSpec(
        job_name="fs3g-genomics-shards",
        description="backup shards of genomics\nrun 2026-11-26",
        commands=[["fs3g", "run-shard", "/scratch/runs/genomics 2026", "--flag=it's"], ["echo", "$HOME; rm -rf /"]],
        output_path="/scratch/runs/genomics/logs/shard-%A_%a.out",
        array="0-99%32",
        directives=[*policy_directives(slurm), ("requeue", None), ("signal", "B:USR1@300")],
        environment={"FS3G_RUN_DIR": "/scratch/runs/genomics 2026", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"},
        extra_options=("--constraint=ib",),
    )


def test_golden_array_script():
    check_golden("array.sbatch", render_job_script(sample_spec()))


def test_body_values_round_trip_through_the_shell():
    script = render_job_script(sample_spec())
    line = next(l for l in script.splitlines() if l.startswith("fs3g run-shard"))
    assert shlex.split(line) == ["fs3g", "run-shard", "/scratch/runs/genomics 2026", "--flag=it's"]
    echo = next(l for l in script.splitlines() if l.startswith("echo"))
    assert shlex.split(echo) == ["echo", "$HOME; rm -rf /"]


def test_policy_directives_round_mem_up_to_mib():
    pairs = dict(policy_directives(SlurmSettings(mem_bytes=GIB + 1, time_limit="90")))
    assert pairs == {"time": "90", "cpus-per-task": "4", "mem": "1025M"}


@pytest.mark.parametrize("spec,fragment", [
    (JobSpec(job_name="a b", commands=[["true"]]), "blanks"),
    (JobSpec(job_name="j", commands=[["true"]], output_path="/logs/$USER/x"), "blanks, quotes or \\$"),
    (JobSpec(job_name="j", commands=[]), "at least one command"),
    (JobSpec(job_name="j", commands=[["true"]], environment={"AWS_SECRET_ACCESS_KEY": "x"}), "credential"),
    (JobSpec(job_name="j", commands=[["true"]], environment={"BAD-NAME": "x"}), "not an environment variable"),
    (JobSpec(job_name="j", commands=[["true"]], directives=[("Bad Name", None)]), "not an sbatch option name"),
])
def test_unsafe_values_are_refused(spec, fragment):
    with pytest.raises(RenderError, match=fragment):
        render_job_script(spec)


def test_golden_backup_jobs():
    """The shard array and merge scripts a backup submits, for the example genomics policy."""
    from pathlib import Path as P

    from fs3g_hpc.config import load_policy
    from fs3g_hpc.resources import DataDir, data_dir
    from fs3g_hpc.slurm.jobs import ArrayChunk, merge_job, shard_array_job

    policy = load_policy(data_dir(DataDir.CONFIGS) / "lab-genomics.yaml", environ={})
    run_dir = P("/scratch/fs3g/runs/genomics/genomics-20261126T000000Z")
    fs3g = ["/shared/venvs/fs3g/bin/python", "-m", "fs3g_hpc"]
    check_golden("shards.sbatch", render_job_script(shard_array_job(policy, run_dir, ArrayChunk(40, 25), fs3g)))
    check_golden("merge.sbatch", render_job_script(merge_job(policy, run_dir, ["101", "102"], fs3g)))


def test_golden_submitit_scripts():
    """The scripts submitit writes for a backup's shard array and merge, and a restore's poll: our #SBATCH options
    (the array throttle, USR1 before the time limit, requeue, logs under RUN_DIR/logs), umask 077, the shard offset,
    and an `exec` of submitit's runner on RUN_DIR/jobs, whose pickle holds the fs3g command."""
    from pathlib import Path as P

    from fs3g_hpc.config import load_policy
    from fs3g_hpc.resources import DataDir, data_dir
    from fs3g_hpc.slurm.engine import job_argv, job_script
    from fs3g_hpc.slurm.jobs import ArrayChunk, merge_job, restore_stage_job, shard_array_job

    policy = load_policy(data_dir(DataDir.CONFIGS) / "lab-genomics.yaml", environ={})
    run_dir = P("/scratch/fs3g/runs/genomics/genomics-20261126T000000Z")
    fs3g = ["/shared/venvs/fs3g/bin/python", "-m", "fs3g_hpc"]
    shards = shard_array_job(policy, run_dir, ArrayChunk(40, 25), fs3g)
    merge = merge_job(policy, run_dir, ["101", "102"], fs3g)
    stage = restore_stage_job(policy, run_dir, fs3g)
    check_golden("submitit-shards.sbatch", job_script(shards, run_dir / "jobs"))
    check_golden("submitit-merge.sbatch", job_script(merge, run_dir / "jobs"))
    check_golden("submitit-stage.sbatch", job_script(stage, run_dir / "jobs"))
    assert job_argv(shards) == (*fs3g, "run-shard", str(run_dir))
    assert job_argv(merge) == (*fs3g, "merge", str(run_dir), "--retry-executor", "slurm")
    assert job_argv(stage) == (*fs3g, "restore-stage", str(run_dir), "--executor", "slurm")
