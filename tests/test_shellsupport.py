"""`fs3g completion bash|zsh` and `fs3g manpage`: generated from the parser, checked with bash itself and groff."""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess

import helpers
import pytest

from fs3g_hpc.cli.parser import build_parser


fs3g = functools.partial(helpers.fs3g, timeout=60)

def subcommands(parser: argparse.ArgumentParser, prefix: str = "fs3g") -> list[str]:
    """Every command line that selects a subcommand: `fs3g backup`, `fs3g policy show`, ..."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out.extend(subcommands(sub, f"{prefix} {name}"))
    return out


def complete(script: str, tmp_path, words: list[str]) -> list[str]:
    """What bash offers for the last word of `words`, through the script's own completion function."""
    (tmp_path / "fs3g.bash").write_text(script)
    quoted = " ".join(f"'{w}'" for w in words)
    line = " ".join(words)
    program = (f"source {tmp_path / 'fs3g.bash'}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{line}'; COMP_POINT={len(line)}; "
               "fn=$(complete -p fs3g | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p'); $fn fs3g; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_is_valid_and_completes_commands_options_and_files(tmp_path):
    proc = fs3g("completion", "bash")
    assert proc.returncode == 0 and proc.stderr == ""
    script = proc.stdout
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=60)
    assert syntax.returncode == 0, syntax.stderr
    assert complete(script, tmp_path, ["fs3g", "ba"]) == ["backup"]
    assert set(complete(script, tmp_path, ["fs3g", ""])) >= {c.split()[1] for c in subcommands(build_parser())}
    assert complete(script, tmp_path, ["fs3g", "validate", "--li"]) == ["--list-keys"]
    assert complete(script, tmp_path, ["fs3g", "restore", "--tier", ""]) == ["Bulk", "Standard", "Expedited"]
    assert complete(script, tmp_path, ["fs3g", "policy", ""]) == ["show", "apply"]
    (tmp_path / "lab-genomics.yaml").write_text("x")
    assert complete(script, tmp_path, ["fs3g", "plan", "--config", "lab-g"]) == ["lab-genomics.yaml"]


def test_zsh_completion_is_a_compdef_function():
    proc = fs3g("completion", "zsh")
    assert proc.returncode == 0 and proc.stdout.startswith("#compdef fs3g")
    for command in ("backup", "restore", "validate", "completion", "manpage"):
        assert f"{command}:" in proc.stdout
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=proc.stdout, text=True, timeout=60).returncode == 0


def test_completion_refuses_an_unknown_shell():
    proc = fs3g("completion", "fish")
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr


def test_manpage_mentions_every_subcommand_and_renders(tmp_path):
    proc = fs3g("manpage")
    assert proc.returncode == 0 and proc.stderr == ""
    page = proc.stdout
    assert page.startswith('.TH FS3G "1"') and "fs3g\\-hpc" in page
    text = page.replace("\\-", "-")
    missing = [c for c in subcommands(build_parser()) if f"{c}'" not in text and f"{c}\\" not in text]
    assert not missing, missing
    for section in (".SH SYNOPSIS", ".SH EXIT STATUS", ".SH ENVIRONMENT", ".SH SEE ALSO"):
        assert section in page
    groff = shutil.which("groff")
    if groff:  # render it as `man` would, warnings on; groff is not a dependency
        render = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True, text=True,
                                timeout=60)
        assert render.returncode == 0 and render.stderr == "", render.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_lists_the_policy_subcommand_actions(shell):
    assert "apply" in fs3g("completion", shell).stdout
