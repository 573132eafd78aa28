#!/usr/bin/env python3
"""Walk benchmark: plan a synthetic research tree with fs3g, side by side with find and fpart.

    python3 benchmarks/bench_walk.py [--files 1000000] [--root benchmarks/data/tree-1m] [--repeats 5] [--empty]
                                     [--fs3g "python3 -m fs3g_hpc"] [--no-fs3g] [--fs3g-cmd "..."]

The tree is made (or reused) by gen_tree.py. The untimed warm-up round runs find first, so every timed run sees a
warm dentry/inode cache: this measures the walkers' CPU and syscall cost, not the disk.

Commands compared:
- find:  find ROOT -printf '%s %T@ %p\\n'      (stdout to /dev/null; lstat of every entry, like a backup scan)
- fpart: fpart -f 10000 -o RUN_DIR/part ROOT  (partitions of 10,000 files, written to a fresh temp dir per run;
         fpart writes TEMPLATE.1, TEMPLATE.2, ... so `-o /dev/null` would create /dev/null.1 etc.; no -l, which
         is fpart's "follow symlinks" (-L is live mode))
- fs3g-plan:   `fs3g plan --full` of a lab policy whose only root is the tree (a whole plan: walk, sort, shards)
- fs3g-replan: `fs3g plan` with the lab's catalog present and nothing changed (walk + streaming diff); the
               catalog is made once, untimed, from a first plan
- fs3g:  --fs3g-cmd, split with shlex (no shell); `{root}` and `{run_dir}` are replaced in every argument,
         run_dir being a fresh empty temp dir per run, removed after it.

Results: benchmarks/results/walk-latest.md and .json (with fs3g/find and fs3g/fpart ratios when fs3g ran).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # allow `import bench_walk` from elsewhere, not only running it as a script
    sys.path.insert(0, str(HERE))

from gen_tree import generate_tree  # noqa: E402
from harness import SetupHook, fill, log, ratios, run_alternating, size_tag, write_report  # noqa: E402

FIND_FORMAT = "%s %T@ %p\\n"  # find itself expands \n


def default_root(n_files: int, empty: bool = False) -> Path:
    # Named after the size so that a small test run never replaces the million-file tree.
    return HERE / "data" / (f"tree-{size_tag(n_files)}" + ("-empty" if empty else ""))


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding path (longest mount-point prefix in /proc/self/mounts)."""
    best, kind = "", "unknown"
    p = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fields[2]
    return kind


def temp_run_dir_hook(tmp_parent: Path | None, root: Path) -> SetupHook:
    """Setup hook: a fresh empty directory per run, substituted for {run_dir} (and {root}), removed after."""

    @contextlib.contextmanager
    def hook(argv: list[str]) -> Iterator[list[str]]:
        run_dir = Path(tempfile.mkdtemp(prefix="fs3g-bench-walk-", dir=tmp_parent))
        try:
            yield fill(argv, {"root": str(root), "run_dir": str(run_dir)})
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    return hook


