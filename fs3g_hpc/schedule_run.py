"""A lab's backup schedule on the cluster: `fs3g schedule install|list|remove|fire`. The rules (due times, scrontab
blocks) are schedule.py's, pure; the Slurm commands are slurm/'s; this joins them.

Where scrontab exists (and the chain is not asked for), a cron schedule is a scrontab block of the lab's. Otherwise
it is a self-renewing chain: one job pending with --begin until the next due time, which fires: submits its
successor first, so a failing backup never ends the chain, then runs the backup. One chain per lab (installing
again replaces it). The chain's state is `<run_root>/<lab>/schedule/state.json`: the schedule, the config, the next
link's job and due time, when it last fired and the backup's exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, TextIO

from .config import Policy, load_policy
from .errors import UsageError
from .runs.executor import fs3g_argv
from .runs.layout import ensure_private_dir, lab_dir, read_json, write_json_atomic
from .schedule import Schedule, replace_block, scrontab_lines


@dataclass(frozen=True)
class LabSchedule:
    """A lab's schedule: its policy, the config's absolute path (the chain's jobs read it from the shared
    filesystem), and whether it lives in scrontab."""

    policy: Policy
    config: Path
    use_scrontab: bool

    @property
    def job_name(self) -> str:
        from .slurm.jobs import schedule_job_name

        return schedule_job_name(self.policy)

    @property
    def state_dir(self) -> Path:
        return lab_dir(self.policy) / "schedule"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


def lab_schedule(config: Path, *, chain: bool) -> LabSchedule:
    """The schedule of the lab policy `config`; with `chain`, the job chain even where scrontab exists."""
    from .slurm import commands

    config = config.absolute()
    return LabSchedule(load_policy(config), config, commands.scrontab_available() and not chain)


def backup_arguments(lab: LabSchedule) -> list[str]:
    """The fs3g arguments of a scheduled backup (`fire` runs them in its own process, scrontab as a command)."""
    return ["backup", "--config", str(lab.config), "--executor", "slurm"]


def list_schedule(lab: LabSchedule) -> list[str]:
    """The queued links, the lab's scrontab block, and the last firing."""
    from .slurm import commands

    lines = []
    jobs = commands.queued_jobs(lab.job_name)
    lines += [f"{lab.job_name}: job {job.job_id} {job.state}, begins {job.begins}" for job in jobs]
    if lab.use_scrontab:
        block = [line for line in commands.read_scrontab().splitlines() if lab.policy.lab.name in line or
                 line.startswith("#SCRON")]
        lines.append("\n".join(block) or "no scrontab entries")
    if not jobs and not lab.use_scrontab:
        lines.append(f"no schedule installed for lab {lab.policy.lab.name}")
    if lab.state_file.exists():
        last = read_json(lab.state_file)
        lines.append(f"schedule {last.get('schedule')!r}; last fired {last.get('last_fired', 'never')}"
                     + (f", backup exit {last['last_exit']}" if "last_exit" in last else ""))
    return lines


def remove_schedule(lab: LabSchedule) -> str:
    """Cancel the queued links, drop the lab's scrontab block and the chain's state."""
    from .slurm import commands

    jobs = commands.queued_jobs(lab.job_name)
    commands.cancel([j.job_id for j in jobs])
    if lab.use_scrontab:
        commands.write_scrontab(replace_block(commands.read_scrontab(), lab.policy.lab.name, []), lab_dir(lab.policy))
    lab.state_file.unlink(missing_ok=True)
    return f"removed the schedule of lab {lab.policy.lab.name} ({len(jobs)} queued job(s) cancelled)"


def _next_due(lab: LabSchedule) -> tuple[Schedule, datetime, datetime]:
    """The policy's schedule, now, and its next due time (a UsageError when the policy has none)."""
    if lab.policy.schedule.backup is None:
        raise UsageError("no schedule in the policy", path=str(lab.config), key="schedule.backup",
                         hint="set schedule.backup, e.g. \"0 2 * * *\" or \"every 12h\"")
    schedule = Schedule.parse(lab.policy.schedule.backup)
    ensure_private_dir(lab_dir(lab.policy))
    now = datetime.now().astimezone()
    return schedule, now, schedule.next_after(now)


def install_schedule(lab: LabSchedule, config_text: str) -> str:
    """The scrontab block, or the chain's first link (replacing a queued chain); `config_text` as the user gave it,
    for the line that says how to list it."""
    from .slurm import commands
    from .slurm.submit import submit_schedule_link

    schedule, _now, due = _next_due(lab)
    name, policy = lab.job_name, lab.policy
    if lab.use_scrontab and schedule.interval_s is None:
        command = [*fs3g_argv(), *backup_arguments(lab)]
        block = scrontab_lines(policy.lab.name, schedule, command, [f"--job-name={name}"])
        commands.write_scrontab(replace_block(commands.read_scrontab(), policy.lab.name, block), lab_dir(policy))
        return f"scrontab: lab {policy.lab.name} backs up at {schedule.text!r}; next {due:%Y-%m-%d %H:%M}"
    old = commands.queued_jobs(name)
    commands.cancel([j.job_id for j in old])  # one chain per lab: installing again replaces it
    job = submit_schedule_link(policy, lab.config, lab.state_dir, fs3g_argv(), due)
    write_json_atomic(lab.state_file, {"schedule": schedule.text, "config": str(lab.config), "next_job": job,
                                       "next_due": due.isoformat()})
    return (f"scheduled: job {job} ({name}) begins {due:%Y-%m-%d %H:%M:%S}, then renews itself; "
            f"see `fs3g schedule list --config {config_text}`" + (f" (replaced {len(old)} queued)" if old else ""))


def fire_link(lab: LabSchedule, backup: Callable[[], int], out: TextIO) -> int:
    """The chain's link that is due now: the successor is submitted first, so a failing backup never ends the chain;
    then `backup()` runs (in this process) and its exit code is recorded in state.json and returned."""
    from .slurm.submit import submit_schedule_link

    schedule, now, due = _next_due(lab)
    job = submit_schedule_link(lab.policy, lab.config, lab.state_dir, fs3g_argv(), due)
    state = (read_json(lab.state_file) if lab.state_file.exists()
             else {"schedule": schedule.text, "config": str(lab.config)})
    state.update(next_job=job, next_due=due.isoformat(), last_fired=now.isoformat())
    write_json_atomic(lab.state_file, state)
    print(f"next link: job {job} at {due:%Y-%m-%d %H:%M:%S}; now backing up lab {lab.policy.lab.name}", file=out,
          flush=True)
    code = backup()
    state["last_exit"] = code
    write_json_atomic(lab.state_file, state)
    return code
