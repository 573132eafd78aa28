"""The command line: `fs3g` (parser.py: the subcommands; handlers.py: a few lines each that call the pipelines'
typed functions; main.py: parse, log, and map every outcome to an exit code of exitcodes.py), `fasts3plusglacier`
(compat.py) and `fs3g demo` (demo.py) beside it. Importing this package loads no boto3."""

from .exitcodes import ExitCode
from .main import console_main, main, run_parser

__all__ = ["ExitCode", "console_main", "main", "run_parser"]

