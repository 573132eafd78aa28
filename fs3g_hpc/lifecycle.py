"""The bucket lifecycle rules a lab's policy implies, and how they differ from what a bucket holds.

A lab owns exactly two rules, both in S3's `PutBucketLifecycleConfiguration` shape and filtered by key prefix only
(prefix filters work on every S3-compatible store; size filters do not, and moto drops them silently):

    fs3g-<lab>-largefile-to-<class>        [PREFIX/]largefile/ moves to the archive class after lifecycle_days
    fs3g-<lab>-abort-incomplete-uploads    [PREFIX/] incomplete multipart uploads are aborted after 7 days

A rule is *ours* when its ID is exactly `fs3g-<lab>-<name>` for a name in RULE_NAMES. A bare prefix test would not
do: lab `bio` would then claim (and delete) the rules of lab `bio-x`. No name in RULE_NAMES ends with another one
after a `-`, so the two never overlap (a unit test checks it). Every other rule in the bucket (other labs', the
site's, hand-made ones) is kept as it is. Pure data: no boto3, no Slurm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence

from .config import TRANSITION_CLASSES, Policy, StorageClass
from .model.keys import KeyClass

# Days before S3 aborts an incomplete multipart upload (and stops billing its parts). A multi-TB file takes hours to
# send, and a Slurm task requeued before its time limit resumes its upload from the journal, possibly after a long
# queue wait: a week leaves room for that, while an upload abandoned for good costs storage only that long.
ABORT_INCOMPLETE_UPLOAD_DAYS = 7

ABORT_RULE_NAME = "abort-incomplete-uploads"


def transition_rule_name(storage_class: StorageClass) -> str:
    return f"{KeyClass.LARGE.value}-to-{storage_class.value.lower()}"


# Every rule name fs3g has ever written. Names are never removed from here, so a rule a lab no longer needs (e.g. after
# its archive class changed) is still recognised as the lab's and removed as stale.
RULE_NAMES: frozenset[str] = frozenset({ABORT_RULE_NAME, *(transition_rule_name(c) for c in TRANSITION_CLASSES)})

# What S3 assumes when a configuration names no TransitionDefaultMinimumObjectSize (objects under 128 KiB stay put).
DEFAULT_TRANSITION_MINIMUM_SIZE = "all_storage_classes_128K"


def owner_prefix(lab_name: str) -> str:
    return f"fs3g-{lab_name}-"


def _dir(*parts: str) -> str:
    """A key prefix ending in `/` (or "" for the whole bucket), without an empty `//` segment (as keys._join)."""
    joined = "/".join(p for p in parts if p)
    return f"{joined}/" if joined else ""


def lab_prefix(policy: Policy) -> str:
    return _dir(policy.s3.prefix)


def desired_rules(policy: Policy) -> list[dict]:
    """The lab's lifecycle rules, in PutBucketLifecycleConfiguration shape."""
    owner = owner_prefix(policy.lab.name)
    archive = policy.storage.archive_storage_class
    return [
        {
            "ID": owner + transition_rule_name(archive),
            "Filter": {"Prefix": _dir(policy.s3.prefix, KeyClass.LARGE.value)},
            "Status": "Enabled",
            "Transitions": [{"Days": policy.storage.lifecycle_days, "StorageClass": archive.value}],
        },
        {
            "ID": owner + ABORT_RULE_NAME,
            "Filter": {"Prefix": lab_prefix(policy)},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS},
        },
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Comparing rules by meaning.


def rule_prefix(rule: Mapping[str, Any]) -> str:
    """The key prefix a rule applies to: `Filter.Prefix`, `Filter.And.Prefix`, or the legacy top-level `Prefix`."""
    filt = rule.get("Filter")
    if isinstance(filt, Mapping):
        if "Prefix" in filt:
            return str(filt["Prefix"] or "")
        if isinstance(filt.get("And"), Mapping):
            return str(filt["And"].get("Prefix") or "")
        return ""
    return str(rule.get("Prefix") or "")


