"""Running a command line: parse, configure logging, run the handler, and turn every outcome into one of our exit
codes (exitcodes.py), for fs3g and fasts3plusglacier alike. An internal error's traceback goes to a crash file
(crash.py) named in its one line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, Fs3gError, UsageError
from .exitcodes import ExitCode
from .parser import build_parser

log = logging.getLogger("fs3g_hpc")


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbosity < 3:  # botocore's debug output is very large; -vvv shows it
        logging.getLogger("botocore").setLevel(max(level, logging.INFO))
        logging.getLogger("urllib3").setLevel(max(level, logging.INFO))


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen command, and turn every outcome into one of our exit codes (fs3g and
    fasts3plusglacier alike). An internal error's traceback goes to a crash file (see crash.py) named in its line."""
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        configure_logging(args.verbose)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ConfigError as e:
        print(e, file=sys.stderr)
        return ExitCode.USAGE
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as e:  # noqa: BLE001 - the last resort: one line, the traceback in a crash file
        target = _target_error(e)
        if target is not None:  # the bucket, credentials or endpoint: the user's to fix
            print(f"{parser.prog}: error: {target}", file=sys.stderr)
            return ExitCode.USAGE
        log.debug("internal error", exc_info=True)
        where = _crash_file(e, argv, args)
        if isinstance(e, Fs3gError):
            print(f"{parser.prog}: error: {e}{where}", file=sys.stderr)
        else:
            print(f"{parser.prog}: internal error: {type(e).__name__}: {e}{where}; please report it",
                  file=sys.stderr)
        return ExitCode.INTERNAL


def _target_error(e: BaseException) -> Fs3gError | None:
    """The one-line TargetError for a botocore failure the user must fix (no credentials, no such bucket, access
    denied, endpoint unreachable) that reached the top; None for anything else. botocore is only looked at when it
    was loaded: a command that never talked to S3 does not import it here."""
    if "botocore" not in sys.modules:
        return None
    from ..transfer.target import target_error

    return target_error(e)


def _crash_file(e: BaseException, argv: Sequence[str] | None, args: argparse.Namespace | None) -> str:
    """Write the traceback to a crash file (RUN_DIR/logs when the command has a run directory) and return the text
    naming it for the error line."""
    from ..crash import write_crash_file

    run_dir = getattr(args, "run_dir", None) or getattr(args, "planned_run_dir", None)
    try:
        path = write_crash_file(e, [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)], run_dir)
    except OSError as write_error:
        return f" (no crash file: {write_error}; rerun with -vv for the traceback)"
    return f" (traceback in {path})"


def console_main() -> None:
    sys.exit(main())
