"""The process exit codes of fs3g and fasts3plusglacier. Exit codes live here and only here.

0 success; 1 the work ran but something differs or failed; 2 bad usage, config or input; 3 internal error;
130 interrupted. The pipelines return their own verdicts (backup.run.RunVerdict has these values; restore.run's
RunVerdict, a compare's `ok`, a shard's status): the mappings below turn them into exit codes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..prune.merge import PruneVerdict
    from ..restore.run import RunVerdict


class ExitCode(IntEnum):
    OK = 0
    DIFFERENCES = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130


def restore_exit_code(verdict: "RunVerdict") -> int:
    from ..restore.run import RunVerdict

    return {RunVerdict.COMPLETE: ExitCode.OK, RunVerdict.INCOMPLETE: ExitCode.DIFFERENCES,
            RunVerdict.INTERRUPTED: ExitCode.INTERRUPTED}[verdict]


def prune_exit_code(verdict: "PruneVerdict") -> int:
    """A prune: 0 done (or submitted), 1 keys S3 refused or shards left to resume, 130 stopped by a signal."""
    from ..prune.merge import PruneVerdict

    return {PruneVerdict.DONE: ExitCode.OK, PruneVerdict.SUBMITTED: ExitCode.OK,
            PruneVerdict.REFUSED: ExitCode.DIFFERENCES, PruneVerdict.INCOMPLETE: ExitCode.DIFFERENCES,
            PruneVerdict.INTERRUPTED: ExitCode.INTERRUPTED}[verdict]


def compare_exit_code(ok: bool | None) -> int:
    """A compare's verdict: 1 when something differs, else 0 (None: no verdict to give, e.g. a run not yet merged)."""
    return ExitCode.DIFFERENCES if ok is False else ExitCode.OK


def shard_exit_code(*, interrupted: bool, failed: bool) -> int:
    """An array task's exit: 130 when a signal stopped it (its rerun resumes), 1 when some entry failed, else 0."""
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.DIFFERENCES if failed else ExitCode.OK
