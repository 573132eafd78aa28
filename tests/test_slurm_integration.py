"""The Slurm layer against the real one-node test cluster (slurmctld, slurmd, slurmdbd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fs3g_hpc.errors import CommandError
from fs3g_hpc.slurm import commands
from fs3g_hpc.slurm.commands import JobState
from fs3g_hpc.slurm.render import JobSpec, render_job_script


def write_script(path: Path, spec: JobSpec) -> Path:
    path.write_text(render_job_script(spec))
    path.chmod(0o700)
    return path


def test_array_then_afterany_job_sees_every_task(slurm_cluster, shared_tmp):
    """4 tasks (one fails on purpose); an afterany job runs anyway and checks all four ran; sacct reports each."""
    out = shared_tmp / "out"
    out.mkdir()
    task = ("touch {out}/task-$SLURM_ARRAY_TASK_ID; "
            "if [ \"$SLURM_ARRAY_TASK_ID\" = 3 ]; then exit 3; fi").format(out=out)
    array_id = commands.submit(write_script(shared_tmp / "array.sbatch", JobSpec(
        job_name="fs3g-test-array", commands=[["sh", "-c", task]], array="0-3%4",
        output_path=f"{shared_tmp}/array-%A_%a.out", directives=[("time", "5")])))
    check = f"test $(ls {out} | wc -l) -eq 4 && echo all-four > {shared_tmp}/checked"
    check_id = commands.submit(write_script(shared_tmp / "check.sbatch", JobSpec(
        job_name="fs3g-test-check", commands=[["sh", "-c", check]], dependency=f"afterany:{array_id}",
        output_path=f"{shared_tmp}/check-%j.out", directives=[("time", "5")])))

    records = commands.wait_for_accounting([array_id, check_id], expected_records=5, timeout_s=180)
    by_task = {r.array_task_id: r for r in records if r.array_job_id == array_id}
    assert sorted(by_task) == [0, 1, 2, 3]
    assert [by_task[i].state for i in range(3)] == [JobState.COMPLETED] * 3
    assert (by_task[3].state, by_task[3].exit_code) == (JobState.FAILED, 3)
    checker = next(r for r in records if r.job_id == check_id)
    assert (checker.state, checker.exit_code) == (JobState.COMPLETED, 0)
    assert (shared_tmp / "checked").read_text().strip() == "all-four"


def test_max_array_size_is_read_from_the_cluster(slurm_cluster):
    assert commands.max_array_size() == int(slurm_cluster["max_array_size"])


def test_sbatch_refusal_shows_command_code_and_stderr(slurm_cluster, shared_tmp):
    script = write_script(shared_tmp / "too-big.sbatch", JobSpec(job_name="fs3g-test-big", commands=[["true"]]))
    too_big = int(slurm_cluster["max_array_size"]) + 5
    with pytest.raises(CommandError) as info:
        commands.submit(script, options=[f"--array=0-{too_big}"])
    err = info.value
    assert err.argv[:2] == ("sbatch", "--parsable") and err.returncode == 1
    assert "array" in err.stderr.lower()
    assert "sbatch --parsable" in str(err) and "exited 1" in str(err)


def test_job_states_parse():
    assert JobState.parse("CANCELLED by 0") is JobState.CANCELLED
    assert JobState.parse("SOMETHING_NEW") is JobState.UNKNOWN
    assert JobState.TIMEOUT.finished and not JobState.PENDING.finished
