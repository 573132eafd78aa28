"""The merge of a restore: every shard's results and failures added up, then the selected directories created and
given their metadata (after every shard, deepest first), then report.json, summary.txt and failures.jsonl."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UsageError
from ..runs.layout import read_json, write_json_atomic
from ..model.records import display_path, read_records
from ..model.sizes import format_size
from ..runs.progress import timing_fields, timing_line
from ..runs.files import RestoreHeader
from ..runs.report import NEVER_REPORTED, describe_failures, read_shard_result
from .destination import Destination, restore_directory
from .layout import RestoreLayout, load_header
from .paths import Refused, Selection
from .task import Outcome

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    run_dir: Path
    data: dict

    @property
    def ok(self) -> bool:
        return (self.data["failed"]["files"] == 0 and self.data["refused"] == 0
                and self.data.get("directories", {}).get("failed", 0) == 0)

    def lines(self) -> list[str]:
        d = self.data
        return [
            f"restore: {self.run_dir} -> {d['destination']}",
            f"  planned   {d['planned']['files']:,} files {format_size(d['planned']['bytes'])}",
            f"  restored  {d['restored']['files']:,} files {format_size(d['restored']['bytes'])} (verified by "
            "SHA-256 tree hash)",
            *([f"  linked    {d['restored']['linked']:,} of them as hard links (bytes counted once)"]
              if d["restored"].get("linked") else []),
            *([f"  layouts   {d['layouts']['packed']['files']:,} from packs ({d['layouts']['packed']['packs']:,} "
               f"packs, {d['layouts']['packed']['gets']:,} ranged GETs, every member checked by SHA-256), "
               f"{d['layouts']['objects']['files']:,} from their own objects"]
              if d.get("layouts", {}).get("packed", {}).get("files") else []),
            *([f"  dirs      {d['directories']['restored']:,} of {d['directories']['planned']:,} directories "
               "(mode, times, empty ones)" + (f", {d['directories']['failed']:,} failed (see failures.jsonl)"
                                              if d["directories"]["failed"] else "")]
              if d.get("directories", {}).get("planned") else []),
            f"  present   {d['already_present']:,} already restored (skipped)",
            *([f"  glacier   {d['stage']['requested']:,} restore requests, {d['stage']['polls']} polls"]
              if d["stage"]["requested"] else []),
            f"  refused   {d['refused']:,}" + (" (see refused.jsonl)" if d["refused"] else ""),
            f"  failed    {d['failed']['files']:,}" + (" (see failures.jsonl)" if d["failed"]["files"] else ""),
            "  shards    " + ", ".join(f"{k} {v}" for k, v in sorted(d["shard_states"].items())),
            timing_line(d),
        ]


@dataclass
class DirectoryTally:
    restored: int = 0
    failed: int = 0


def restore_directories(layout: RestoreLayout, header: RestoreHeader, failures: Any) -> DirectoryTally:
    """Create every selected directory (empty ones included) and put back its mode, times and (as root) owner,
    deepest first, once every file is in place: the files created in a directory change its mtime, so it is set
    last. Walks the destination as the shards do (O_NOFOLLOW, one component at a time): a symlink is never followed.
    Streams directories.rec: memory does not grow with the number of directories."""
    tally = DirectoryTally()
    if not layout.directories_file.is_file():
        return tally
    selection = Selection(header.requests)
    as_root = os.geteuid() == 0
    try:
        dest = Destination(Path(header.destination))
    except OSError as e:
        raise UsageError(f"cannot use the destination: {e.strerror}", path=header.destination) from e
    try:
        for entry in read_records(layout.directories_file):
            try:
                restore_directory(dest, selection.relative(entry.path), entry, as_root)
                tally.restored += 1
            except (Refused, OSError) as e:
                tally.failed += 1
                outcome = Outcome.REFUSED if isinstance(e, Refused) else Outcome.FAILED
                reason = str(e) if isinstance(e, Refused) else f"directory not restored: {e.strerror or e}"
                log.warning("%s: %s: %s", display_path(entry.path), outcome.value, reason)
                failures.write(json.dumps({"path": os.fsdecode(entry.path), "outcome": outcome.value,
                                           "reason": reason}) + "\n")
    finally:
        dest.close()
    return tally


def merge_restore(run_dir: Path) -> RestoreReport:
    layout, header, _policy = load_header(run_dir)
    restored_files = restored_bytes = present = failed = linked = 0
    packed = packs = pack_gets = 0
    states: dict[str, int] = {}
    fail_path = layout.run_dir / "failures.jsonl"
    fd = os.open(fail_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        if layout.refused_file.exists():
            with open(layout.refused_file, encoding="ascii") as f:
                for line in f:
                    item = json.loads(line)
                    out.write(json.dumps({"path": item["path"], "outcome": "refused", "reason": item["reason"]}) + "\n")
        for shard in header.shards:
            index = shard.index
            result = read_shard_result(layout, index)
            state = result.status.value if result else NEVER_REPORTED
            states[state] = states.get(state, 0) + 1
            if result:
                restored_files += result.count("restored")
                restored_bytes += result.count("bytes_restored")
                linked += result.count("linked")
                packed += result.count("packed")
                packs += result.count("packs")
                pack_gets += result.count("pack_gets")
                present += result.count("already_present")
            shard_failed = 0
            if layout.failures(index).exists():
                with open(layout.failures(index), encoding="ascii") as f:
                    for line in f:
                        out.write(line)
                        shard_failed += 1
            # Files a task never reached (killed, never started) are failures too, by count; a rerun finds them.
            done = (result.count("restored") + result.count("already_present")) if result else 0
            failed += max(shard_failed, shard.files - done)
        # Last, once: after every shard's files, so that the directories' mtimes stay as set.
        directories = restore_directories(layout, header, out)
    stage = read_json(layout.stage_state) if layout.stage_state.exists() else {"requested": 0, "polls": 0}
    data = {
        "tool_version": __version__,
        "merged": datetime.now(timezone.utc).isoformat(),
        "lab": header.lab,
        "run_dir": str(layout.run_dir),
        "destination": header.destination,
        "source": header.source,
        "planned": header.details["planned"],  # as written (a Count would drop any other key)
        "restored": {"files": restored_files, "bytes": restored_bytes, "linked": linked},
        # By layout: read from packs (the packs read, a pack read by two shards counts twice; the ranged GETs), or
        # per-object (their own objects; hard links made from either count here as linked).
        "layouts": {"packed": {"files": packed, "packs": packs, "gets": pack_gets},
                    "objects": {"files": restored_files - packed - linked}},
        "directories": {"planned": header.directories, "restored": directories.restored,
                        "failed": directories.failed},
        "already_present": present,
        "refused": header.refused,
        "failed": {"files": failed},
        "failures_file": fail_path.name,
        "stage": {"requested": stage.get("requested", 0), "polls": stage.get("polls", 0),
                  "verdict": stage.get("verdict")},
        "shard_states": states,
        # Elapsed from the restore's selection (a Glacier wait included); throughput of what was restored.
        **timing_fields(layout, header.shard_count, header.created, restored_files, restored_bytes),
    }
    write_json_atomic(layout.report_file, data)
    report = RestoreReport(layout.run_dir, data)
    text_fd = os.open(layout.run_dir / "summary.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(text_fd, "w", encoding="utf-8") as f:
        f.write("\n".join(report.lines()) + "\n")
    return report


def merge_and_report(run_dir: Path) -> RestoreReport:
    """The merge with its report printed (what `fs3g restore-merge` and a local restore's last step show): the
    report's lines, then, when something is missing, the first failures and how to finish."""
    report = merge_restore(run_dir)
    print("\n".join(report.lines()))
    if not report.ok:
        print("\n".join(describe_failures(report.run_dir, more=True)))
        print("  to finish: fix what is listed, then run the same `fs3g restore` again: it skips files already "
              "restored and verified")
    return report
