"""Lab locks in the bucket: who holds them and when they go stale. Pure rules, no I/O.

    [PREFIX/]locks/backup.json   written when a backup is submitted, removed by its last merge (success or not,
                                 once no retry round follows)
    [PREFIX/]locks/prune.json    written while `fs3g prune --apply` deletes, removed when it ends

A lock is one small JSON object (LockRecord): the operation, host, pid, Slurm job id (if any), the run directory and
the UTC time it was taken. Prune refuses while a backup lock exists; one older than `retention.backup_lock_stale_hours`
is called stale in the message, which says how to break it (`fs3g prune --break-lock`). A lock read from the bucket
is untrusted input: LockRecord.from_json checks every field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ..errors import UsageError

LOCKS_DIR = "locks"


class LockKind(Enum):
    BACKUP = "backup"
    PRUNE = "prune"


class LockError(UsageError):
    """A lock is held (or is not ours to judge): the message names the holder."""


def lock_key(prefix: str, kind: LockKind) -> str:
    return "/".join(p for p in (prefix, LOCKS_DIR, f"{kind.value}.json") if p)


@dataclass(frozen=True)
class LockRecord:
    kind: LockKind
    host: str
    pid: int
    job_id: str
    run_dir: str
    created: str  # ISO 8601 UTC

    def to_json(self) -> dict[str, Any]:
        return {"format": "fs3g-lock", "kind": self.kind.value, "host": self.host, "pid": self.pid,
                "job_id": self.job_id, "run_dir": self.run_dir, "created": self.created}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: Any, where: str) -> "LockRecord":
        if not isinstance(data, dict) or data.get("format") != "fs3g-lock":
            raise LockError(f"{where}: not an fs3g lock object")
        try:
            kind = LockKind(data.get("kind"))
            created = str(data["created"])
            datetime.fromisoformat(created)
            pid = data.get("pid")
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise ValueError("pid")
        except (KeyError, ValueError) as e:
            raise LockError(f"{where}: malformed lock ({e})") from None
        return cls(kind, str(data.get("host", ""))[:256], pid, str(data.get("job_id", ""))[:64],
                   str(data.get("run_dir", ""))[:4096], created)

    @classmethod
    def decode(cls, body: bytes, where: str) -> "LockRecord":
        try:
            return cls.from_json(json.loads(body), where)
        except (ValueError, UnicodeDecodeError) as e:
            raise LockError(f"{where}: not JSON ({e})") from None

    def age_hours(self, now: datetime) -> float:
        created = datetime.fromisoformat(self.created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return (now - created).total_seconds() / 3600

    def describe(self) -> str:
        job = f", Slurm job {self.job_id}" if self.job_id else ""
        return f"{self.kind.value} lock held by {self.host} pid {self.pid}{job} since {self.created} ({self.run_dir})"
