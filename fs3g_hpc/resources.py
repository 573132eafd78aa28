"""Files shipped with the package: Slurm templates and example configs.

In an installed package they live inside it (`fs3g_hpc/slurm_templates`, `fs3g_hpc/configs`, mapped from the
repository's top-level directories by setup.cfg); in a checkout they are the top-level directories themselves.
"""

from __future__ import annotations

from enum import Enum
from importlib import resources
from pathlib import Path

from .errors import UsageError


class DataDir(Enum):
    SLURM_TEMPLATES = "slurm_templates"
    CONFIGS = "configs"


def data_dir(kind: DataDir) -> Path:
    packaged = Path(str(resources.files("fs3g_hpc"))) / kind.value
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / kind.value
    if checkout.is_dir():
        return checkout
    raise UsageError(f"{kind.value} not found beside the package", path=str(packaged),
                     hint="reinstall fs3g-hpc: its package data is missing")


def data_file(kind: DataDir, name: str) -> Path:
    path = data_dir(kind) / name
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in data_dir(kind).iterdir() if p.is_file()))
        raise UsageError(f"no such file; available: {available}", path=str(path))
    return path
