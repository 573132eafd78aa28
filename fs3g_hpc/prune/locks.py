"""Taking, checking and removing the lab's lock objects (format and keys: model/locks.py): the one home of the rule
"prune and backups never run together", both ways.

Backups write `locks/backup.json` at submit and their last merge removes it; prune refuses while one exists (stale
after `retention.backup_lock_stale_hours`: the message says so and how to break it). `fs3g prune --apply` holds
`locks/prune.json` from its planning pass to its merge; `fs3g backup`, `fs3g submit` and `fasts3plusglacier --backup`
refuse to start while it exists (exit 2, one line naming the lock key, its holder's host, pid, Slurm job and time,
and how to resume or break it). `take_exclusive` writes one's own lock, then reads the other's once more: two that
start together may both refuse, never both run (S3 reads its own writes). A lock that cannot be written stops the
backup submit (the bucket is unreachable then anyway); one that cannot be removed is logged.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from typing import Any

from ..config import Policy
from ..errors import Fs3gError
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


def check_no_prune(policy: Policy, client: Any, now: datetime | None = None) -> None:
    """Raise LockError (exit 2) while a prune of the lab holds its lock (or the lock is unreadable)."""
    now = now or datetime.now(timezone.utc)
    where = f"s3://{policy.s3.bucket}/{lock_key(policy.s3.prefix, LockKind.PRUNE)}"
    try:
        record = read_lock(policy, client, LockKind.PRUNE)
    except LockError as e:
        raise LockError(f"{e.message}; a backup will not run beside a prune it cannot identify",
                        hint="fs3g prune --config C --break-lock removes it") from None
    if record is None:
        return
    raise LockError(f"a prune holds {where}: {record.describe()}, {record.age_hours(now):.1f} h ago; the backup "
                    "does not start while prune deletes",
                    hint="wait for it; if it was killed, `fs3g prune --config C --apply` resumes and finishes it; if "
                         "it is gone for good (squeue, its run directory), `fs3g prune --config C --break-lock`")


OTHER = {LockKind.BACKUP: LockKind.PRUNE, LockKind.PRUNE: LockKind.BACKUP}


def check_other(policy: Policy, client: Any, kind: LockKind, now: datetime) -> None:
    """The lock that keeps `kind` from running: a prune's for a backup, a backup's for a prune."""
    (check_no_prune if kind is LockKind.BACKUP else check_no_backup)(policy, client, now)


def take_exclusive(policy: Policy, client: Any, kind: LockKind, run_dir: str, *,
                   now: datetime | None = None) -> LockRecord:
    """Check the other operation's lock, write ours, then check the other's again: when it appeared meanwhile, ours
    is removed and the LockError raised (both may refuse; never both run)."""
    now = now or datetime.now(timezone.utc)
    check_other(policy, client, kind, now)
    record = take_lock(policy, client, kind, run_dir, now=now)
    try:
        check_other(policy, client, kind, now)
    except LockError:
        release_lock(policy, client, kind)
        raise
    return record


class LockLostError(Fs3gError):
    """locks/prune.json no longer names the run deleting: someone broke it, and a backup may be running."""


def check_holds(policy: Policy, client: Any, run_dir: str) -> None:
    """Raise LockLostError unless locks/prune.json names `run_dir` (checked before every delete batch)."""
    record = read_lock(policy, client, LockKind.PRUNE)
    if record is None or record.run_dir != run_dir:
        held = record.describe() if record else "it is gone"
        raise LockLostError(f"locks/prune.json no longer names {run_dir} ({held}): stopping before the next batch",
                            hint="check that no backup runs, then `fs3g prune --config C --apply` again (it plans "
                                 "afresh)")


def release_if_ours(policy: Policy, client: Any, run_dir: str) -> None:
    """Remove locks/prune.json when it names `run_dir` (a merge rerun never removes a newer prune's lock)."""
    record = read_lock(policy, client, LockKind.PRUNE)
    if record is not None and record.run_dir == run_dir:
        release_lock(policy, client, LockKind.PRUNE)
