"""`fs3g status` shows an ETA past 24 h with its days (Slurm's D-HH:MM:SS), instead of wrapping at a day."""

from __future__ import annotations

import os
import re
import textwrap

from fs3g_hpc.config import load_policy
from fs3g_hpc.runs.journal import ShardJournal
from fs3g_hpc.runs.layout import RunLayout, ensure_private_dir, journal_file
from fs3g_hpc.backup.plan import PlanOptions, make_plan
from fs3g_hpc.scan import ScanSettings
from fs3g_hpc.status import describe


def test_status_eta_of_days_shows_the_days(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    small = root / "small"
    small.write_bytes(b"x" * 1000)
    with open(root / "huge", "wb") as f:  # 10 TB planned, nothing of it read
        f.truncate(10**13)
    config = tmp_path / "lab.yaml"
    config.write_text(textwrap.dedent(f"""\
        lab: {{name: eta}}
        roots: [{root}]
        s3: {{bucket: fs3g-any, endpoint_url: http://127.0.0.1:9}}
        run_root: {tmp_path / 'runs'}
        """))
    run_dir = make_plan(load_policy(config, environ={}), tmp_path / "runs" / "r",
                        PlanOptions(scan=ScanSettings(workers=0))).run_dir
    layout = RunLayout(run_dir)
    ensure_private_dir(layout.results_dir)
    journal = ShardJournal(journal_file(layout, 0))  # the shard is running: 1000 bytes done so far
    journal.record_done(os.fsencode(str(small)), 1000, small.stat().st_mtime_ns, "k", "0" * 64, "e", None)
    journal.close()
    first = describe(run_dir)[0]
    eta = re.search(r"ETA (\S+)", first)
    assert eta and re.fullmatch(r"\d+-\d{2}:\d{2}:\d{2}", eta.group(1)), first
    assert int(eta.group(1).split("-")[0]) >= 1  # 10 TB with 1 kB done in (well over) 10 µs: days at the least
