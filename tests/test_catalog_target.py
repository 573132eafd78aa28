"""A lab's catalog describes one bucket and prefix: when the policy moves, an incremental plan would skip everything
the new place lacks, so it is refused until a --full backup, and a restore selects from the new place's listing."""

from __future__ import annotations

import json

from test_restore import backup, fs3g, make_tree, write_policy


def test_a_moved_bucket_prefix_needs_a_full_backup(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "mv", root, seaweed_bucket)
    backup(policy)
    policy.write_text(policy.read_text().replace("prefix: labs/mv", "prefix: labs/mv2"))

    proc = fs3g("plan", "--config", str(policy))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "labs/mv/" in proc.stderr and "--full" in proc.stderr
    compare = fs3g("compare", "--config", str(policy))
    assert compare.returncode == 2 and "--against-bucket" in compare.stderr

    # Nothing in labs/mv2/ yet: a restore selects from that listing, not from the old catalog.
    proc = fs3g("restore", "--config", str(policy), "--dest", str(tmp_path / "r"), "--executor", "local")
    assert proc.returncode == 2 and "nothing is backed up" in proc.stderr, proc.stdout + proc.stderr

    proc = fs3g("backup", "--config", str(policy), "--full", "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    target = json.loads((tmp_path / "runs" / "mv" / "catalog-target.json").read_text())
    assert target["prefix"] == "labs/mv2"
    assert fs3g("compare", "--config", str(policy)).returncode == 0
    proc = fs3g("plan", "--config", str(policy))
    assert proc.returncode == 0 and "planned  0 entries" in proc.stdout, proc.stdout
