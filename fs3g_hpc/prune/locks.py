"""Taking, checking and removing the lab's lock objects (format and keys: model/locks.py).

Backups write `locks/backup.json` at submit and their last merge removes it; prune refuses while one exists (stale
after `retention.backup_lock_stale_hours`: the message says so and how to break it). A lock that cannot be written
stops the backup submit (the bucket is unreachable then anyway); one that cannot be removed is logged.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from typing import Any

from ..config import Policy
from ..model.locks import LockError, LockKind, LockRecord, lock_key

log = logging.getLogger(__name__)


def take_lock(policy: Policy, client: Any, kind: LockKind, run_dir: str, *, now: datetime | None = None) -> LockRecord:
    from ..transfer.prune import put_lock

    now = now or datetime.now(timezone.utc)
    record = LockRecord(kind, socket.gethostname(), os.getpid(), os.environ.get("SLURM_JOB_ID", ""), run_dir,
                        now.isoformat(timespec="seconds"))
    put_lock(client, policy.s3.bucket, lock_key(policy.s3.prefix, kind), record.encode())
    return record


def read_lock(policy: Policy, client: Any, kind: LockKind) -> LockRecord | None:
    from ..transfer.prune import get_lock

    key = lock_key(policy.s3.prefix, kind)
    body = get_lock(client, policy.s3.bucket, key)
    return None if body is None else LockRecord.decode(body, f"s3://{policy.s3.bucket}/{key}")


def release_lock(policy: Policy, client: Any, kind: LockKind) -> None:
    from ..transfer.prune import delete_lock

    delete_lock(client, policy.s3.bucket, lock_key(policy.s3.prefix, kind))


def check_no_backup(policy: Policy, client: Any, now: datetime) -> None:
    """Raise LockError (exit 2) while a backup of the lab holds its lock (or the lock is unreadable)."""
    where = f"s3://{policy.s3.bucket}/{lock_key(policy.s3.prefix, LockKind.BACKUP)}"
    try:
        record = read_lock(policy, client, LockKind.BACKUP)
    except LockError as e:
        raise LockError(f"{e.message}; prune will not run beside a backup it cannot identify",
                        hint="fs3g prune --config C --break-lock removes it") from None
    if record is None:
        return
    age = record.age_hours(now)
    limit = policy.retention.backup_lock_stale_hours
    if age < limit:
        raise LockError(f"a backup is running: {record.describe()} ({where}); prune waits until its merge ends",
                        hint=f"the lock is stale after retention.backup_lock_stale_hours ({limit} h); if the backup "
                             "is gone, `fs3g prune --config C --break-lock` removes it")
    raise LockError(f"a stale backup lock ({age:.0f} h old, limit {limit} h): {record.describe()} ({where})",
                    hint="check the job is gone (squeue, the run's status), then `fs3g prune --config C --break-lock`")