def _filter_extras(rule: Mapping[str, Any]) -> dict:
    """Filter conditions other than the prefix (tags, sizes): a rule with them applies to fewer objects."""
    filt = rule.get("Filter")
    if not isinstance(filt, Mapping):
        return {}
    body = filt.get("And") if isinstance(filt.get("And"), Mapping) else filt
    extras: dict[str, Any] = {}
    tags = list(body.get("Tags") or []) + ([body["Tag"]] if body.get("Tag") else [])
    if tags:
        extras["Tags"] = sorted((str(t.get("Key")), str(t.get("Value"))) for t in tags)
    for key in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if body.get(key) is not None:
            extras[key] = int(body[key])
    return extras


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def normalise_rule(rule: Mapping[str, Any]) -> dict:
    """A canonical form for comparison: the same meaning gives the same dict, however a store spelled it (legacy
    `Prefix` or `Filter`, `Transition` or `Transitions`, default values added or left out)."""
    out: dict[str, Any] = {"ID": rule.get("ID"), "Status": rule.get("Status", "Enabled"), "Prefix": rule_prefix(rule)}
    extras = _filter_extras(rule)
    if extras:
        out["FilterExtras"] = extras
    transitions = list(rule.get("Transitions") or []) + ([rule["Transition"]] if rule.get("Transition") else [])
    if transitions:
        out["Transitions"] = sorted(
            (int(t["Days"]) if t.get("Days") is not None else None, _plain(t.get("Date")), t.get("StorageClass"))
            for t in transitions)
    expiration = {k: _plain(v) for k, v in (rule.get("Expiration") or {}).items() if v is not None}
    if expiration.get("ExpiredObjectDeleteMarker") is False:  # the default, spelt out by some stores
        del expiration["ExpiredObjectDeleteMarker"]
    if expiration:
        out["Expiration"] = expiration
    abort = rule.get("AbortIncompleteMultipartUpload") or {}
    if abort.get("DaysAfterInitiation") is not None:
        out["AbortDays"] = int(abort["DaysAfterInitiation"])
    for key in ("NoncurrentVersionTransitions", "NoncurrentVersionExpiration"):
        if rule.get(key):
            out[key] = json.loads(json.dumps(rule[key], sort_keys=True, default=str))
    return out


def rules_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return normalise_rule(a) == normalise_rule(b)


def for_put(rule: Mapping[str, Any]) -> dict:
    """A rule as read from a bucket, ready to be written back with the same meaning: the legacy top-level `Prefix`
    becomes `Filter: {Prefix}` (a configuration mixing both forms is refused by S3)."""
    out = dict(rule)
    if "Filter" not in out and "Prefix" in out:
        out["Filter"] = {"Prefix": out.pop("Prefix") or ""}
    return out


@dataclass(frozen=True)
class RuleUpdate:
    current: dict
    desired: dict


@dataclass(frozen=True)
class RuleDiff:
    to_add: list[dict] = field(default_factory=list)
    to_update: list[RuleUpdate] = field(default_factory=list)
    unchanged: list[dict] = field(default_factory=list)
    foreign: list[dict] = field(default_factory=list)  # other labs', the site's, hand-made: always kept
    stale: list[dict] = field(default_factory=list)  # ours, but the policy no longer implies them: removed
    warnings: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.to_add or self.to_update or self.stale)

    def to_json(self) -> dict:
        return {
            "add": self.to_add,
            "update": [{"current": u.current, "desired": u.desired} for u in self.to_update],
            "unchanged": self.unchanged,
            "foreign": self.foreign,
            "stale": self.stale,
            "warnings": self.warnings,
            "differs": self.differs,
        }


def is_owned(rule_id: str | None, owner: str) -> bool:
    return rule_id is not None and rule_id.startswith(owner) and rule_id[len(owner):] in RULE_NAMES


