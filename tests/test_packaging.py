"""Templates and example configs must be reachable from an installed package, not only from a checkout."""

from __future__ import annotations

import os
from pathlib import Path

import fs3g_hpc
from fs3g_hpc.resources import DataDir, data_dir, data_file

REPO = Path(__file__).resolve().parent.parent


def test_package_data_present():
    assert data_file(DataDir.SLURM_TEMPLATES, "job.sbatch.tmpl").read_text().startswith("#!/bin/bash")
    shipped = {p.name for p in data_dir(DataDir.CONFIGS).glob("*.yaml")}
    in_repo = {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert shipped == in_repo and "site.yaml" in shipped


def test_installed_package_carries_its_data():
    """.ci/run installs the package (not editable) and sets FS3G_EXPECT_INSTALLED: the data must come from it."""
    package = Path(fs3g_hpc.__file__).resolve().parent
    if os.environ.get("FS3G_EXPECT_INSTALLED"):
        assert package != REPO / "fs3g_hpc", f"tests imported the checkout at {package}, not the installed package"
    for kind in DataDir:
        where = data_dir(kind)
        expected = package / kind.value if (package / kind.value).is_dir() else REPO / kind.value
        assert where == expected
        if os.environ.get("FS3G_EXPECT_INSTALLED"):
            assert where.parent == package
