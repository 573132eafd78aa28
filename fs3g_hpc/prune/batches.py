"""Deleting a written list of keys in journaled DeleteObjects batches: the one way prune deletes (a shard's data keys,
the merge's snapshot keys).

The list is cut into batches of `batch_keys` (at most 1,000) in its order, so batch numbers are the same on every run
of it; a batch whose journal line exists is skipped (a rerun after kill -9 resumes), and its refused keys are
reported again. Before each batch: `before_batch()` (the caller re-checks that it still holds the prune lock), then
the hard check (NewestGuard: the batch merge-checked against the newest snapshot's sorted references; a hit raises,
nothing of that batch deleted). After it: one journal line (fsynced), the keys S3 refused recorded by name.
Memory: one batch of keys, one line of the references.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import Fs3gError
from ..runs.layout import FILE_MODE
from .files import BatchLine, read_batches, read_lines


class ReferencedKeyError(Fs3gError):
    """A key about to be deleted is referenced by the newest snapshot: prune stops before that batch."""


class NewestGuard:
    """The hard check: batches come in key order (data keys first); each is merge-checked against the newest
    snapshot's sorted references. Snapshot objects are checked to lie outside the newest snapshot's prefix."""

    def __init__(self, newest_file: Path | None, newest_prefix: str):
        self.refs: Iterator[str] = read_lines(newest_file) if newest_file is not None else iter(())
        self.ref = next(self.refs, None)
        self.newest_prefix = newest_prefix
        self.last = ""

    def check(self, keys: list[str]) -> None:
        for key in keys:
            if key.startswith(self.newest_prefix):
                raise ReferencedKeyError(f"refusing to delete {key}: it belongs to the newest snapshot")
            if key < self.last:  # snapshot keys after the data keys: a second sorted sequence
                continue
            self.last = key
            while self.ref is not None and self.ref < key:
                self.ref = next(self.refs, None)
            if self.ref == key:
                raise ReferencedKeyError(f"refusing to delete {key}: the newest snapshot references it")


def batches(path: Path, size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in read_lines(path):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def delete_listed(client: Any, bucket: str, keys_file: Path, journal: Path, batch_keys: int, guard: NewestGuard, *,
                  on_refused: Callable[[str, str], None], before_batch: Callable[[], None] = lambda: None,
                  stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """Delete the keys of `keys_file` (see the module docstring); (keys deleted by this run, batches skipped as done).
    `stop()` true ends it between batches (a signal: the rest is left for the rerun)."""
    from ..transfer.prune import DELETE_BATCH, delete_keys

    size = max(1, min(batch_keys, DELETE_BATCH))
    done: dict[int, BatchLine] = {b.batch: b for b in read_batches(journal)}
    deleted = skipped = 0
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        for n, batch in enumerate(batches(keys_file, size)):
            if n in done:
                skipped += 1
                for key, code in done[n].refused:
                    on_refused(key, code)
                continue
            if stop():
                break
            before_batch()
            guard.check(batch)
            refused = delete_keys(client, bucket, batch)
            for key, code in refused:
                on_refused(key, code)
            deleted += len(batch) - len(refused)
            out.write(json.dumps(BatchLine(n, len(batch), batch[0], batch[-1], tuple(refused)).to_json()) + "\n")
            out.flush()
            os.fsync(out.fileno())
    return deleted, skipped


def deleted_by_journal(journal: Path) -> int:
    """Keys the journal's batches deleted (over every run of the list)."""
    return sum(b.keys - len(b.refused) for b in read_batches(journal))