def prepare_fs3g_lab(fs3g: list[str], lab_dir: Path, root: Path) -> Path:
    """A lab policy for the tree, and its catalog from one untimed plan, so that a re-plan has something to diff."""
    policy = lab_dir / "lab.yaml"
    policy.write_text(f"lab: {{name: bench}}\nroots: [{json.dumps(str(root))}]\n"
                      f"s3: {{bucket: fs3g-bench}}\nrun_root: {json.dumps(str(lab_dir / 'runs'))}\n")
    first = lab_dir / "first-plan"
    subprocess.run([*fs3g, "plan", "--config", str(policy), "--run-dir", str(first)], check=True,
                   stdout=subprocess.DEVNULL)
    # What a successful merge does: every planned entry becomes the catalog.
    code = ("import sys, tempfile; from pathlib import Path; from fs3g_hpc.config import load_policy; "
            "from fs3g_hpc.backup.catalog import update_catalog; from fs3g_hpc.runs.catalog import catalog_path; "
            "from fs3g_hpc.runs.layout import RunLayout; "
            "p = load_policy(sys.argv[1]); w = tempfile.mkdtemp(); "
            "print(update_catalog(None, RunLayout(Path(sys.argv[2])), catalog_path(p), Path(w)))")
    python = fs3g[0] if fs3g[1:2] == ["-m"] else sys.executable
    subprocess.run([python, "-c", code, str(policy), str(first)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(first)
    return policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000, help="entries in the tree (default 1000000)")
    ap.add_argument("--root", type=Path, help="tree location (default benchmarks/data/tree-<size>)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--empty", action="store_true",
                    help="a tree of empty files (gen_tree --empty; default root tree-<size>-empty): the planner's "
                         "memory at millions of entries without gigabytes of data")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (find runs first: warms the cache)")
    ap.add_argument("--fpart-files", type=int, default=10_000, help="fpart -f: files per partition")
    ap.add_argument("--fs3g", default=f"{shlex.quote(sys.executable)} -m fs3g_hpc",
                    help="how to run fs3g (default: this Python with -m fs3g_hpc)")
    ap.add_argument("--no-fs3g", action="store_true", help="time find and fpart only")
    ap.add_argument("--fs3g-cmd", help="one more command: argv string (shlex, no shell) with {root} and {run_dir}")
    ap.add_argument("--tmp-dir", type=Path, help="parent of the per-run temp dirs (default: system temp)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "walk-latest",
                    help="report path without suffix; .md and .json are written")
    ap.add_argument("--replace-tree", action="store_true", help="regenerate a tree made with other parameters")
    ap.add_argument("--note", default="", help="free text added to the machine description")
    args = ap.parse_args(argv)

    for tool in ("find", "fpart"):
        if shutil.which(tool) is None:
            hint = " (apt-get install -y --no-install-recommends fpart)" if tool == "fpart" else ""
            log(f"{tool} not found{hint}")
            return 2
    root = (args.root or default_root(args.files, args.empty)).resolve()
    try:
        tree = generate_tree(root, args.files, args.seed, replace=args.replace_tree, empty=args.empty)
    except FileExistsError as e:
        log(str(e))
        return 2
    how = "reused" if tree["reused"] else f"generated in {tree['generation_seconds']} s"
    log(f"tree {root}: {tree['entries']:,} entries, {tree['total_bytes'] / 1e9:.2f} GB ({how})")

    hook = temp_run_dir_hook(args.tmp_dir, root)
    commands: dict[str, list[str]] = {
        "find": ["find", str(root), "-printf", FIND_FORMAT],
        "fpart": ["fpart", "-f", str(args.fpart_files), "-o", "{run_dir}/part", str(root)],
    }
    setup: dict[str, SetupHook] = {"fpart": hook}
    with contextlib.ExitStack() as stack:
        if not args.no_fs3g:
            fs3g = shlex.split(args.fs3g)
            lab_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fs3g-bench-lab-")))
            policy = prepare_fs3g_lab(fs3g, lab_dir, root)
            commands["fs3g-plan"] = [*fs3g, "plan", "--config", str(policy), "--run-dir", "{run_dir}/run", "--full"]
            commands["fs3g-replan"] = [*fs3g, "plan", "--config", str(policy), "--run-dir", "{run_dir}/run"]
            setup["fs3g-plan"] = setup["fs3g-replan"] = hook
        if args.fs3g_cmd:
            commands["fs3g"] = shlex.split(args.fs3g_cmd)
            setup["fs3g"] = hook
        results = run_alternating(commands, repeats=args.repeats, warmup=args.warmup, setup=setup)
    pairs = [(ours, peer) for ours in ("fs3g-plan", "fs3g-replan", "fs3g") if ours in commands
             for peer in ("find", "fpart")]
    ratio_list = [ratios(results, ours, peer) for ours, peer in pairs]

    note = (f"Tree: {root} on {fs_type(root)}, {tree['entries']:,} entries "
            f"({tree['regular_files']:,} files, {tree['symlinks']:,} symlinks, {tree['hardlinks']:,} extra hard links) "
            f"in {tree['directories']:,} directories, {tree['total_bytes']:,} bytes"
            f"{' (every file empty)' if tree.get('empty') else ''}; generator v{tree['version']} "
            f"seed {tree['seed']}. Page cache warm (untimed warm-up round, find first).")
    if args.note:
        note += " " + args.note
    md = write_report(results, f"{args.results}.md", f"{args.results}.json",
                      f"Walk benchmark: {tree['entries']:,}-entry tree", note, ratio_list=ratio_list,
                      extra={"tree": tree})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
