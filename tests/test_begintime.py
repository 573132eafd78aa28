"""`fs3g restore --at TIME` takes every time `sbatch --begin` takes: asked of the cluster's sbatch (--test-only)
where Slurm answers, by the sbatch(1) grammar elsewhere; the grammar agrees with the CI cluster's sbatch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fs3g_hpc.cli.handlers import checked_begin_time
from fs3g_hpc.errors import UsageError
from fs3g_hpc.model.begintime import is_begin_time
from fs3g_hpc.slurm.commands import begin_time_accepted

ACCEPTED = ["now+1hour", "now+2hours", "now+30minutes", "now+1day", "now+1days", "now+60", "now+1week",
            "now+1second", "now-1hour", "now", "now + 1 hour", "NOW+1HOUR", "16:00", "16:00:30", "1:00", "4:00PM",
            "12:00am", "12:00 PM", "16:00 tomorrow", "tomorrow 16:00", "today 16:00", "tomorrow", "today", "midnight",
            "noon", "Noon", "fika", "teatime", "noon tomorrow", "2030-01-01", "2030-01-01T02:00",
            "2030-01-01T2:00:05", "2030-01-01 02:00", "0101", "010130", "01/01", "1/1", "01/01/30", "01.01",
            "01.01.30", "1231"]
REFUSED = ["garbage", "next tuesday", "", "now+", "now+1fortnight", "now+1h", "now+5min", "now+3sec", "25:00",
           "16:60", "13:00PM", "4pm", "2030-13-01", "2030-1-1", "2030-01-01T02", "01/01/2030", "1332", "11",
           "Tomorrow", "now+2hours; touch /tmp/x"]


@pytest.mark.parametrize("text", ACCEPTED)
def test_grammar_takes_what_sbatch_takes(text):
    assert is_begin_time(text)


@pytest.mark.parametrize("text", REFUSED)
def test_grammar_refuses_what_sbatch_refuses(text):
    assert not is_begin_time(text)


def test_the_grammar_agrees_with_the_clusters_sbatch(slurm_cluster):
    disagree = [t for t in ACCEPTED + REFUSED if t and begin_time_accepted(t) is not is_begin_time(t)]
    assert disagree == []


@pytest.mark.parametrize("text", ["now+1hour", "now+2hours", "now+30minutes", "now+1day", "16:00", "tomorrow",
                                  "2030-01-01T02:00", "0101", "16:00 tomorrow", "teatime"])
def test_restore_at_takes_sbatch_forms_on_the_cluster(slurm_cluster, text):
    assert checked_begin_time(text) == text


def test_restore_at_garbage_is_one_line_exit_2_before_anything_is_written(slurm_cluster, tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text(textwrap.dedent(f"""\
        lab: {{name: at}}
        roots: [{tmp_path}]
        s3: {{bucket: fs3g-any, endpoint_url: http://127.0.0.1:9}}
        run_root: {tmp_path / 'runs'}
        """))
    with pytest.raises(UsageError, match="not a time sbatch --begin takes"):
        checked_begin_time("now+1fortnight")
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "restore", "--config", str(config), "--at",
                           "next tuesday", "--executor", "slurm"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--at 'next tuesday': not a time sbatch --begin takes" in proc.stderr and "now+1hour" in proc.stderr
    assert not (tmp_path / "runs").exists()
