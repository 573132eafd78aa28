"""Errors carrying the context a user needs; exit codes are decided in cli/ only (cli/exitcodes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class Fs3gError(Exception):
    """Base error: a one-line message, optional file and key path, and a hint saying what to do next."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.key = key
        self.hint = hint

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.key) if p]
        text = ": ".join([*parts, self.message])
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(Fs3gError):
    """Bad command-line usage or bad input named by the user (exit 2)."""


class TargetError(UsageError):
    """The bucket cannot be used as configured: no credentials, credentials refused, access denied, no such bucket,
    endpoint unreachable. The user's to fix (exit 2); the message names the bucket and endpoint, the hint what to do.
    Made by fs3g_hpc.transfer.target, the one place that reads botocore's exceptions for this."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: `FILE: key.path: message (line N)`."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        parts = [self.file] + ([self.key] if self.key else []) + [self.message]
        text = ": ".join(parts)
        return f"{text} (line {self.line})" if self.line else text


class ConfigError(Fs3gError):
    """A policy that cannot be used; holds every problem found, one line each."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return self.message


class ServiceError(Fs3gError):
    """An outside system (S3, Slurm) refused or failed a request (exit 3 unless a caller maps it)."""


class CommandError(ServiceError):
    """A subprocess failed: shows the command, its exit code and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, *, hint: str | None = None):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        detail = stderr.strip().replace("\n", " | ")[:2000]
        super().__init__(f"`{' '.join(self.argv)}` {status}: {detail or '(no stderr)'}", hint=hint)
