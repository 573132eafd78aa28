"""The README's policy defaults match the code: its generated table equals `fs3g validate --list-keys`, and every
"`KEY` (default VALUE)" in its prose is that key's default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fs3g_hpc.config import schema_keys
from fs3g_hpc.model.sizes import parse_size

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- BEGIN policy defaults: generated from `fs3g validate --list-keys`; tests/test_readme.py checks it -->"
END = "<!-- END policy defaults -->"


def list_keys() -> list[tuple[str, str, str]]:
    """(key, meaning, default as printed) from the command users run."""
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", "--list-keys"], capture_output=True,
                          text=True, timeout=60, check=True)
    rows = []
    for line in proc.stdout.splitlines():
        match = re.fullmatch(r"(\S+) +(.*) \[default: (.*)\]", line)
        assert match, line
        rows.append((match[1], match[2], match[3]))
    return rows


def defaults_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    shown = {"": "(empty)", "(required)": "(required)", "unset": "unset"}
    lines += [f"| `{key}` | {shown.get(default, f'`{default}`')} | {doc} |" for key, doc, default in rows]
    return "\n".join(lines)


def test_readme_defaults_table_is_list_keys():
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = defaults_table(list_keys())
    assert table == expected, f"replace the README's defaults table with:\n{expected}"


def _readme_value(key: str, text: str, default: object) -> object:
    """A default as the README writes it, in the unit of the code's default."""
    text = text.strip().strip("`")
    if key.endswith("_bytes"):
        return parse_size(text.replace(" ", ""))
    match = re.fullmatch(r"([\d,]+)(?: (s|days?))?", text)
    if match:
        n = int(match[1].replace(",", ""))
        return n * 86_400 if match[2] and match[2].startswith("day") and key.endswith("_s") else n
    if isinstance(default, str):
        return text.removeprefix("./")
    return text


def test_readme_prose_defaults_are_the_codes():
    """Every `KEY` (default VALUE) in the README: the README said 20 small-file workers; the code has 64."""
    defaults = {key: default for key, _, default in schema_keys()}
    text = README.read_text(encoding="utf-8")
    quoted = re.findall(r"`[^`\n]*?([a-z_]+(?:\.[a-z_]+)*)`\s+\(default ([^)]*)\)", text)
    checked = set()
    for name, value in quoted:
        keys = [k for k in defaults if k == name or k.endswith("." + name)]
        if len(keys) != 1:
            continue  # an option of a command, not a policy key
        key = keys[0]
        default = defaults[key]
        code = getattr(default, "value", default)
        assert _readme_value(key, value, code) == code, f"README: `{name}` (default {value}) but the code has {code!r}"
        checked.add(key)
    assert {"uploader.small_workers", "uploader.large_workers", "uploader.large_buffers", "uploader.buffer_size_bytes",
            "storage.small_file_threshold_bytes", "storage.lifecycle_days", "storage.archive_storage_class",
            "retry_rounds", "restore.poll_interval_s", "restore.wait_limit_s", "restore.download_workers",
            "restore.destination"} <= checked
    assert "20 small-file workers" not in text


def _option_defaults() -> dict[str, set]:
    """Every long option of every subcommand -> the defaults it has (the same name may recur)."""
    import argparse

    from fs3g_hpc.cli.parser import build_parser

    out: dict[str, set] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            for option in action.option_strings:
                if option.startswith("--"):
                    out.setdefault(option, set()).add(action.default)

    walk(build_parser())
    return out


def test_readme_option_defaults_are_the_parsers():
    """Every `--option` (default VALUE) in the README is that option's default in the parser."""
    options = _option_defaults()
    text = README.read_text(encoding="utf-8")
    quoted = re.findall(r"`(--[a-z0-9-]+)`(?: [a-z]+)?\s+\(default ([\d,]+)\)", text)
    assert ("--scan-run-records", "100,000") in quoted and ("--workers", "8") in quoted
    for option, value in quoted:
        assert int(value.replace(",", "")) in options[option], f"README: {option} (default {value})"
