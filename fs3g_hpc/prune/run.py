"""`fs3g prune --config C [--apply] [--allow-early-delete] [--executor local|slurm|auto] [--wait] [--json]`:
retention applied to the bucket, as a sharded run on the run core (runs/executor.py), like backup and compare.

    1. the planning pass (prune/plan.py `planning_pass`, in this process): snapshots decided, their references
       spilled and sorted, the data key space cut into key-range shards, the run directory written (prune.json last)
    2. the delete pass (`delete_pass`: an array of `fs3g prune-shard RUN_DIR`, prune/task.py): each task joins its
       range's listing with its references, writes its delete list, then deletes it in journaled batches
    3. the merge (`fs3g prune-merge RUN_DIR`, prune/merge.py): the tallies priced, the forgotten snapshots' chunks
       then manifests deleted, the lock released, report.json and summary.txt

Before 1, when `storage.pack_compact_below` > 0, pack compaction (prune/compact.py, under the prune lock with
`--apply`): packs below it are rewritten and a snapshot superseding the newest published, so that the planning pass
forgets the superseded one (model/retention.decide_snapshots) and its shards delete the old packs like any
unreferenced object (one deletion path). A resumed run does not compact; the next prune does.

The dry run (no --apply) is the same run with nothing deleted, in a hidden run directory that is removed once it has
reported; it always waits. `--apply` takes `locks/prune.json` (prune/locks.take_exclusive: refused while a backup
holds its lock) before the planning pass and keeps it until the merge has finished the run; backups refuse to start
meanwhile. After kill -9 (of this process, a task or the merge), `fs3g prune --apply` again resumes the run the lock
names, when its holder is gone (this host's pid no longer alive and, for a Slurm run, its merge job ended) and no
newer snapshot exists: every shard reruns, skipping the batches its journal holds, then the merge. A lock held by a
live prune, or by another host, is refused (exit 2) naming the holder and how to break it (`--break-lock`).

Safety (unchanged): never a key the newest snapshot references (the join, and the hard check before every batch),
never an object newer than the newest snapshot, never one inside its class's minimum duration without
--allow-early-delete, the lists written before any delete, snapshot manifests last. Memory: the planning pass's
(one spill run of keys) and a task's (one listing page, one batch), whatever the bucket's size.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..config import Policy
from ..config.pricing import Prices
from ..errors import Fs3gError, UsageError
from ..model.locks import LockError, LockKind, LockRecord, lock_key
from ..model.snapshots import is_snapshot_id
from ..runs.executor import Executor, RunSpec, choose_executor, fs3g_argv, resolve
from ..runs.files import PruneHeader
from ..runs.layout import default_run_dir, ensure_private_dir, lab_dir, make_private_dir
from .batches import NewestGuard, ReferencedKeyError
from .files import PruneLayout, PrunePlan, decisions_from_json
from .merge import PruneResult, PruneVerdict, merge_prune, read_result
from .plan import DATA_DIRS, KeySpill, all_manifests, decide_snapshots, entry_keys, nothing_to_list, planning_pass

__all__ = ["DATA_DIRS", "KeySpill", "NewestGuard", "PrunePlan", "PruneResult", "PruneVerdict", "ReferencedKeyError",
           "break_lock", "entry_keys", "prune"]

RESUME = "the same `fs3g prune --config C --apply` again (each shard skips the batches its journal holds)"


@dataclass(frozen=True)
class PreparedPrune:
    """A prune whose planning pass is done: its run directory, header and policy."""

    layout: PruneLayout
    header: PruneHeader
    policy: Policy
    resumed: bool = False

    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir


def _holder_gone(record: LockRecord, layout: PruneLayout) -> bool:
    """Whether the prune that holds the lock has ended: its merge job (a Slurm run) finished, and its process (this
    host's) no longer alive. Another host's process cannot be judged from here: not gone."""
    from ..runs.layout import read_json

    if layout.submitted_file.exists():
        from ..slurm import commands

        merge_id = str(read_json(layout.submitted_file).get("merge", ""))
        if not commands.slurm_available():
            return False
        records = [r for r in commands.accounting([merge_id]) if r.job_id == merge_id]
        if not records or not records[0].state.finished:
            return False
    if record.host != socket.gethostname():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return record.pid == os.getpid()


def _resumable(policy: Policy, client: Any, record: LockRecord) -> PreparedPrune | None:
    """The unfinished run the prune lock names, when it may be resumed; LockError when the lock is another's."""
    from ..snapshots.store import snapshot_ids
    from .task import load_prune

    where = f"s3://{policy.s3.bucket}/{lock_key(policy.s3.prefix, LockKind.PRUNE)}"
    run_dir = Path(record.run_dir)
    layout = PruneLayout(run_dir)
    hint = ("if that prune is gone for good, `fs3g prune --config C --break-lock` removes the lock, then prune "
            "again (it plans afresh)")
    if not layout.header_file.is_file():
        if run_dir.is_dir() and _holder_gone(record, layout):
            return None  # killed before its planning pass ended (during compaction): nothing to resume, plan afresh
        raise LockError(f"a prune holds the lock ({record.describe()}) and its run directory is not here ({where})",
                        hint=hint)
    layout, header, snapshot_policy = load_prune(run_dir)
    if header.lab != policy.lab.name or header.bucket != policy.s3.bucket or header.prefix != policy.s3.prefix:
        raise LockError(f"the prune lock names {run_dir}, a run of another lab or bucket", hint=hint)
    if layout.report_file.exists() and read_result(run_dir).complete:
        return None  # finished; only its lock was left (released below by the new run's own)
    if not _holder_gone(record, layout):
        raise LockError(f"a prune is running: {record.describe()}; it holds the lab's prune lock", hint=hint)
    ids = [s for s in snapshot_ids(policy, client) if is_snapshot_id(s)]
    if ids and max(ids) > header.newest:
        raise LockError(f"{run_dir} was planned before snapshot {max(ids)}: it cannot be resumed", hint=hint)
    return PreparedPrune(layout, header, snapshot_policy, resumed=True)


def planning(policy: Policy, client: Any, *, now: datetime, apply: bool, allow_early_delete: bool,
             prices: Prices | None, batch_keys: int, run_dir: Path | None = None, include_archived: bool = False,
             after_compact_step: Callable[[Any], None] | None = None
             ) -> tuple[PreparedPrune | None, PrunePlan, Any]:
    """The planning pass's entry point: locks checked (and with `apply` taken, or the unfinished run resumed), pack
    compaction (prune/compact.py; its result third, None when off or resumed), the snapshots decided, the run
    directory prepared. None (and the plan) when there is nothing to list."""
    from .compact import compact
    from .locks import check_no_backup, read_lock, release_lock, take_exclusive

    check_no_backup(policy, client, now)
    if apply:
        record = read_lock(policy, client, LockKind.PRUNE)
        if record is not None:
            resumed = _resumable(policy, client, record)
            if resumed is not None:
                take_exclusive(policy, client, LockKind.PRUNE, str(resumed.run_dir), now=now)
                return resumed, PrunePlan(policy.s3.bucket, policy.s3.prefix,
                                          decisions_from_json(resumed.header.details["snapshots"], "prune.json")), None
    lab = lab_dir(policy)
    ensure_private_dir(lab)
    if apply:  # made here, empty (make_private_dir refuses another's): compaction's files and the plan's go in it
        run_dir = make_private_dir(run_dir or default_run_dir(policy, now, "prune"))
    else:
        run_dir = run_dir or Path(tempfile.mkdtemp(prefix=".prune-dry-", dir=lab)) / "run"
    work = Path(tempfile.mkdtemp(prefix=".prune-", dir=lab))
    locked = False
    try:
        compaction = None
        if policy.storage.pack_compact_below > 0:
            if apply:  # compaction writes its plan and journal into the run directory, under the lock
                take_exclusive(policy, client, LockKind.PRUNE, str(run_dir), now=now)
                locked = True
            compaction = compact(policy, client, work, prices, apply=apply, include_archived=include_archived,
                                 run_dir=run_dir if apply else None, now=now, after_step=after_compact_step)
        manifests, _unfinished = all_manifests(policy, client, work)
        decisions = decide_snapshots(policy, manifests, now)
        plan = PrunePlan(policy.s3.bucket, policy.s3.prefix, decisions, prices.currency if prices else "")
        if nothing_to_list(policy, decisions):
            if locked:
                release_lock(policy, client, LockKind.PRUNE)
                locked = False
            if not apply:
                shutil.rmtree(run_dir.parent, ignore_errors=True)
            elif not any(run_dir.iterdir()):
                run_dir.rmdir()  # nothing compacted, nothing to list: no run directory left behind
            return None, plan, compaction
        if apply and not locked:
            take_exclusive(policy, client, LockKind.PRUNE, str(run_dir), now=now)
            locked = True
        layout, header = planning_pass(policy, client, run_dir, work, now=now, apply=apply,
                                       allow_early_delete=allow_early_delete, prices=prices, batch_keys=batch_keys,
                                       manifests=manifests, decisions=decisions)
        return PreparedPrune(layout, header, policy), plan, compaction
    except BaseException:
        if locked:
            release_lock(policy, client, LockKind.PRUNE)
        if not apply:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spec(prepared: PreparedPrune, fs3g: Sequence[str], merged: list[PruneResult],
          client_factory: Callable[[Policy], Any] | None) -> RunSpec:
    from ..slurm.submit import submit_prune

    def merge() -> int:
        merged.append(merge_prune(prepared.run_dir, client_factory=client_factory))
        return 0 if merged[-1].ok else 1

    return RunSpec(prepared.run_dir, prepared.header.shards, "prune-shard", merge=merge,
                   submit=lambda argv: submit_prune(prepared.policy, prepared.run_dir, prepared.header.shard_count,
                                                    argv),
                   label="prune", resume=RESUME, fs3g=fs3g)


def delete_pass(prepared: PreparedPrune, executor: Executor, *, wait: bool, out: TextIO,
                fs3g: Sequence[str] = (), client_factory: Callable[[Policy], Any] | None = None
                ) -> PruneResult | None:
    """The delete pass's entry point: the shards on `executor`, then the merge; its result (None when submitted to
    Slurm without `wait`, the merge job finishing the run, or when a signal stopped the local run first)."""
    merged: list[PruneResult] = []
    spec = _spec(prepared, list(fs3g) or fs3g_argv(), merged, client_factory)
    outcome = choose_executor(executor).run(spec, wait=wait)
    if outcome.submitted is not None:
        out.write(f"submitted: arrays {', '.join(outcome.submitted.array_ids) or '(none)'}; merge "
                  f"{outcome.submitted.merge_id} (afterany); report in {prepared.layout.report_file}\n")
        if not wait:
            return None
        if not prepared.layout.report_file.exists():
            raise Fs3gError(f"prune merge job {outcome.submitted.merge_id} ended "
                            f"{outcome.merge_state.value if outcome.merge_state else '?'} without a report",
                            hint=f"see {prepared.layout.logs_dir}; then {RESUME}")
        return read_result(prepared.run_dir)
    if merged:
        return merged[-1]
    return None  # stopped by a signal before the merge (run_here said how to resume)


def prune(policy: Policy, *, apply: bool = False, allow_early_delete: bool = False, prices: Prices | None = None,
          client_factory: Callable[[Policy], Any] | None = None, now: datetime | None = None,
          batch_keys: int = 1000, executor: Executor = Executor.LOCAL, wait: bool = True,
          out: TextIO | None = None, fs3g: Sequence[str] = (), include_archived: bool = False,
          after_compact_step: Callable[[Any], None] | None = None) -> PruneResult:
    """The dry run, or with `apply` the deletion (see the module docstring), after pack compaction
    (`include_archived` lets it compact packs in archive classes). `now`, `batch_keys` and `after_compact_step` are
    seams (the clock the run decides with, the DeleteObjects batch size, a hook after each compaction journal line). Without `wait` on Slurm, the result holds the plan of
    the snapshots only (the merge job writes the rest to report.json)."""
    from ..snapshots.baseline import default_client

    now = now or datetime.now(timezone.utc)
    out = out or sys.stderr
    client = (client_factory or default_client)(policy)
    if not 1 <= batch_keys <= 1000:
        raise UsageError(f"--batch-keys {batch_keys}: must be from 1 to 1000 (S3's most keys per DeleteObjects)")
    chosen = resolve(executor)
    prepared, plan, compaction = planning(policy, client, now=now, apply=apply, allow_early_delete=allow_early_delete,
                                          prices=prices, batch_keys=batch_keys, include_archived=include_archived,
                                          after_compact_step=after_compact_step)
    if prepared is None:
        return PruneResult(plan, compaction=compaction)
    if prepared.resumed:
        out.write(f"resuming {prepared.run_dir} (its holder is gone): every shard skips its batches done\n")
    try:
        result = delete_pass(prepared, chosen, wait=wait or not apply, out=out, fs3g=fs3g,
                             client_factory=client_factory)
    finally:
        if not apply:
            shutil.rmtree(prepared.run_dir.parent, ignore_errors=True)
    if result is None:
        stopped = PruneVerdict.INTERRUPTED if resolve(executor) is Executor.LOCAL else PruneVerdict.SUBMITTED
        return PruneResult(plan, prepared.run_dir, complete=False, stopped=stopped, compaction=compaction)
    if not apply:
        result.run_dir = None
    result.compaction = compaction
    return result


def break_lock(policy: Policy, *, client_factory: Callable[[Policy], Any] | None = None) -> str:
    """`fs3g prune --break-lock`: remove the backup lock (and a prune lock left by a killed prune)."""
    from ..snapshots.baseline import default_client
    from .locks import read_lock, release_lock

    client = (client_factory or default_client)(policy)
    said = []
    for kind in (LockKind.BACKUP, LockKind.PRUNE):
        try:
            record = read_lock(policy, client, kind)
        except UsageError as e:
            said.append(f"removed an unreadable {kind.value} lock ({e.message})")
            release_lock(policy, client, kind)
            continue
        if record is not None:
            release_lock(policy, client, kind)
            said.append(f"removed: {record.describe()}")
    return "\n".join(said) or "no lock to break"