def _overlaps(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _foreign_warnings(foreign: Iterable[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rules not ours that act on the lab's objects: an expiration there deletes backups, a transition moves small
    files to a class where they cost more. Kept (they are not ours to remove), but said."""
    ours = [rule_prefix(r) for r in desired]
    scope = min(ours, key=len) if ours else ""
    out = []
    for rule in foreign:
        norm = normalise_rule(rule)
        if norm["Status"] != "Enabled" or not _overlaps(norm["Prefix"], scope):
            continue
        acts = [what for key, what in (("Expiration", "expires (deletes) objects"),
                                       ("NoncurrentVersionExpiration", "expires old versions"),
                                       ("Transitions", "moves objects to another class")) if key in norm]
        if acts:
            out.append(f"rule {norm['ID']!r} (not ours) {' and '.join(acts)} under {_show_prefix(norm['Prefix'])}, "
                       f"which overlaps this lab's {_show_prefix(scope)}")
    return out


def diff_rules(current: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]],
               owner_prefix: str) -> RuleDiff:
    """What `apply` would change. Rules are matched by ID and compared by meaning (normalise_rule)."""
    desired_ids = {r["ID"] for r in desired}
    by_id: dict[str, dict] = {}
    foreign: list[dict] = []
    stale: list[dict] = []
    for rule in current:
        rule_id = rule.get("ID")
        if rule_id in desired_ids:
            by_id[rule_id] = dict(rule)
        elif is_owned(rule_id, owner_prefix):
            stale.append(dict(rule))
        else:
            foreign.append(dict(rule))
    diff = RuleDiff(foreign=foreign, stale=stale, warnings=_foreign_warnings(foreign, desired))
    for rule in desired:
        now = by_id.get(rule["ID"])
        if now is None:
            diff.to_add.append(dict(rule))
        elif rules_equal(now, rule):
            diff.unchanged.append(now)
        else:
            diff.to_update.append(RuleUpdate(now, dict(rule)))
    return diff


def merged_rules(current: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]],
                 owner_prefix: str) -> list[dict]:
    """What `apply` writes: every rule that is not ours, unchanged in meaning, then the lab's desired rules. The lab's
    stale rules are left out."""
    diff = diff_rules(current, desired, owner_prefix)
    return [for_put(r) for r in diff.foreign] + [dict(r) for r in desired]


# ---------------------------------------------------------------------------------------------------------------------
# Human output.


def _show_prefix(prefix: str) -> str:
    return prefix if prefix else "(whole bucket)"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def describe_rule(rule: Mapping[str, Any]) -> str:
    """One line: `ID: prefix P: what it does`."""
    norm = normalise_rule(rule)
    acts: list[str] = []
    for days, when, klass in norm.get("Transitions", []):
        acts.append(f"to {klass} after {_days(days)}" if days is not None else f"to {klass} on {when}")
    if "Expiration" in norm:
        exp = norm["Expiration"]
        if "Days" in exp:
            acts.append(f"expire after {_days(int(exp['Days']))}")
        elif "Date" in exp:
            acts.append(f"expire on {exp['Date']}")
        if exp.get("ExpiredObjectDeleteMarker"):
            acts.append("remove expired delete markers")
    if "AbortDays" in norm:
        acts.append(f"abort incomplete multipart uploads after {_days(norm['AbortDays'])}")
    for key in ("NoncurrentVersionTransitions", "NoncurrentVersionExpiration"):
        if key in norm:
            acts.append(f"{key} {json.dumps(norm[key], sort_keys=True)}")
    scope = f"prefix {_show_prefix(norm['Prefix'])}"
    if "FilterExtras" in norm:
        scope += f" and {json.dumps(norm['FilterExtras'])}"
    status = "" if norm["Status"] == "Enabled" else f" [{norm['Status']}]"
    return f"{norm['ID'] or '(no ID)'}: {scope}{status}: {'; '.join(acts) or 'no action'}"


def format_rules(rules: Sequence[Mapping[str, Any]], indent: str = "  ") -> str:
    if not rules:
        return f"{indent}(no lifecycle rules)"
    return "\n".join(indent + describe_rule(r) for r in rules)


_MARK_WIDTH = len("  keep (not ours) ")


def format_diff(diff: RuleDiff, indent: str = "  ") -> str:
    """One line per rule, marked `+ add`, `~ update` (with the current and desired lines), `= unchanged`,
    `- remove (stale)` or `  keep (not ours)`; then any warning about rules that are not ours."""
    lines: list[str] = []

    def add(mark: str, rule: Mapping[str, Any]) -> None:
        lines.append(f"{indent}{mark:<{_MARK_WIDTH}}{describe_rule(rule)}")

    for rule in diff.to_add:
        add("+ add", rule)
    for update in diff.to_update:
        add("~ update", update.desired)
        lines.append(f"{indent}{'':<{_MARK_WIDTH}}  was {describe_rule(update.current)}")
    for rule in diff.unchanged:
        add("= unchanged", rule)
    for rule in diff.stale:
        add("- remove (stale)", rule)
    for rule in diff.foreign:
        add("  keep (not ours)", rule)
    lines.extend(f"{indent}warning: {w}" for w in diff.warnings)
    return "\n".join(lines)


@dataclass(frozen=True)
class LifecycleState:
    """A lab's desired rules beside what its bucket holds."""

    bucket: str
    lab: str
    desired: list[dict]
    current: list[dict]

    @property
    def owner(self) -> str:
        return owner_prefix(self.lab)

    @property
    def diff(self) -> RuleDiff:
        return diff_rules(self.current, self.desired, self.owner)

    @property
    def differs(self) -> bool:
        return self.diff.differs

    def merged(self) -> list[dict]:
        return merged_rules(self.current, self.desired, self.owner)

    def text(self) -> str:
        diff = self.diff
        verdict = ("the bucket differs from the policy" if diff.differs
                   else "the bucket matches the policy")
        return "\n".join([
            f"bucket s3://{self.bucket}, lab {self.lab} (its rules are {self.owner}*)",
            "desired (from the policy):",
            format_rules(self.desired),
            "current (in the bucket):",
            format_rules(self.current),
            "difference:",
            format_diff(diff),
            verdict,
        ])

    def to_json(self) -> dict:
        return {"bucket": self.bucket, "lab": self.lab, "desired": self.desired, "current": self.current,
                "diff": self.diff.to_json()}


def lifecycle_state(policy: Policy, current: Sequence[Mapping[str, Any]]) -> LifecycleState:
    return LifecycleState(policy.s3.bucket, policy.lab.name, desired_rules(policy), [dict(r) for r in current])
