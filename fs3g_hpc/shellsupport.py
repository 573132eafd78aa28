"""`fs3g completion bash|zsh` and `fs3g manpage`: generated from the argparse parser, so they never drift from it.

Completion scripts come from shtab, the man page (roff, section 1) from argparse-manpage; both are small pure-Python
dependencies. Options that take a file or directory are marked from their metavars here, so that the parser in
cli/parser.py needs no completion-specific code. Pure: prints text, writes nothing.
"""

from __future__ import annotations

import argparse
from enum import Enum

from . import __version__


class Shell(Enum):
    BASH = "bash"
    ZSH = "zsh"


# Metavars of arguments that name files or directories (cli.parser.build_parser's), and what to complete for them.
_FILE_METAVARS = ("LAB.yaml", "FILE", "PATH")
_DIR_METAVARS = ("DIR", "RUN_DIR", "PLAN")


def _walk(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse has no public accessor for a parser's arguments
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _walk(sub)


def completion_script(parser: argparse.ArgumentParser, shell: Shell) -> str:
    import shtab

    for action in _walk(parser):
        metavar = action.metavar if isinstance(action.metavar, str) else None
        if action.choices or metavar is None:
            continue
        if metavar in _DIR_METAVARS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif metavar in _FILE_METAVARS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell.value)


_EXIT_STATUS = r""".TP
\fB0\fR
success
.TP
\fB1\fR
the work ran but something differs or failed (see the run directory's report.json and failures.jsonl)
.TP
\fB2\fR
bad usage, configuration or input: one line naming the file and key
.TP
\fB3\fR
internal error: one line; \fB\-vv\fR shows the traceback
.TP
\fB130\fR
interrupted
"""

_ENVIRONMENT = r""".TP
\fBFS3G_SITE_CONFIG\fR
the site file of a lab policy that names none
.TP
\fBAWS_PROFILE\fR, \fBAWS_ACCESS_KEY_ID\fR, \fBAWS_ENDPOINT_URL\fR, ...
the standard AWS credential and endpoint chain; credentials never belong in a policy
"""

_FILES = r""".TP
\fILAB.yaml\fR, \fIsite.yaml\fR
policies; \fBfs3g validate \-\-list\-keys\fR lists every key and its default
.TP
\fI<run_root>/<lab>/\fR
run directories (plan.json, shards, journals, report.json) and the lab's catalog
"""

_SEE_ALSO = r"""\fBsbatch\fR(1), \fBsacct\fR(1), \fBscrontab\fR(1); the README of fs3g\-hpc for every command in detail.
Shell completion: \fBeval "$(fs3g completion bash)"\fR in ~/.bashrc.
"""


def manpage(parser: argparse.ArgumentParser) -> str:
    from argparse_manpage.manpage import Manpage

    page = Manpage(parser)
    page.source = f"fs3g-hpc {__version__}"
    page.manual = "fs3g-hpc manual"
    page.description = "back up and restore research filesystems to S3 and Glacier with Slurm job arrays"
    for heading, content in (("exit status", _EXIT_STATUS), ("environment", _ENVIRONMENT), ("files", _FILES),
                             ("see also", _SEE_ALSO)):
        page.add_section(heading, ">", content.rstrip("\n"))
    # Help texts use × and ≈; troff without preconv (and older man setups) takes only ASCII, so escape the rest.
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in str(page))
