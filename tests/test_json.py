"""`--json` of backup --wait, restore --wait and status: stdout is one JSON document, checked against real local runs
on SeaweedFS (the human lines go to stderr)."""

from __future__ import annotations

import json

from test_restore import fs3g, make_tree, write_policy


def as_json(proc) -> dict | list:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)  # the whole of stdout, or this fails


def test_backup_and_restore_wait_json_then_status_json(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "js", root, seaweed_bucket)

    out = as_json(fs3g("backup", "--config", str(policy), "--executor", "local", "--wait", "--json"))
    assert out["command"] == "backup" and out["exit_code"] == 0 and out["ok"] is True and out["finished"] is True
    assert out["report"]["verified"]["files"] == 14 and out["report"]["failed"]["files"] == 0
    assert out["retries"] == []
    status = out["status"]
    assert status["kind"] == "backup" and status["phase"] == "merged" and status["run_dir"] == out["run_dir"]
    assert status["totals"]["files_done"] == status["totals"]["files"] == 14
    assert len(status["shards"]) == 3 and {s["state"] for s in status["shards"]} == {"done"}
    assert status["shard_states"] == {"done": 3} and status["jobs"] is None

    again = as_json(fs3g("status", out["run_dir"], "--json"))
    assert again["phase"] == "merged" and again["report"]["verified"]["files"] == 14
    assert again["totals"] == status["totals"]

    dest = tmp_path / "restored"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local", "--wait", "--json")
    out = as_json(proc)
    assert "restore " in proc.stderr  # the progress line, kept off stdout
    assert out["command"] == "restore" and out["ok"] is True and out["finished"] is True
    assert out["report"]["restored"]["files"] == 14 and out["report"]["failed"]["files"] == 0
    rs = out["status"]
    assert rs["kind"] == "restore" and rs["phase"] == "merged" and rs["files_in_place"] == 14
    assert rs["destination"] == str(dest) and rs["stage"]["verdict"] == "ready"
    assert (dest / "proj" / "a.txt").read_bytes() == b"alpha\n"

    runs = as_json(fs3g("status", "--config", str(policy), "--json"))
    assert isinstance(runs, list) and sorted(r["kind"] for r in runs) == ["backup", "restore"]
    assert {r["run_dir"] for r in runs} == {again["run_dir"], rs["run_dir"]}


def test_status_json_of_a_plan_then_of_one_shard_of_three(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "part", root, seaweed_bucket)
    run = tmp_path / "runs" / "part" / "one"
    proc = fs3g("plan", "--config", str(policy), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    st = as_json(fs3g("status", str(run), "--json"))
    assert st["phase"] == "planned" and st["report"] is None and st["rate_bytes_per_s"] is None
    assert st["shard_states"] == {"pending": 3} and st["totals"]["files_done"] == 0 and st["totals"]["files"] == 14

    proc = fs3g("run-shard", str(run), "--shard", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = as_json(fs3g("status", str(run), "--json"))
    first, *rest = st["shards"]
    assert st["phase"] == "running" and st["report"] is None
    assert first["state"] == "done" and first["files_done"] == first["files"] > 0
    assert [s["state"] for s in rest] == ["pending", "pending"] and all(s["files_done"] == 0 for s in rest)
    assert st["totals"]["files_done"] == first["files"] and st["totals"]["bytes_done"] == first["bytes_done"]
    assert st["rate_bytes_per_s"] is not None and st["shard_states"] == {"done": 1, "pending": 2}

    lab = as_json(fs3g("status", "--config", str(policy), "--json"))
    assert [r["run_dir"] for r in lab] == [str(run)]
    (tmp_path / "other").mkdir()
    empty = write_policy(tmp_path / "other", "nobody", root, seaweed_bucket)
    assert as_json(fs3g("status", "--config", str(empty), "--json")) == []
    proc = fs3g("status", str(tmp_path), "--json")
    assert proc.returncode == 2 and proc.stdout == "" and "not a run directory" in proc.stderr
