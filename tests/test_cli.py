"""The CLI frame: version, usage errors, exit codes, Ctrl-C, internal errors without tracebacks."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import helpers
import pytest

from fs3g_hpc import __version__, cli


fs3g = functools.partial(helpers.fs3g, timeout=60)

def test_version():
    proc = fs3g("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"fs3g-hpc {__version__}")


@pytest.mark.parametrize("args", [[], ["no-such-command"], ["validate", "--bogus"]])
def test_usage_errors_exit_2_with_one_line(args):
    proc = fs3g(*args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fs3g: error: ") and "--help" in last
    assert "Traceback" not in proc.stderr


def test_validate_without_files_is_usage_error():
    proc = fs3g("validate")
    assert proc.returncode == 2 and proc.stderr.strip() == "fs3g: error: give at least one policy file, or --list-keys"


def test_list_keys():
    proc = fs3g("validate", "--list-keys")
    assert proc.returncode == 0
    assert any(line.startswith("uploader.buffer_size_bytes") for line in proc.stdout.splitlines())


def test_ctrl_c_exits_130(tmp_path):
    """A real SIGINT while fs3g blocks reading a FIFO given as a policy file."""
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "fs3g_hpc", "validate", str(fifo)], stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.0)  # let it start and block in open()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip() == "interrupted"


def test_internal_error_is_one_line_exit_3(monkeypatch, capsys, tmp_path):
    """Without a run directory the traceback goes to a crash file in the user's state directory, named in the line."""
    def boom(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli.handlers, "cmd_validate", boom)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli.main(["validate", "x.yaml"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    crashes = list((tmp_path / "state" / "fs3g" / "crashes").glob("crash-*.txt"))
    assert len(crashes) == 1 and len(lines) == 1
    assert lines[0] == f"fs3g: internal error: RuntimeError: disk on fire (traceback in {crashes[0]}); please report it"
    assert crashes[0].stat().st_mode & 0o777 == 0o600
    text = crashes[0].read_text()
    assert "Traceback" in text and "disk on fire" in text and "validate x.yaml" in text


def test_logging_is_not_configured_at_import():
    code = "import logging, fs3g_hpc.cli, fs3g_hpc.config; print(len(logging.getLogger().handlers))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "0"
