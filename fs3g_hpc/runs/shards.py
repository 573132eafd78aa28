"""Cutting a run's entries into shard record files: the sequential cutter of restores and hash checks (a backup plan
cuts by directory with backup/plan.py's ShardCutter). Each shard's summary is a runs.files.ShardSummary's JSON.

Memory: one open record writer and one small summary per shard.
"""

from __future__ import annotations

from pathlib import Path

from ..model.records import Entry, RecordWriter


class SequentialShardCutter:
    """Shards in arrival order, each closed at `max_files` entries or before passing `max_bytes` (a single larger
    entry gets a shard of its own): restores and hash checks, whose entries need no directory grouping."""

    def __init__(self, shards_dir: Path, max_files: int, max_bytes: int):
        self.shards_dir, self.max_files, self.max_bytes = shards_dir, max_files, max_bytes
        self.shards: list[dict] = []
        self._writer: RecordWriter | None = None

    def add(self, entry: Entry) -> None:
        current = self.shards[-1] if self.shards else None
        if self._writer is None or current is None or current["files"] >= self.max_files or (
                current["files"] and current["bytes"] + entry.size_bytes > self.max_bytes):
            self._open()
            current = self.shards[-1]
        assert self._writer is not None
        self._writer.write(entry)
        current["files"] += 1
        current["bytes"] += entry.size_bytes

    def add_group(self, group: list[Entry]) -> None:
        """Hard links of one file: one shard for all (a restore links the others to the first), its bytes once."""
        current = self.shards[-1] if self.shards else None
        size = group[0].size_bytes
        if self._writer is None or current is None or (current["files"] and (
                current["files"] + len(group) > self.max_files or current["bytes"] + size > self.max_bytes)):
            self._open()
            current = self.shards[-1]
        assert self._writer is not None
        for entry in group:
            self._writer.write(entry)
        current["files"] += len(group)
        current["bytes"] += size

    def _open(self) -> None:
        self._close()
        index = len(self.shards)
        path = self.shards_dir / f"shard-{index:06d}.rec"
        self._writer = RecordWriter(path)
        self.shards.append({"index": index, "file": path.name, "files": 0, "bytes": 0})

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> list[dict]:
        self._close()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
