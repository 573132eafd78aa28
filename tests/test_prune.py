"""Retention and prune (issue 17): which snapshots a rule keeps (restic's forget semantics), the retention keys'
validation, and `fs3g prune` against the services: exactly the unreferenced objects and packs deleted, the newest
snapshot restoring byte-identical, the dry run changing nothing, a kill -9 mid-apply resumed, the backup lock, and
early-deletion charges from the objects' class and age."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fs3g_hpc.config.parsers import parse_duration
from fs3g_hpc.model.retention import Duration, KeepReason, RetentionRule, decide

from helpers import fs3g, write_policy


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _kept(snaps: dict[str, str], rule: RetentionRule, now: str = "2026-05-05T12:00") -> set[str]:
    return {d.snapshot_id for d in decide([(k, _t(v)) for k, v in snaps.items()], rule, _t(now)) if d.keep}


# The example of restic's forum answer on keep vs keep-within (snapshots a1..a5, forget run on May 5th at noon).
MAY = {"a1": "2026-05-01T08:00", "a2": "2026-05-02T08:00", "a3": "2026-05-02T11:00", "a4": "2026-05-04T09:00",
       "a5": "2026-05-05T10:00"}


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days_that_have_one():
    assert _kept(MAY, RetentionRule(keep_daily=4)) == {"a1", "a3", "a4", "a5"}
    assert _kept(MAY, RetentionRule(keep_daily=2)) == {"a4", "a5"}


def test_keep_within_is_relative_to_the_newest_snapshot_not_to_now():
    # 4d before May 5th 10:00 is May 1st 10:00: a1 (08:00) is outside; a2 and a3 inside (keep-within keeps all).
    assert _kept(MAY, RetentionRule(keep_within=Duration.parse("4d"))) == {"a2", "a3", "a4", "a5"}
    # Run a year later: the same answer (restic measures from the latest snapshot).
    assert _kept(MAY, RetentionRule(keep_within=Duration.parse("4d")), now="2027-05-05T12:00") == \
        {"a2", "a3", "a4", "a5"}


def test_keep_last_and_rules_combine_by_union_and_the_newest_is_always_kept():
    assert _kept(MAY, RetentionRule(keep_last=1)) == {"a5"}
    assert _kept(MAY, RetentionRule(keep_last=2, keep_daily=3)) == {"a3", "a4", "a5"}
    decisions = decide([(k, _t(v)) for k, v in MAY.items()], RetentionRule(keep_monthly=1), _t("2026-06-01T00:00"))
    assert [d.snapshot_id for d in decisions if d.keep] == ["a5"]
    assert KeepReason.NEWEST in decisions[0].reasons and KeepReason.MONTHLY in decisions[0].reasons


def test_weekly_and_monthly_buckets_follow_iso_weeks_and_calendar_months():
    # Sun 2026-05-03 and Mon 2026-05-04 are in different ISO weeks; Sat 2026-05-09 shares Monday's week.
    snaps = {"sun": "2026-05-03T12:00", "mon": "2026-05-04T12:00", "sat": "2026-05-09T12:00",
             "apr": "2026-04-30T12:00", "mar": "2026-03-15T12:00"}
    assert _kept(snaps, RetentionRule(keep_weekly=2)) == {"sat", "sun"}
    assert _kept(snaps, RetentionRule(keep_monthly=3)) == {"sat", "apr", "mar"}


def test_no_rule_keeps_everything_and_deleted_restorable_days_is_a_wall_time_floor():
    assert _kept(MAY, RetentionRule()) == set(MAY)
    # keep_last 1, but every snapshot younger than 2 days at May 5th noon is kept too: a4 (May 4th 09:00).
    assert _kept(MAY, RetentionRule(keep_last=1, deleted_restorable_days=2)) == {"a4", "a5"}


def test_durations_parse_like_restic_plus_weeks_and_count_months_by_the_calendar():
    assert Duration.parse("1y5m7d2h") == Duration(years=1, months=5, days=7, hours=2)
    assert str(parse_duration("12w")) == "12w"
    assert Duration.parse("1m").before(_t("2026-03-31T00:00")) == _t("2026-02-28T00:00")
    assert Duration.parse("6m").before(_t("2026-05-05T10:00")) == _t("2025-11-05T10:00")
    for bad in ("30", "d30", "1d1y", "", "3 days", 30):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("body, message", [
    ("retention: {keep_last: 0}\n", "retention.keep_last: must be >= 1"),
    ("retention: {keep_within: 30days}\n", "retention.keep_within: '30days' is not a duration"),
    ("retention: {keep_dayly: 3}\n", "retention.keep_dayly: unknown key; did you mean 'keep_daily'?"),
    ("storage: {pack_compact_below: 1.5}\n", "storage.pack_compact_below: must be from 0 to 1"),
])
def test_retention_keys_are_validated_naming_file_and_key(tmp_path, body, message):
    root = tmp_path / "d"
    root.mkdir()
    policy = write_policy(tmp_path, root, extra=body)
    proc = fs3g("validate", str(policy))
    assert proc.returncode == 2 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert str(policy) in proc.stdout + proc.stderr


def test_a_retention_policy_survives_the_plan_snapshot_round_trip(tmp_path):
    from fs3g_hpc.config import load_policy, policy_from_snapshot, policy_to_dict

    root = tmp_path / "d"
    root.mkdir()
    policy = load_policy(write_policy(tmp_path, root, extra="retention: {keep_last: 3, keep_within: 1y6m}\n"))
    again = policy_from_snapshot(policy_to_dict(policy), "plan.json")
    assert again.retention == policy.retention and again.retention.rule().keep_within == Duration(years=1, months=6)
