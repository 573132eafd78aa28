"""Job scripts, rendered by one pure function from the shipped skeleton `slurm_templates/job.sbatch.tmpl`.

`#SBATCH` lines are not shell: sbatch splits them on blanks and expands `%` in log paths, so directive values must be
plain tokens (checked here, and by the policy schema for everything a policy supplies). Every value in the script
body is quoted with `shlex.quote`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from string import Template
from typing import Mapping, Sequence

from .. import __version__
from ..config import SlurmSettings
from ..resources import DataDir, data_file

_DIRECTIVE_NAME = re.compile(r"[a-z][a-z0-9-]*")
_DIRECTIVE_VALUE = re.compile(r"[^\s'\"\\`$]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Never rendered into a script: a job script is a file others may read (and Slurm keeps a copy).
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|SESSION|ACCESS_KEY", re.IGNORECASE)


class RenderError(ValueError):
    """A value that cannot be placed safely in a job script."""


@dataclass(frozen=True)
class JobSpec:
    job_name: str
    commands: Sequence[Sequence[str]]  # each an argv, run in order
    description: str = ""
    output_path: str | None = None  # sbatch --output; %A, %a, %j are expanded by Slurm
    array: str | None = None  # e.g. "0-99%8"
    dependency: str | None = None  # e.g. "afterany:123:124"
    directives: Sequence[tuple[str, str | None]] = ()  # more (name, value) pairs, e.g. ("requeue", None)
    environment: Mapping[str, str] = field(default_factory=dict)
    # `#SBATCH --option=value` tokens already validated by the policy schema (slurm.extra_sbatch_options).
    extra_options: Sequence[str] = ()


def policy_directives(slurm: SlurmSettings) -> list[tuple[str, str | None]]:
    """The #SBATCH pairs a lab's policy implies for every job it runs."""
    pairs: list[tuple[str, str | None]] = []
    for name, value in (("partition", slurm.partition), ("account", slurm.account), ("qos", slurm.qos)):
        if value:
            pairs.append((name, value))
    pairs.append(("time", slurm.time_limit))
    pairs.append(("cpus-per-task", str(slurm.cpus_per_task)))
    if slurm.mem_bytes is not None:
        # Slurm's M is MiB; round up so the job never gets less than the policy asked for.
        pairs.append(("mem", f"{-(-slurm.mem_bytes // (1024 * 1024))}M"))
    return pairs


def _directive(name: str, value: str | None) -> str:
    if not _DIRECTIVE_NAME.fullmatch(name):
        raise RenderError(f"not an sbatch option name: {name!r}")
    if value is None:
        return f"#SBATCH --{name}"
    if not _DIRECTIVE_VALUE.fullmatch(value):
        raise RenderError(f"--{name} value {value!r} has blanks, quotes or $; it cannot go in an #SBATCH line")
    return f"#SBATCH --{name}={value}"


def sbatch_options(spec: JobSpec) -> list[tuple[str, str | None]]:
    """The long sbatch options of `spec` but its job name, in script order, each checked for an #SBATCH line."""
    pairs: list[tuple[str, str | None]] = [
        (name, value) for name, value in (("output", spec.output_path), ("array", spec.array),
                                          ("dependency", spec.dependency)) if value is not None]
    pairs.extend(spec.directives)
    for option in spec.extra_options:
        if option.startswith("--"):
            name, _, value = option[2:].partition("=")
            pairs.append((name, value or None))
    for name, value in pairs:
        _directive(name, value)
    return pairs


def short_option_lines(spec: JobSpec) -> list[str]:
    """A policy's short options (e.g. -C=ib) as sbatch reads them in a script: `#SBATCH -C=ib`."""
    lines = []
    for option in spec.extra_options:
        if not option.startswith("--"):
            if not _DIRECTIVE_VALUE.fullmatch(option):
                raise RenderError(f"option {option!r} cannot go in an #SBATCH line")
            lines.append(f"#SBATCH {option}")
    return lines


def environment_lines(spec: JobSpec) -> list[str]:
    """`export NAME=value` lines for the job's environment; a name that looks like a credential is refused."""
    lines = []
    for key in sorted(spec.environment):
        if not _ENV_NAME.fullmatch(key):
            raise RenderError(f"not an environment variable name: {key!r}")
        if _SECRET_ENV.search(key):
            raise RenderError(f"{key} looks like a credential; credentials never go into job scripts")
        lines.append(f"export {key}={shlex.quote(spec.environment[key])}")
    return lines


def description_line(spec: JobSpec) -> str:
    description = " ".join((spec.description or spec.job_name).split())
    return f"# Rendered by fs3g-hpc {__version__}: {description}"


def render_job_script(spec: JobSpec) -> str:
    """The complete batch script for `spec` (a job sbatch runs as written, not through submitit); deterministic, so
    golden files can pin it."""
    if not spec.commands:
        raise RenderError("a job needs at least one command")
    lines = [_directive("job-name", spec.job_name)]
    lines.extend(_directive(name, value) for name, value in sbatch_options(spec))
    lines.extend(short_option_lines(spec))
    env_lines = environment_lines(spec)
    command_lines = [shlex.join(list(argv)) for argv in spec.commands]
    template = Template(data_file(DataDir.SLURM_TEMPLATES, "job.sbatch.tmpl").read_text(encoding="utf-8"))
    return template.substitute(
        description=description_line(spec),
        directives="\n".join(lines),
        environment="\n".join(env_lines),
        commands="\n".join(command_lines),
    )
