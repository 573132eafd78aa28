"""Crash files: the full traceback of an internal error, kept where the user (and a bug report) can find it.

Layout: `RUN_DIR/logs/crash-<host>-<pid>-<UTC time>.txt` when the command has a run directory that exists (every
array task, merge, submit, backup, restore, status of a run ...), else
`${XDG_STATE_HOME:-~/.local/state}/fs3g/crashes/crash-<host>-<pid>-<UTC time>.txt`. Directories are made owner-only,
files are created mode 0600 and never overwritten (O_EXCL).

Safety: a crash file holds the tool version, the command line, the Python version and the traceback (exception text
and source lines). It holds no environment and no local variables, so no credential: fs3g takes secrets only from
botocore's chain, never from its command line.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from . import __version__
from .runs.layout import ensure_private_dir

FILE_MODE = 0o600


def state_dir(environ: dict[str, str] | None = None) -> Path:
    """Where crashes of commands without a run directory go (the XDG base directory spec's state home)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "fs3g" / "crashes"


def crash_dir(run_dir: str | os.PathLike[str] | None) -> Path:
    """RUN_DIR/logs when `run_dir` is an existing directory, else the state directory."""
    if run_dir is not None and Path(run_dir).is_dir():
        return Path(run_dir) / "logs"
    return state_dir()


def write_crash_file(error: BaseException, argv: Sequence[str], run_dir: str | os.PathLike[str] | None) -> Path:
    """Write `error`'s traceback to a new owner-only crash file and return its path (OSError when it cannot)."""
    directory = ensure_private_dir(crash_dir(run_dir))
    now = datetime.now(timezone.utc)
    host = socket.gethostname().split(".")[0] or "host"
    path = directory / f"crash-{host}-{os.getpid()}-{now:%Y%m%dT%H%M%S}.txt"
    text = "".join([
        f"fs3g-hpc {__version__} internal error at {now.isoformat()} on {socket.gethostname()} (pid {os.getpid()})\n",
        f"command: {' '.join(argv)}\n",
        f"python: {sys.version.split()[0]} ({platform.platform()})\n",
        "\n",
        *traceback.format_exception(type(error), error, error.__traceback__),
    ])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)
    return path
