"""Bucket lifecycle rules: the rules a policy implies, diff and merge (pure), and `fs3g policy show|apply` against
moto (which stores lifecycle rules) and SeaweedFS (which refuses rules with transitions)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import botocore.stub
import helpers
import pytest


from fs3g_hpc import cli
from fs3g_hpc.config import load_policy
from fs3g_hpc.errors import ServiceError, UsageError
from fs3g_hpc.lifecycle import (ABORT_INCOMPLETE_UPLOAD_DAYS, RULE_NAMES, desired_rules, diff_rules, format_diff,
                                merged_rules, normalise_rule, owner_prefix, rules_equal)
from fs3g_hpc.transfer.client import ClientSettings, make_s3_client
from fs3g_hpc.transfer.lifecycle import apply_bucket_policy, get_rules, put_rules, show_bucket_policy

fs3g = functools.partial(helpers.fs3g, timeout=120)


def write_policy(tmp: Path, name: str, bucket_name: str, endpoint_url: str, *, prefix: str | None = None,
                 archive: str = "GLACIER", days: int = 1) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    return helpers.write_policy(tmp, tmp / "data", bucket_name, name=name, endpoint_url=endpoint_url, prefix=prefix,
                                storage=f"archive_storage_class: {archive}, lifecycle_days: {days}")

def policy_for(tmp: Path, name: str = "genomics", **kwargs: Any):
    return load_policy(write_policy(tmp, name, "some-bucket", "http://127.0.0.1:9", **kwargs), environ={})


FOREIGN = {"ID": "site-expire-scratch", "Filter": {"Prefix": "scratch/"}, "Status": "Enabled",
           "Expiration": {"Days": 30}}


def by_id(rules: list[dict]) -> dict[str, dict]:
    return {r["ID"]: r for r in rules}


def marked(text: str, mark: str, rule: str) -> bool:
    """Some line of `text` carries `mark`, then (after padding) the description of `rule`."""
    return any(line.strip().startswith(mark) and line.strip()[len(mark):].lstrip().startswith(rule)
               for line in text.splitlines())


# ---------------------------------------------------------------------------------------------------------------------
# Pure: desired rules.


def test_desired_rules_under_a_prefix(tmp_path):
    rules = desired_rules(policy_for(tmp_path, prefix="/labs/genomics/", days=3))
    assert rules == [
        {"ID": "fs3g-genomics-largefile-to-glacier", "Filter": {"Prefix": "labs/genomics/largefile/"},
         "Status": "Enabled", "Transitions": [{"Days": 3, "StorageClass": "GLACIER"}]},
        {"ID": "fs3g-genomics-abort-incomplete-uploads", "Filter": {"Prefix": "labs/genomics/"}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS}},
    ]


def test_desired_rules_without_prefix_have_no_empty_segment(tmp_path):
    rules = by_id(desired_rules(policy_for(tmp_path, archive="DEEP_ARCHIVE")))
    assert rules["fs3g-genomics-largefile-to-deep_archive"]["Filter"] == {"Prefix": "largefile/"}
    assert rules["fs3g-genomics-largefile-to-deep_archive"]["Transitions"] == [
        {"Days": 1, "StorageClass": "DEEP_ARCHIVE"}]
    assert rules["fs3g-genomics-abort-incomplete-uploads"]["Filter"] == {"Prefix": ""}
    for rule in rules.values():
        assert not rule["Filter"]["Prefix"].startswith("/") and "//" not in rule["Filter"]["Prefix"]
        assert set(rule["Filter"]) == {"Prefix"}  # prefix filters only: size filters do not work everywhere
        assert rule["ID"].startswith(owner_prefix("genomics"))


def test_rule_names_never_end_with_another_rule_name():
    """Ownership is `fs3g-<lab>-<name>` with <name> in RULE_NAMES; lab names may hold `-`, so no name may be another
    one behind a `-` (else lab `bio` would own lab `bio-x`'s rules)."""
    for name in RULE_NAMES:
        parts = name.split("-")
        for i in range(1, len(parts)):
            assert "-".join(parts[i:]) not in RULE_NAMES, name


# ---------------------------------------------------------------------------------------------------------------------
# Pure: diff and merge.


def test_empty_bucket_adds_both_rules(tmp_path):
    desired = desired_rules(policy_for(tmp_path, prefix="labs/genomics"))
    diff = diff_rules([], desired, "fs3g-genomics-")
    assert diff.differs and diff.to_add == desired and not (diff.to_update or diff.unchanged or diff.stale)
    assert merged_rules([], desired, "fs3g-genomics-") == desired


def test_foreign_and_other_labs_rules_are_kept_and_stale_own_rule_removed(tmp_path):
    policy = policy_for(tmp_path, prefix="labs/genomics")
    desired = desired_rules(policy)
    other_lab = {"ID": "fs3g-proteomics-largefile-to-glacier", "Filter": {"Prefix": "labs/proteomics/largefile/"},
                 "Status": "Enabled", "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}
    # A lab whose name starts with ours and a dash: its rules share our ID prefix but are not ours.
    longer_name = {"ID": "fs3g-genomics-x-largefile-to-glacier", "Filter": {"Prefix": "labs/genomics-x/largefile/"},
                   "Status": "Enabled", "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}
    hand_made = {"ID": "fs3g-genomics-hand-made", "Filter": {"Prefix": "labs/genomics/tmp/"}, "Status": "Enabled",
                 "Expiration": {"Days": 2}}
    stale = {"ID": "fs3g-genomics-largefile-to-deep_archive", "Filter": {"Prefix": "labs/genomics/largefile/"},
             "Status": "Enabled", "Transitions": [{"Days": 1, "StorageClass": "DEEP_ARCHIVE"}]}
    current = [FOREIGN, other_lab, longer_name, hand_made, stale, desired[1]]
    diff = diff_rules(current, desired, owner_prefix("genomics"))
    assert diff.foreign == [FOREIGN, other_lab, longer_name, hand_made]
    assert diff.stale == [stale]
    assert diff.to_add == [desired[0]] and diff.unchanged == [desired[1]] and diff.to_update == []
    merged = merged_rules(current, desired, owner_prefix("genomics"))
    assert merged == [FOREIGN, other_lab, longer_name, hand_made, *desired]
    # The hand-made rule expires objects under the lab's prefix: kept, but said.
    assert any("fs3g-genomics-hand-made" in w and "expires" in w for w in diff.warnings)
    text = format_diff(diff)
    assert "+ add" in text and "= unchanged" in text and "- remove (stale)" in text
    assert marked(text, "keep (not ours)", "site-expire-scratch: prefix scratch/: expire after 30 days")


def test_changed_days_is_an_update(tmp_path):
    before = desired_rules(policy_for(tmp_path, prefix="labs/genomics", days=1))
    after = desired_rules(policy_for(tmp_path, prefix="labs/genomics", days=5))
    diff = diff_rules(before, after, owner_prefix("genomics"))
    assert [u.desired["Transitions"][0]["Days"] for u in diff.to_update] == [5]
    assert [u.current["Transitions"][0]["Days"] for u in diff.to_update] == [1]
    assert "~ update" in format_diff(diff) and "was fs3g-genomics-largefile-to-glacier" in format_diff(diff)


def test_changed_class_removes_the_old_rule(tmp_path):
    before = desired_rules(policy_for(tmp_path, prefix="labs/genomics"))
    after = desired_rules(policy_for(tmp_path, prefix="labs/genomics", archive="DEEP_ARCHIVE"))
    diff = diff_rules(before, after, owner_prefix("genomics"))
    assert [r["ID"] for r in diff.stale] == ["fs3g-genomics-largefile-to-glacier"]
    assert [r["ID"] for r in diff.to_add] == ["fs3g-genomics-largefile-to-deep_archive"]
    assert merged_rules(before, after, owner_prefix("genomics")) == after


def test_apply_twice_is_idempotent(tmp_path):
    desired = desired_rules(policy_for(tmp_path, prefix="labs/genomics"))
    once = merged_rules([FOREIGN], desired, owner_prefix("genomics"))
    assert not diff_rules(once, desired, owner_prefix("genomics")).differs
    assert merged_rules(once, desired, owner_prefix("genomics")) == once


def test_rules_compare_by_meaning_not_spelling(tmp_path):
    ours = desired_rules(policy_for(tmp_path, prefix="labs/genomics"))[0]
    # As a store may return it: legacy top-level Prefix, defaults spelt out, other key order.
    returned = {"Transitions": [{"StorageClass": "GLACIER", "Days": 1}], "Status": "Enabled",
                "Prefix": "labs/genomics/largefile/", "ID": ours["ID"],
                "Expiration": {"ExpiredObjectDeleteMarker": False}}
    assert rules_equal(returned, ours)
    assert rules_equal({**ours, "Filter": {"And": {"Prefix": "labs/genomics/largefile/"}}}, ours)
    assert not rules_equal({**ours, "Status": "Disabled"}, ours)
    assert not rules_equal({**ours, "Filter": {"Prefix": "labs/genomics/largefile/", "ObjectSizeGreaterThan": 1}},
                           ours)
    assert not rules_equal({**ours, "Expiration": {"Days": 9}}, ours)
    assert normalise_rule({"ID": "x", "Filter": {}, "Status": "Enabled"})["Prefix"] == ""
    diff = diff_rules([returned], [ours], owner_prefix("genomics"))
    assert diff.unchanged and not diff.differs


def test_legacy_foreign_rule_is_written_back_with_a_filter(tmp_path):
    desired = desired_rules(policy_for(tmp_path, prefix="labs/genomics"))
    legacy = {"ID": "old", "Prefix": "old/", "Status": "Enabled", "Expiration": {"Days": 3}}
    merged = merged_rules([legacy], desired, owner_prefix("genomics"))
    assert merged[0] == {"ID": "old", "Filter": {"Prefix": "old/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
    assert rules_equal(merged[0], legacy)


# ---------------------------------------------------------------------------------------------------------------------
# S3 errors, without a service: botocore's Stubber answers.


def stubbed(tmp_path: Path):
    client = make_s3_client(ClientSettings(endpoint_url="http://127.0.0.1:9", region="us-east-1", max_attempts=1))
    return client, botocore.stub.Stubber(client), policy_for(tmp_path, prefix="labs/genomics")


def test_access_denied_is_the_users_to_fix_with_the_permission_to_ask_for(tmp_path):
    """Access denied is a TargetError (a UsageError: exit 2), not a service failure (exit 3)."""
    from fs3g_hpc.errors import TargetError

    client, stub, policy = stubbed(tmp_path)
    stub.add_client_error("get_bucket_lifecycle_configuration", "AccessDenied", "Access Denied", 403)
    with stub, pytest.raises(TargetError) as e:
        show_bucket_policy(policy, client)
    assert "s3:GetLifecycleConfiguration" in str(e.value) and "\n" not in str(e.value)


def test_no_such_bucket_is_a_usage_error_naming_the_key_and_file(tmp_path):
    client, stub, policy = stubbed(tmp_path)
    stub.add_client_error("get_bucket_lifecycle_configuration", "NoSuchBucket", "no", 404)
    with stub, pytest.raises(UsageError) as e:
        apply_bucket_policy(policy, client=client)
    assert e.value.key == "s3.bucket" and "'some-bucket'" in str(e.value)
    assert str(e.value).startswith(str(tmp_path / "genomics.yaml"))


def test_rules_the_store_drops_after_accepting_them_fail_the_apply(tmp_path):
    client, stub, policy = stubbed(tmp_path)
    stub.add_client_error("get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration", "none", 404)
    stub.add_response("put_bucket_lifecycle_configuration", {})
    stub.add_response("get_bucket_lifecycle_configuration", {"Rules": desired_rules(policy)[1:]})
    with stub, pytest.raises(ServiceError) as e:
        apply_bucket_policy(policy, client=client)
    assert "fs3g-genomics-largefile-to-glacier" in str(e.value) and "reads back" in str(e.value)


def test_bucket_wide_minimum_size_setting_is_written_back(tmp_path):
    client, stub, policy = stubbed(tmp_path)
    desired = desired_rules(policy)
    stub.add_response("get_bucket_lifecycle_configuration",
                      {"Rules": [FOREIGN], "TransitionDefaultMinimumObjectSize": "varies_by_storage_class"})
    stub.add_response("put_bucket_lifecycle_configuration", {},
                      {"Bucket": "some-bucket", "LifecycleConfiguration": {"Rules": [FOREIGN, *desired]},
                       "TransitionDefaultMinimumObjectSize": "varies_by_storage_class"})
    stub.add_response("get_bucket_lifecycle_configuration", {"Rules": [FOREIGN, *desired]})
    with stub:
        result = apply_bucket_policy(policy, client=client)
    stub.assert_no_pending_responses()
    assert result.changed and "read back and checked" in result.text


# ---------------------------------------------------------------------------------------------------------------------
# moto: stores lifecycle rules (never applies them).


def test_show_apply_show_against_moto(moto_bucket, tmp_path):
    bucket = moto_bucket
    other_lab = {"ID": "fs3g-genomics-x-largefile-to-glacier", "Filter": {"Prefix": "labs/genomics-x/largefile/"},
                 "Status": "Enabled", "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}
    bucket.client.put_bucket_lifecycle_configuration(
        Bucket=bucket.name, LifecycleConfiguration={"Rules": [FOREIGN, other_lab]})
    config = write_policy(tmp_path, "genomics", bucket.name, bucket.endpoint_url, prefix="labs/genomics", days=2)

    before = fs3g("policy", "show", "--config", str(config))
    assert before.returncode == 1, before.stdout + before.stderr
    assert "+ add" in before.stdout and marked(before.stdout, "keep (not ours)", "site-expire-scratch:")
    assert f"fs3g policy apply --config {config}" in before.stdout
    as_json = fs3g("policy", "show", "--config", str(config), "--json")
    assert as_json.returncode == 1, as_json.stderr
    data = json.loads(as_json.stdout)
    assert {"desired", "current", "diff"} <= set(data)
    assert [r["ID"] for r in data["diff"]["add"]] == [r["ID"] for r in data["desired"]]
    assert [r["ID"] for r in data["diff"]["foreign"]] == [FOREIGN["ID"], other_lab["ID"]]

    dry = fs3g("policy", "apply", "--config", str(config), "--dry-run")
    assert dry.returncode == 0 and "nothing written" in dry.stdout, dry.stdout + dry.stderr
    assert len(get_rules(bucket.client, bucket.name)) == 2

    applied = fs3g("policy", "apply", "--config", str(config))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "read back and checked" in applied.stdout
    rules = by_id(bucket.client.get_bucket_lifecycle_configuration(Bucket=bucket.name)["Rules"])
    assert rules_equal(rules[FOREIGN["ID"]], FOREIGN) and rules_equal(rules[other_lab["ID"]], other_lab)
    largefile = rules["fs3g-genomics-largefile-to-glacier"]
    assert largefile["Filter"] == {"Prefix": "labs/genomics/largefile/"} and largefile["Status"] == "Enabled"
    assert largefile["Transitions"] == [{"Days": 2, "StorageClass": "GLACIER"}]
    abort = rules["fs3g-genomics-abort-incomplete-uploads"]
    assert abort["Filter"] == {"Prefix": "labs/genomics/"}
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS}

    after = fs3g("policy", "show", "--config", str(config))
    assert after.returncode == 0 and "the bucket matches the policy" in after.stdout, after.stdout + after.stderr
    again = fs3g("policy", "apply", "--config", str(config))
    assert again.returncode == 0 and "nothing written" in again.stdout


def test_policy_changes_update_and_remove_stale_rules_in_process(moto_bucket, tmp_path, capsys):
    bucket = moto_bucket
    # A foreign rule set with the legacy API: moto returns it with a top-level Prefix.
    bucket.client.put_bucket_lifecycle(Bucket=bucket.name, LifecycleConfiguration={"Rules": [
        {"ID": "legacy-expire", "Prefix": "old/", "Status": "Enabled", "Expiration": {"Days": 3}}]})
    config = write_policy(tmp_path, "genomics", bucket.name, bucket.endpoint_url)
    assert cli.main(["policy", "apply", "--config", str(config)]) == 0
    # Class and days change: the old transition rule is stale, the new one added.
    write_policy(tmp_path, "genomics", bucket.name, bucket.endpoint_url, archive="DEEP_ARCHIVE", days=3)
    capsys.readouterr()
    assert cli.main(["policy", "show", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert marked(out, "- remove (stale)", "fs3g-genomics-largefile-to-glacier:")
    assert "+ add" in out and "fs3g-genomics-largefile-to-deep_archive: prefix largefile/: to DEEP_ARCHIVE after 3 " \
                               "days" in out
    assert cli.main(["policy", "apply", "--config", str(config)]) == 0
    assert "removing 1 stale rule(s)" in capsys.readouterr().out
    rules = by_id(get_rules(bucket.client, bucket.name))
    assert set(rules) == {"legacy-expire", "fs3g-genomics-largefile-to-deep_archive",
                          "fs3g-genomics-abort-incomplete-uploads"}
    assert rule_prefix_of(rules["legacy-expire"]) == "old/" and rules["legacy-expire"]["Expiration"] == {"Days": 3}
    assert rules["fs3g-genomics-abort-incomplete-uploads"]["Filter"] == {"Prefix": ""}
    text, differs = show_bucket_policy(load_policy(config, environ={}))
    assert not differs and "the bucket matches the policy" in text


def rule_prefix_of(rule: dict) -> str:
    from fs3g_hpc.lifecycle import rule_prefix

    return rule_prefix(rule)


def test_missing_bucket_and_bad_usage_exit_2(moto_bucket, tmp_path):
    config = write_policy(tmp_path, "genomics", moto_bucket.name + "-absent", moto_bucket.endpoint_url)
    proc = fs3g("policy", "show", "--config", str(config))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "s3.bucket" in proc.stderr and f"{moto_bucket.name}-absent" in proc.stderr
    assert fs3g("policy").returncode == 2
    assert fs3g("policy", "show").returncode == 2
    assert fs3g("policy", "show", "--config", str(config), "--dry-run").returncode == 2


# ---------------------------------------------------------------------------------------------------------------------
# SeaweedFS 4.48: stores expiration and abort rules, answers 501 NotImplemented to any rule with a transition.


def test_seaweedfs_refuses_transitions_with_one_line_and_exit_3(seaweed_bucket, tmp_path):
    bucket = seaweed_bucket
    put_rules(bucket.client, bucket.name, [FOREIGN])  # rules without transitions are accepted
    config = write_policy(tmp_path, "genomics", bucket.name, bucket.endpoint_url, prefix="labs/genomics")
    show = fs3g("policy", "show", "--config", str(config))
    assert show.returncode == 1 and "+ add" in show.stdout, show.stdout + show.stderr
    applied = fs3g("policy", "apply", "--config", str(config))
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert applied.stderr.count("\n") == 1
    assert "NotImplemented" in applied.stderr and bucket.name in applied.stderr
    assert "nothing was changed" in applied.stderr and "configure tiering on the store itself" in applied.stderr
    # The refused write changed nothing: the foreign rule is still the whole configuration.
    assert [r["ID"] for r in get_rules(bucket.client, bucket.name)] == [FOREIGN["ID"]]
    put_rules(bucket.client, bucket.name, [])  # an empty list deletes the configuration
    assert get_rules(bucket.client, bucket.name) == []
