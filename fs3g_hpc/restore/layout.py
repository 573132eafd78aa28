"""A restore's run directory (the tree in fs3g_hpc/restore/__init__.py), its header, and the S3 client its steps use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Policy
from ..runs.files import RestoreHeader
from ..runs.layout import RunKind, RunLayout, failures_file, journal_file, shard_result_file
from ..runs.report import read_header
from ..transfer.client import ClientSettings, make_s3_client

LIST_THREADS = 16


@dataclass(frozen=True)
class RestoreLayout(RunLayout):
    """A restore run (its header: restore.json)."""

    kind: RunKind = RunKind.RESTORE

    @property
    def refused_file(self) -> Path:
        return self.run_dir / "refused.jsonl"

    @property
    def directories_file(self) -> Path:
        """The selected directories, deepest first: the merge creates them and puts their metadata back."""
        return self.run_dir / "directories.rec"

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / "stage"

    @property
    def stage_state(self) -> Path:
        return self.stage_dir / "state.json"

    def stage_file(self, index: int) -> Path:
        return self.stage_dir / f"shard-{index:06d}.json"

    def journal(self, index: int) -> Path:
        return journal_file(self, index)

    def result(self, index: int) -> Path:
        return shard_result_file(self, index)

    def failures(self, index: int) -> Path:
        return failures_file(self, index)

    @property
    def chain_file(self) -> Path:
        """The Slurm jobs of this restore so far (poll jobs, then the download arrays and the merge)."""
        return self.run_dir / "jobs" / "chain.json"


def load_header(run_dir: Path) -> tuple[RestoreLayout, RestoreHeader, Policy]:
    """The restore's layout, its header (restore.json, typed) and the policy it was made with."""
    layout = RestoreLayout(run_dir)
    header = read_header(layout)
    assert isinstance(header, RestoreHeader)
    return layout, header, header.policy_snapshot(layout.header_file)


def default_client(policy: Policy) -> Any:
    """The S3 client of a restore's steps: enough connections for the listing threads and the download workers."""
    return make_s3_client(ClientSettings.from_policy(policy, max_pool_connections=max(
        LIST_THREADS, 2 * policy.restore.download_workers)))
