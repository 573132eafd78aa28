"""The typed run-directory files (fs3g_hpc/runs/files.py): both failure vocabularies read, every key kept, and a
malformed file named with its key."""

from __future__ import annotations

import json

import pytest

from fs3g_hpc.errors import UsageError
from fs3g_hpc.runs.files import CompareHeader, FailureLine, PlanHeader, Report, RestoreHeader, ShardResult, ShardStatus
from fs3g_hpc.runs.layout import RunKind, RunLayout
from fs3g_hpc.runs.report import describe_failures


def test_a_failure_line_says_reason_and_reads_detail_too():
    old = FailureLine.from_json({"path": "/a/\udcff", "outcome": "failed", "detail": "gone", "retryable": False}, "f")
    assert (old.path, old.reason, old.outcome, old.retryable) == (b"/a/\xff", "gone", "failed", False)
    assert old.to_json() == {"path": "/a/\udcff", "outcome": "failed", "reason": "gone", "retryable": False}
    merged = FailureLine.from_json({"path": "/b", "shard": 3, "reason": "not backed up"}, "f")
    assert (merged.shard, merged.retryable, merged.text()) == (3, True, "not backed up")


def test_a_shard_result_keeps_every_key():
    data = {"shard": 2, "status": "interrupted", "signal": "SIGUSR1", "files": 5, "bytes": 9, "uploaded": 3,
            "already_done": 1, "failed": 0, "failures_file": "shard-000002.failures.jsonl", "failures_sample": []}
    result = ShardResult.from_json(data, "r.json")
    assert result.status is ShardStatus.INTERRUPTED and result.count("uploaded") == 3
    assert result.to_json() == data


@pytest.mark.parametrize("data, key", [({"status": "done"}, "shard"), ({"shard": 0, "status": "odd"}, "status"),
                                        ({"shard": "0", "status": "done"}, "shard")])
def test_a_malformed_result_names_its_file_and_key(data, key):
    with pytest.raises(UsageError) as e:
        ShardResult.from_json(data, "results/shard-000000.json")
    assert e.value.path == "results/shard-000000.json" and e.value.key == key


def _header(**extra):
    return {"format": 1, "tool_version": "0", "created": "2026-01-01T00:00:00+00:00", "lab": "lab", "policy": {},
            "shard_count": 1, "shards": [{"index": 0, "file": "shard-000000.rec", "files": 2, "bytes": 3}], **extra}


def test_headers_of_every_kind_round_trip():
    plan = _header(changes={"new": {"files": 2, "bytes": 3}}, planned={"files": 2, "bytes": 3}, retry_round=1)
    restore = _header(destination="/d", planned={"files": 2, "bytes": 3}, source="catalog")
    compare = {k: v for k, v in _header(summary={"discrepancies": 4}, to_hash={"files": 2, "bytes": 3}).items()
               if k != "format"}
    for kind, data in ((PlanHeader, plan), (RestoreHeader, restore), (CompareHeader, compare)):
        header = kind.from_json(data, "h.json")
        assert header.to_json() == data and header.shard_count == 1 and header.shard(0).files == 2
    assert PlanHeader.from_json(plan, "h").retry_round == 1
    assert CompareHeader.from_json(compare, "h").to_hash.bytes == 3
    with pytest.raises(UsageError) as e:
        PlanHeader.from_json(_header(shard_count=2), "plan.json")
    assert e.value.key == "shard_count"


def test_report_round_trips_and_describe_failures_reads_both_kinds(tmp_path):
    data = {"planned": {"files": 2, "bytes": 3}, "verified": {"files": 1, "bytes": 1}, "failed": {"files": 1,
            "bytes": 2}, "failures_file": "failures.jsonl", "shard_states": {"done": 1}, "elapsed_s": 1.0,
            "catalog": {"path": "c", "entries": 1}}
    report = Report.from_json(data, "report.json")
    assert not report.ok and report.to_json() == data
    lines = [{"path": "/a", "shard": 0, "reason": "not backed up", "retryable": True},
             {"path": "/b", "outcome": "failed", "reason": "hash differs"}]
    (tmp_path / "failures.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert describe_failures(tmp_path) == ["  /a: not backed up", "  /b: failed: hash differs"]
    assert describe_failures(tmp_path, 1, more=True) == ["  /a: not backed up", "  ..."]


def test_layout_detects_the_kind(tmp_path):
    assert RunLayout.detect(tmp_path) is None
    (tmp_path / "compare.json").write_text("{}")
    layout = RunLayout.detect(tmp_path)
    assert layout is not None and layout.kind is RunKind.COMPARE and layout.header_file.name == "compare.json"


def test_restore_header_accessors_read_what_prepare_restore_writes():
    header = RestoreHeader.from_json(_header(destination="/d", planned={"files": 2, "bytes": 3}, source="catalog x",
                                             requests=["/a"], tier="Bulk", days=2, overwrite=True, wait=False,
                                             directories=5), "restore.json")
    assert (header.requests, header.tier, header.days, header.overwrite, header.wait, header.directories) == (
        ["/a"], "Bulk", 2, True, False, 5)
    bare = RestoreHeader.from_json(_header(destination="/d", planned={"files": 2}, tier="Bulk", days=1), "r.json")
    assert (bare.overwrite, bare.wait, bare.directories, bare.requests) == (False, True, 0, [])


def test_a_task_that_stops_itself_is_not_interrupted(tmp_path):
    """Only a signal makes a shard interrupted: work that sets `stop` itself (a restore whose destination is full)
    ends failed, or done."""
    from fs3g_hpc.runs.task import ShardWork, run_task

    layout = RunLayout(tmp_path, RunKind.RESTORE)
    header = RestoreHeader.from_json(_header(destination="/d", planned={"files": 2}), "restore.json")

    def work(task):
        task.stop.set()
        task.failures.record(FailureLine(b"/a", "the destination is full", "failed"))
        return ShardWork(1, {"restored": 0})

    result = run_task(layout, header, None, work, environ={"SLURM_ARRAY_TASK_ID": "0"})
    assert result.status is ShardStatus.FAILED and result.signal is None
    written = ShardResult.from_json(json.loads((tmp_path / "results" / "shard-000000.json").read_text()), "r")
    assert written == result and [f.reason for f in written.failures_sample] == ["the destination is full"]
