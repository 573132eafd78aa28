"""Validation with `file: key.path: message (line N)` problems: unknown keys and secrets, scope, site+lab layering,
every value parsed, cross checks; and the kind of a file (lab, site or price table), which decides how
`validate_file` checks it."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, Problem, UsageError
from ..model.sizes import format_size
from .loader import Document, KeyPath, load_document, read_yaml
from .parsers import choice, type_name
from .pricing import check_price_table
from .schema import (IA_MIN_DAYS, META_KEYS, SECRET_KEY_PATTERN, UPLOADER_OVERHEAD_BYTES, FileKind, Policy, RestoreTier,
                     Scope, SmallFiles, StorageClass, schema_fields)

SITE_ENV_VAR = "FS3G_SITE_CONFIG"

class _Checker:
    """Collects problems; locates each key path in the file (and line) that set it."""

    def __init__(self, documents: Sequence[Document]):
        self.documents = documents  # highest precedence first
        self.problems: list[Problem] = []

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        for cut in range(len(path), -1, -1):
            for doc in self.documents:
                if path[:cut] in doc.lines and (cut > 0 or len(self.documents) == 1):
                    return doc.file, doc.lines.get(path[:cut])
        return self.documents[0].file, None

    def add(self, path: KeyPath, message: str, document: Document | None = None) -> None:
        if document is not None:
            file, line = document.file, document.lines.get(path)
        else:
            file, line = self.locate(path)
        self.problems.append(Problem(file, ".".join(path), message, line))

    def sorted_problems(self) -> tuple[Problem, ...]:
        order = {d.file: i for i, d in enumerate(self.documents)}
        return tuple(sorted(self.problems, key=lambda p: (order.get(p.file, -1), p.line or 0)))

    def check_structure(self, cls: type, data: Any, path: KeyPath, doc: Document, kind: FileKind) -> None:
        """Unknown keys, secrets, scope and mapping shape, for one file before layering."""
        if not isinstance(data, dict):
            self.add(path, f"expected a mapping, got {type_name(data)}", doc)
            return
        valid = schema_fields(cls)
        extra = META_KEYS if not path else ()
        for key, value in data.items():
            key_path = path + (key,)
            if key in extra:
                continue
            f = valid.get(key)
            if f is None:
                if SECRET_KEY_PATTERN.search(key):
                    self.add(key_path, "credentials do not belong in a policy: use the AWS environment or "
                                       "~/.aws with s3.profile", doc)
                    continue
                names = sorted(valid) + list(extra)
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.add(key_path, f"unknown key; {hint}valid keys: {', '.join(names)}", doc)
            elif "section" in f.metadata:
                self.check_structure(f.metadata["section"], value, key_path, doc, kind)
            elif f.metadata["scope"] is Scope.LAB and kind is FileKind.SITE:
                self.add(key_path, "belongs in a lab policy, not in a site file", doc)

    def build(self, cls: type, data: Mapping[str, Any], path: KeyPath, require: bool) -> Any:
        """Parse every present value; return the dataclass, or None if anything was missing or wrong."""
        values: dict[str, Any] = {}
        complete = True
        for name, f in schema_fields(cls).items():
            key_path = path + (name,)
            if "section" in f.metadata:
                sub = data.get(name, {})
                if not isinstance(sub, dict):  # already reported by check_structure
                    complete = False
                    continue
                built = self.build(f.metadata["section"], sub, key_path, require)
                complete = complete and built is not None
                values[name] = built
                continue
            if name in data:
                try:
                    values[name] = f.metadata["parse"](data[name])
                except ValueError as e:
                    self.add(key_path, str(e))
                    complete = False
            elif f.default is dataclasses.MISSING:
                complete = False
                if require:
                    self.add(key_path, f"required key is missing ({f.metadata['doc']})")
        return cls(**values) if complete else None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _cross_checks(policy: Policy, checker: _Checker) -> None:
    ceiling = policy.uploader_memory_ceiling_bytes
    up = policy.uploader
    if ceiling > policy.memory_budget_bytes:
        checker.add(("memory_budget_bytes",),
                    f"uploader memory ceiling {up.large_workers} large_workers × {up.large_buffers} large_buffers × "
                    f"{format_size(up.buffer_size_bytes)} + {up.small_workers} small_workers × "
                    f"{format_size(policy.storage.small_file_threshold_bytes)} + "
                    f"{format_size(UPLOADER_OVERHEAD_BYTES)} overhead = {format_size(ceiling)} exceeds the budget "
                    f"{format_size(policy.memory_budget_bytes)}; lower uploader.large_workers, large_buffers or "
                    "buffer_size_bytes, or raise memory_budget_bytes")
    mem = policy.slurm.mem_bytes
    if mem is not None and policy.memory_budget_bytes > mem:
        checker.add(("slurm", "mem_bytes"),
                    f"{format_size(mem)} is less than memory_budget_bytes {format_size(policy.memory_budget_bytes)}; "
                    "the job would be killed for memory: raise slurm.mem_bytes or lower the budget")
    if up.readers_per_file > up.large_buffers:
        checker.add(("uploader", "readers_per_file"),
                    f"{up.readers_per_file} readers need at least as many buffers per file "
                    f"(large_buffers is {up.large_buffers})")
    if policy.storage.small_file_threshold_bytes >= policy.shards.max_bytes:
        checker.add(("shards", "max_bytes"),
                    f"{format_size(policy.shards.max_bytes)} is not above storage.small_file_threshold_bytes "
                    f"({format_size(policy.storage.small_file_threshold_bytes)})")
    if (policy.storage.small_files is SmallFiles.PACKS
            and policy.storage.pack_size_bytes < policy.storage.small_file_threshold_bytes):
        checker.add(("storage", "pack_size_bytes"),
                    f"{format_size(policy.storage.pack_size_bytes)} is less than storage.small_file_threshold_bytes "
                    f"({format_size(policy.storage.small_file_threshold_bytes)}): a small file would not fit a pack")
    archive = policy.storage.archive_storage_class
    if archive in (StorageClass.STANDARD_IA, StorageClass.ONEZONE_IA) and policy.storage.lifecycle_days < IA_MIN_DAYS:
        checker.add(("storage", "lifecycle_days"),
                    f"S3 refuses transitions to {archive.value} before {IA_MIN_DAYS} days; got "
                    f"{policy.storage.lifecycle_days}")
    if archive is StorageClass.DEEP_ARCHIVE and policy.restore.tier is RestoreTier.EXPEDITED:
        checker.add(("restore", "tier"), "DEEP_ARCHIVE has no Expedited retrieval; use Standard or Bulk")
    roots = sorted(policy.roots)
    for i, root in enumerate(roots):
        if root in roots[:i]:
            checker.add(("roots",), f"{root!r} is listed twice")
        for other in roots[:i]:
            if root != other and root.startswith(other.rstrip("/") + "/"):
                checker.add(("roots",), f"{root!r} lies inside {other!r}; it would be backed up twice")
    if not policy.roots:
        checker.add(("roots",), "at least one root directory is needed")


@dataclass(frozen=True)
class ValidationResult:
    file: str
    kind: FileKind
    policy: Policy | None  # None for a site file, a price table or an invalid lab
    problems: tuple[Problem, ...]
    summary: str | None = None  # a valid price table's one-line summary (date, currency, regions)

    @property
    def ok(self) -> bool:
        return not self.problems


def file_kind(path: str | os.PathLike[str]) -> FileKind | None:
    """The kind a YAML file says it is (`kind:`; a lab policy when it says none), or None when it cannot be read or
    its kind is none of lab, site or pricing (`validate_file` then says what is wrong)."""
    try:
        data = read_yaml(path)
    except UsageError:
        return None
    if not isinstance(data, dict):
        return None
    raw = data.get("kind", FileKind.LAB.value)
    return next((kind for kind in FileKind if raw == kind.value), None)


def _file_kind(doc: Document, checker: _Checker) -> FileKind | None:
    """The kind of a file read as a policy: lab or site; anything else is a problem of its `kind` key."""
    raw = doc.data.get("kind", FileKind.LAB.value)
    try:
        return choice(FileKind, (FileKind.LAB, FileKind.SITE))(raw)
    except ValueError as e:
        checker.add(("kind",), str(e), doc)
        return None


def validate_file(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> ValidationResult:
    """Validate a file of any kind: a price table (`kind: pricing`, every region checked), a lab file (layered on its
    site file) or a site file on its own."""
    if file_kind(path) is FileKind.PRICING:
        return _validate_price_table(path)
    return _validate_policy_file(path, environ=environ)


def _validate_price_table(path: str | os.PathLike[str]) -> ValidationResult:
    try:
        summary = check_price_table(Path(path))
    except UsageError as e:  # one line, `file: key.path: message (hint)`, as a Problem prints it
        message = f"{e.message} ({e.hint})" if e.hint else e.message
        problem = Problem(e.path or str(path), e.key or "", message)
        return ValidationResult(str(path), FileKind.PRICING, None, (problem,))
    return ValidationResult(str(path), FileKind.PRICING, None, (), summary)


def _validate_policy_file(path: str | os.PathLike[str], *,
                          environ: Mapping[str, str] | None = None) -> ValidationResult:
    """A lab file (layered on its site file) or a site file on its own; any other kind is a problem."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    lab_path = Path(path)
    doc = load_document(lab_path, problems)
    if doc is None:
        return ValidationResult(str(path), FileKind.LAB, None, tuple(problems))
    checker = _Checker([doc])
    checker.problems.extend(problems)  # duplicate or non-string keys found while loading
    kind = _file_kind(doc, checker)
    if kind is None:
        return ValidationResult(doc.file, FileKind.LAB, None, tuple(checker.problems))
    if kind is FileKind.SITE:
        if "site" in doc.data:
            checker.add(("site",), "only a lab policy names a site file", doc)
        checker.check_structure(Policy, doc.data, (), doc, kind)
        checker.build(Policy, doc.data, (), require=False)
        return ValidationResult(doc.file, kind, None, checker.sorted_problems())

    documents = [doc]
    site_ref = doc.data.get("site")
    site_path: Path | None = None
    if site_ref is not None:
        if not isinstance(site_ref, str) or not site_ref:
            checker.add(("site",), f"expected a path to the site file, got {type_name(site_ref)}", doc)
        else:
            site_path = (lab_path.parent / site_ref) if not os.path.isabs(site_ref) else Path(site_ref)
    elif env.get(SITE_ENV_VAR):
        site_path = Path(env[SITE_ENV_VAR])
    if site_path is not None:
        site_problems: list[Problem] = []
        site_doc = load_document(site_path, site_problems)
        if site_doc is None:
            origin = "site" if site_ref is not None else f"${SITE_ENV_VAR}"
            for p in site_problems:
                checker.add(("site",) if site_ref is not None else (),
                            f"{origin} file {p.file}: {p.message}", doc)
        else:
            site_checker = _Checker([site_doc])
            site_checker.problems.extend(site_problems)
            if _file_kind(site_doc, site_checker) is not FileKind.SITE:
                site_checker.add(("kind",), "a file named as a site file must say `kind: site`", site_doc)
            site_checker.check_structure(Policy, site_doc.data, (), site_doc, FileKind.SITE)
            checker.problems.extend(site_checker.problems)
            documents.append(site_doc)
    checker.documents = documents
    checker.check_structure(Policy, doc.data, (), doc, kind)
    merged: dict = {}
    for d in reversed(documents):
        merged = _merge(merged, {k: v for k, v in d.data.items() if k not in META_KEYS})
    policy = checker.build(Policy, merged, (), require=True)
    if policy is not None:
        policy = dataclasses.replace(policy, source_files=tuple(d.file for d in documents))
        _cross_checks(policy, checker)
    if checker.problems:
        return ValidationResult(doc.file, kind, None, checker.sorted_problems())
    return ValidationResult(doc.file, kind, policy, ())


def load_policy(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Policy:
    """Load a lab policy; raise ConfigError listing every problem."""
    result = _validate_policy_file(path, environ=environ)
    if result.problems:
        raise ConfigError(result.problems)
    if result.policy is None:
        raise ConfigError([Problem(result.file, "kind", "this is a site file; give a lab policy")])
    return result.policy


def policy_from_snapshot(data: Mapping[str, Any], origin: str) -> Policy:
    """The policy a plan recorded (`policy_to_dict` output), checked like a file; `origin` names it in errors."""
    doc = Document(origin, dict(data), {})
    checker = _Checker([doc])
    checker.check_structure(Policy, doc.data, (), doc, FileKind.LAB)
    policy = checker.build(Policy, doc.data, (), require=True)
    if checker.problems or policy is None:
        raise ConfigError(checker.sorted_problems() or [Problem(origin, "", "incomplete policy snapshot")])
    return policy

