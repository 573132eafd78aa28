#!/usr/bin/env python3
"""Seeded generator of a synthetic research tree for the fs3g benchmarks.

Shape (like a lab's project area):

    ROOT/project_007_imaging/alice_02/exp_013/run_004/img_00042.tif
         level 1             level 2  level 3 level 4 (leaf: 50–500 entries)

Entry mix: ~99.4 % regular files, ~0.5 % symlinks (to a sibling file, a sibling directory, or dangling),
~0.1 % extra hard links to a regular file of the same leaf. A few names hold spaces or non-ASCII characters.

File sizes (apparent): 2 % empty, 92 % log-uniform 16 B–8 KiB, 4 % bounded Pareto 8–128 KiB, 2 % bounded Pareto
128 KiB–4 MiB. The large share is 2 % rather than 3 % on purpose: 3 % of 1,000,000 files at >= 128 KiB is
already 3.9 GB before the tail, which would break the ~6 GB budget; this mix gives ~5.9 GB per million files.

Generation is deterministic for (n_files, seed, VERSION): names, sizes, contents and mtimes all come from
random.Random seeded with strings (stable across runs and PYTHONHASHSEED). A marker file
ROOT/.fs3g-bench-tree.json records the parameters; a second call with the same parameters returns at once.

    python3 benchmarks/gen_tree.py ROOT --files N --seed S [--empty]

With --empty every regular file is created empty (same names, links, mtimes and layout; no data written): a tree
of millions of entries for the planner's memory benchmark that costs inodes, not gigabytes (5 M entries: ~2 min,
~20 GB less than the sized tree). The marker records it, so an empty tree is never mistaken for a sized one.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # allow `import gen_tree` from elsewhere, not only running it as a script
    sys.path.insert(0, str(HERE))

from harness import KiB, MiB, write_all  # noqa: E402

GENERATOR = "fs3g-bench-gen-tree"
VERSION = 1  # bump whenever the output for a given (n_files, seed) changes, so stale trees are not reused
MARKER = ".fs3g-bench-tree.json"
PARTIAL = ".fs3g-bench-tree.partial"  # present while generating: marks an incomplete tree as ours to clear

SMALL_LIMIT = 128 * KiB  # fs3g's default small-file threshold; the size bands straddle it

# Size model: (probability, kind, low, high, pareto alpha). Order matters only for drawing.
P_LARGE, A_LARGE = 0.02, 3.0
P_MID, A_MID = 0.04, 1.5
P_EMPTY = 0.02
SMALL_LO, SMALL_HI = 16, 8 * KiB

P_SYMLINK = 0.005
P_HARDLINK = 0.001

LEAF_MIN, LEAF_MAX = 50, 500
PATTERN_LEN = 1 * MiB  # random bytes per subtree; file contents are slices of it, repeated
MAX_FILE = 4 * MiB
MTIME_BASE = 1_609_459_200  # 2021-01-01T00:00:00Z: fixed so mtimes do not depend on when the tree was made
MTIME_SPAN = 3 * 365 * 86_400
PROGRESS_EVERY = 100_000

TOPICS = ("imaging", "genomics", "proteomics", "climate", "neuro", "cryoem", "simulation", "metagenome")
USERS = ("alice", "bob", "chen", "dana", "emeka", "farah", "goran", "hiro", "ines", "jonas", "kavya", "lena")
KINDS = (
    ("reads", ".fastq.gz"), ("img", ".tif"), ("frame", ".npy"), ("table", ".csv"),
    ("log", ".txt"), ("sample", ".h5"), ("chunk", ".bin"), ("cell", ".json"),
)
ODD_SUFFIXES = (" (copy)", " final", "_résumé", "_データ", " v2 ", "_naïve")  # real trees have these


@dataclass(frozen=True)
class Leaf:
    rel: str  # path of the leaf directory relative to ROOT
    n_entries: int
    siblings: tuple[str, ...]  # other leaf names under the same parent, for directory symlinks


@dataclass(frozen=True)
class Subtree:
    index: int
    name: str  # top-level directory name
    leaves: tuple[Leaf, ...]


def _chunks(items: list[Any], rng: random.Random, lo: int, hi: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    i = 0
    while i < len(items):
        n = rng.randint(lo, hi)
        out.append(items[i:i + n])
        i += n
    return out


def _leaf_counts(n_files: int, rng: random.Random) -> list[int]:
    counts: list[int] = []
    left = n_files
    while left > 0:
        c = min(left, rng.randint(LEAF_MIN, LEAF_MAX))
        counts.append(c)
        left -= c
    # Spread a short last leaf over the others so leaves stay within 50–500 whenever the total allows it.
    if len(counts) > 1 and counts[-1] < LEAF_MIN:
        rest = counts.pop()
        i = 0
        while rest:
            if counts[i % len(counts)] < LEAF_MAX:
                counts[i % len(counts)] += 1
                rest -= 1
            i += 1
            if i > 10 * len(counts) * LEAF_MAX:  # every leaf full: accept one oversize leaf
                counts[-1] += rest
                rest = 0
    return counts


def plan_tree(n_files: int, seed: int) -> list[Subtree]:
    """Lay out the hierarchy (names and per-leaf entry counts) without touching the disk."""
    rng = random.Random(f"{GENERATOR}:{VERSION}:plan:{seed}")
    counts = _leaf_counts(n_files, rng)
    # Group leaves bottom-up: 1–6 runs per experiment, 2–6 experiments per user, 2–6 users per project.
    exps = _chunks(counts, rng, 1, 6)
    users = _chunks(exps, rng, 2, 6)
    projects = _chunks(users, rng, 2, 6)
    subtrees: list[Subtree] = []
    for p, proj in enumerate(projects):
        pname = f"project_{p:03d}_{rng.choice(TOPICS)}"
        leaves: list[Leaf] = []
        for u, user in enumerate(proj):
            uname = f"{rng.choice(USERS)}_{u:02d}"
            for e, exp in enumerate(user):
                ename = f"exp_{e:03d}" + (rng.choice(ODD_SUFFIXES) if rng.random() < 0.02 else "")
                names = [f"run_{r:03d}" for r in range(len(exp))]
                for r, n in enumerate(exp):
                    others = tuple(x for x in names if x != names[r])
                    leaves.append(Leaf(f"{pname}/{uname}/{ename}/{names[r]}", n, others))
        subtrees.append(Subtree(p, pname, tuple(leaves)))
    return subtrees


def _bounded_pareto(rng: random.Random, lo: float, hi: float, alpha: float) -> int:
    # Inverse CDF of the Pareto distribution truncated to [lo, hi]: heavy near lo, thin tail up to hi.
    u = rng.random()
    la, ha = lo ** alpha, hi ** alpha
    return int((-(u * ha - u * la - ha) / (ha * la)) ** (-1.0 / alpha))


def draw_size(rng: random.Random) -> int:
    u = rng.random()
    if u < P_LARGE:
        return min(MAX_FILE, _bounded_pareto(rng, SMALL_LIMIT + 1, MAX_FILE, A_LARGE))
    u -= P_LARGE
    if u < P_MID:
        return min(SMALL_LIMIT, _bounded_pareto(rng, SMALL_HI, SMALL_LIMIT, A_MID))
    u -= P_MID
    if u < P_EMPTY:
        return 0
    return int(math.exp(rng.uniform(math.log(SMALL_LO), math.log(SMALL_HI))))


def _build_leaf(root: Path, leaf: Leaf, seed: int, pattern: memoryview, stats: dict[str, int],
                empty: bool = False) -> None:
    rng = random.Random(f"{GENERATOR}:{VERSION}:leaf:{seed}:{leaf.rel}")
    path = root / leaf.rel
    path.mkdir(parents=True, exist_ok=True)
    stem, ext = rng.choice(KINDS)
    leaf_mtime = MTIME_BASE + rng.randrange(MTIME_SPAN)
    regular: list[str] = []  # names of regular files so far, targets for links
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i in range(leaf.n_entries):
            name = f"{stem}_{i:05d}{ext}"
            if rng.random() < 0.002:
                name = f"{stem}_{i:05d}{rng.choice(ODD_SUFFIXES)}{ext}"
            u = rng.random()
            if u < P_SYMLINK and regular:
                v = rng.random()
                if v < 0.85:
                    target = rng.choice(regular)
                elif v < 0.95:
                    # A link to a directory: walkers must list it, not descend into it.
                    target = f"../{rng.choice(leaf.siblings)}" if leaf.siblings else ".."
                else:
                    target = f"missing_{i:05d}.dat"  # dangling
                os.symlink(target, name, dir_fd=dfd)
                # The link's own mtime (not its target's), so that the listing is reproducible.
                t = (leaf_mtime + rng.randrange(6 * 3600)) * 1_000_000_000
                os.utime(name, ns=(t, t), dir_fd=dfd, follow_symlinks=False)
                stats["symlinks"] += 1
                continue
            if u < P_SYMLINK + P_HARDLINK and regular:
                src = rng.choice(regular)
                os.link(src, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                stats["hardlinks"] += 1
                stats["listing_bytes"] += os.stat(src, dir_fd=dfd).st_size
                continue
            size = draw_size(rng)
            if empty:
                size = 0  # drawn anyway, so names, links and mtimes match the sized tree of the same seed
            off = rng.randrange(PATTERN_LEN)
            mtime_ns = (leaf_mtime + rng.randrange(6 * 3600)) * 1_000_000_000
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                if size:
                    write_all(fd, pattern[off:off + size])
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
            regular.append(name)
            stats["files"] += 1
            stats["bytes"] += size
            stats["listing_bytes"] += size
            stats["largest"] = max(stats["largest"], size)
            stats["large_files"] += size > SMALL_LIMIT
            stats["empty_files"] += size == 0
    finally:
        os.close(dfd)
    os.utime(path, ns=(leaf_mtime * 1_000_000_000,) * 2)


def _build_subtree(task: tuple[str, int, Subtree, bool]) -> dict[str, int]:
    """Worker: create one top-level subtree. Returns its counters (summed by the parent)."""
    root_s, seed, sub, empty = task
    root = Path(root_s)
    prng = random.Random(f"{GENERATOR}:{VERSION}:pattern:{seed}:{sub.index}")
    # Pattern repeated so any slice [off, off + MAX_FILE) with off < PATTERN_LEN exists without copying.
    base = prng.randbytes(PATTERN_LEN)
    pattern = memoryview(base * (1 + -(-MAX_FILE // PATTERN_LEN)))
    stats = dict(files=0, symlinks=0, hardlinks=0, bytes=0, listing_bytes=0, largest=0,
                 large_files=0, empty_files=0, leaves=0)
    dirs: set[str] = set()
    for leaf in sub.leaves:
        _build_leaf(root, leaf, seed, pattern, stats, empty)
        stats["leaves"] += 1
        parts = leaf.rel.split("/")
        dirs.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
    # Fix inner directory mtimes (creating children changed them) so the tree's metadata is reproducible too;
    # leaf directories got theirs in _build_leaf.
    fixed = (MTIME_BASE + MTIME_SPAN) * 1_000_000_000
    for d in dirs:
        if d.count("/") < 3:
            os.utime(root / d, ns=(fixed, fixed))
    stats["dirs"] = len(dirs)
    stats["entries"] = stats["files"] + stats["symlinks"] + stats["hardlinks"]
    return stats


def _params(n_files: int, seed: int, empty: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"generator": GENERATOR, "version": VERSION, "n_files": n_files, "seed": seed}
    if empty:  # only when set: markers of sized trees made before the option still match
        params["empty"] = True
    return params


def read_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _clear(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def generate_tree(root: Path, n_files: int, seed: int = 1, *, workers: int = 2, replace: bool = False,
                  progress: bool = True, empty: bool = False) -> dict[str, Any]:
    """Create (or reuse) the tree under root and return its summary.

    n_files counts non-directory entries: regular files + symlinks + extra hard links (the marker file is extra).
    Reuse: when ROOT/.fs3g-bench-tree.json holds the same parameters, return its summary without touching the tree.
    A tree of other parameters is replaced only with replace=True (regenerating a million files is slow);
    an interrupted generation of ours (partial marker) is always cleared; a non-empty directory that is not ours
    is refused so a wrong --root cannot delete anyone's data.
    """
    root = Path(root)
    if n_files < 1:
        raise ValueError("n_files must be at least 1")
    params = _params(n_files, seed, empty)
    marker = read_marker(root)
    if (marker is not None and all(marker.get(k) == v for k, v in params.items())
            and bool(marker.get("empty")) == empty):
        return {**marker["summary"], "reused": True}
    root.mkdir(parents=True, exist_ok=True)
    if marker is not None:
        if not replace:
            raise FileExistsError(
                f"{root} holds a benchmark tree with n_files={marker.get('n_files')} seed={marker.get('seed')} "
                f"version={marker.get('version')} empty={bool(marker.get('empty'))}; pass replace=True (--replace) to regenerate it")
        _clear(root)
    elif (root / PARTIAL).exists():
        _clear(root)
    elif any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and holds no benchmark tree marker; refusing to write into it")

    (root / PARTIAL).write_text(json.dumps(params) + "\n")
    t0 = time.perf_counter()
    subtrees = plan_tree(n_files, seed)
    tasks = [(str(root), seed, s, empty) for s in subtrees]
    totals: dict[str, int] = {}
    next_mark = PROGRESS_EVERY

    def add(res: dict[str, int]) -> None:
        nonlocal next_mark
        for k, v in res.items():
            totals[k] = max(totals.get(k, 0), v) if k == "largest" else totals.get(k, 0) + v
        if progress and totals["entries"] >= next_mark:
            print(f"gen_tree: {totals['entries']:,} / {n_files:,} entries, "
                  f"{totals['bytes'] / 1e9:.2f} GB, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            next_mark = (totals["entries"] // PROGRESS_EVERY + 1) * PROGRESS_EVERY

    n_workers = max(1, min(workers, len(tasks)))
    if n_workers == 1:
        for t in tasks:
            add(_build_subtree(t))
    else:
        # fork: workers inherit the already-imported module, so this also works when run as __main__.
        with multiprocessing.get_context("fork").Pool(n_workers) as pool:
            for res in pool.imap_unordered(_build_subtree, tasks):
                add(res)
    t_write = time.perf_counter() - t0
    # Flush dirty pages now, so writeback does not run under the first timed benchmark.
    os.sync()
    seconds = time.perf_counter() - t0
    summary = {
        "root": str(root.resolve()),
        **params,
        "entries": totals["entries"],
        "regular_files": totals["files"],
        "symlinks": totals["symlinks"],
        "hardlinks": totals["hardlinks"],
        "directories": totals["dirs"] + 1,  # + ROOT itself
        "leaf_directories": totals["leaves"],
        "top_level_subtrees": len(subtrees),
        "total_bytes": totals["bytes"],  # data bytes, each hard-linked file once
        "listing_bytes": totals["listing_bytes"],  # sum of st_size over regular names (what find %s adds up)
        "largest_file_bytes": totals["largest"],
        "files_over_128KiB": totals["large_files"],
        "empty_files": totals["empty_files"],
        "workers": n_workers,
        "write_seconds": round(t_write, 2),
        "generation_seconds": round(seconds, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = root / (MARKER + ".tmp")
    tmp.write_text(json.dumps({**params, "total_bytes": summary["total_bytes"], "summary": summary}, indent=2) + "\n")
    os.replace(tmp, root / MARKER)  # atomic: a marker is never seen half-written
    (root / PARTIAL).unlink()
    fixed = (MTIME_BASE + MTIME_SPAN) * 1_000_000_000
    os.utime(root, ns=(fixed, fixed))
    if progress:
        print(f"gen_tree: done, {summary['entries']:,} entries, {summary['total_bytes'] / 1e9:.2f} GB "
              f"in {seconds:.1f} s", file=sys.stderr, flush=True)
    return {**summary, "reused": False}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--files", type=int, default=1_000_000, help="non-directory entries (default 1000000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="processes, one top-level subtree at a time each")
    ap.add_argument("--replace", action="store_true", help="regenerate a tree made with other parameters")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument("--empty", action="store_true", help="every regular file empty (a large tree for its inodes)")
    args = ap.parse_args(argv)
    try:
        summary = generate_tree(args.root, args.files, args.seed, workers=args.workers, replace=args.replace,
                                progress=not args.quiet, empty=args.empty)
    except (FileExistsError, ValueError) as e:
        print(f"gen_tree: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
