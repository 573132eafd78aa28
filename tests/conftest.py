"""Fixtures for the real services started by `.ci/services up` (load them with `eval "$(.ci/services env)"`).

A missing service fails the tests that need it, never skips them: CI has every service. Tests that need a service
carry the marker `s3` or `slurm` (pytest_collection_modifyitems below adds it to every test using a service fixture;
tests that reach a service another way say so with @pytest.mark.s3/slurm or a module's `pytestmark`), so
`pytest -m "not slurm and not s3"` is a fast tier that needs no service.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
ENDPOINT_VARS = {"moto": "FS3G_MOTO_ENDPOINT", "seaweedfs": "FS3G_SEAWEED_ENDPOINT"}


def _need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"${var} is not set: run `.ci/services up` and `eval \"$(.ci/services env)\"` first "
                    "(.ci/run does both)", pytrace=False)
    return value


# Fixtures that need a service, and the marker a test using one (directly or through another fixture) gets.
SERVICE_FIXTURES = {"bucket": "s3", "seaweed_bucket": "s3", "moto_bucket": "s3", "slurm_cluster": "slurm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted({SERVICE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVICE_FIXTURES}):
            item.add_marker(marker)


@dataclass
class Bucket:
    endpoint_name: str
    endpoint_url: str
    name: str
    client: Any


def _fresh_bucket(endpoint_name: str) -> Iterator[Bucket]:
    """A fresh, empty bucket on one loopback endpoint; emptied and removed afterwards."""
    from fs3g_hpc.transfer.client import ClientSettings, make_s3_client

    url = _need(ENDPOINT_VARS[endpoint_name])
    client = make_s3_client(ClientSettings(endpoint_url=url, region="us-east-1", max_attempts=3))
    name = f"fs3g-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield Bucket(endpoint_name, url, name, client)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})
    client.delete_bucket(Bucket=name)


@pytest.fixture(params=sorted(ENDPOINT_VARS), ids=sorted(ENDPOINT_VARS))
def bucket(request: pytest.FixtureRequest) -> Iterator[Bucket]:
    """A fresh bucket on each loopback endpoint in turn."""
    yield from _fresh_bucket(request.param)


@pytest.fixture
def seaweed_bucket() -> Iterator[Bucket]:
    """SeaweedFS only: the endpoint that verifies checksums and reports composite ones."""
    yield from _fresh_bucket("seaweedfs")


@pytest.fixture
def moto_bucket() -> Iterator[Bucket]:
    """moto only: the endpoint with Glacier behaviour."""
    yield from _fresh_bucket("moto")


@pytest.fixture
def slurm_cluster() -> dict[str, str]:
    """The one-node test cluster; fails when it is not up."""
    from fs3g_hpc.slurm.commands import slurm_available

    _need("FS3G_TEST_SLURM")
    if not slurm_available():
        pytest.fail("the test Slurm cluster does not answer `scontrol ping`: run `.ci/services up`", pytrace=False)
    return {"max_array_size": _need("FS3G_TEST_MAX_ARRAY_SIZE")}


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A directory compute nodes can see (the test node is this machine), private to its owner."""
    tmp_path.chmod(0o700)
    return tmp_path


def vanishing_scandir(should_vanish: Callable[[os.DirEntry], bool]) -> Callable[[Any], Any]:
    """A stand-in for os.scandir that lists a directory, then deletes an entry just before handing it out:
    the race of a file removed between the listing and its lstat, made deterministic."""
    real_scandir = os.scandir

    class Vanishing:
        def __init__(self, path: Any):
            self._it = real_scandir(path)

        def __enter__(self) -> "Vanishing":
            return self

        def __exit__(self, *exc: object) -> None:
            self._it.close()

        def __iter__(self) -> "Vanishing":
            return self

        def __next__(self) -> os.DirEntry:
            entry = next(self._it)
            if should_vanish(entry):
                os.unlink(entry.path)
            return entry

    return Vanishing
