"""Restores: select, stage (Glacier restore requests and readiness polls), download in shards, merge. One module per
step of the job chain: paths (which backed-up paths, where each goes below the destination; pure), layout (the run
directory), select (selection from the catalog or the bucket listing, shards), stage (Glacier requests, polls, the dry
run's preview), destination (the safe writer), task (one shard's download and verify), merge (directory metadata,
report), run (submit, follow: the local poll loop or the Slurm chain of poll jobs).

    <run_root>/<lab>/restore-<UTC time>/          one restore run (0700)
        restore.json                              header: policy snapshot, destination, tier, days, shards; written last
        shards/shard-000000.rec ...               what each array task restores (the catalog's records, or the
                                                  bucket listing's when there is no catalog); the selected links of
                                                  one hard-linked file are contiguous in one shard
        directories.rec                           the selected directories, deepest first (from the catalog only)
        refused.jsonl                             keys that would land outside the destination: never written
        stage/state.json, stage/shard-N.json      restore requests made, objects still in progress, polls so far;
                                                  per shard the packs' and the large objects' listing lines
        results/shard-N.journal|json|failures.jsonl
        report.json, summary.txt, failures.jsonl  written by the merge

What comes back: every file's bytes (verified), mode, mtime and atime to the nanosecond (0 and negative times
included), owner and group when run as root; symlinks as symlinks; the links of a hard-linked file (same inode in the
catalog, same size, mtime and tree hash) as hard links: the first one is downloaded and verified, the others are
linked to it (linkat, both names below the destination, no symlink followed), and only the selected links are made;
blocks of zeros are not written (the file is sized first), so sparse files keep their holes; directories, empty ones
included, with their mode, times and owner, set by the merge after every shard, deepest first (a directory's mtime
changes when a file is created in it, so it is set last). Directories and hard links come from the catalog: a
restore from the bucket listing (no catalog) makes the directories its files need, with default metadata, and
restores every link as a separate file.

Packed files (a catalog record with a location, or a pack index's entry without a catalog) are read by pack:
restore/packs.py says which ranged GETs and how each member is checked before it is written; select.py how indexes
are read without a catalog; stage.py how archived packs are thawed (once per pack).

Safety: restore/destination.py (its docstring states the rules).

Memory of one restore task: download_workers × max(small_file_threshold_bytes, 1 MiB) (whole small objects, 1 MiB
pieces of large ones) plus one shard's journal (bounded by shards.max_files); for packed files, the shard's packed
records grouped by pack, and per worker one member's headers (64 KiB) and 1 MiB of a pack's stream. Selecting hard links and directories
spills sorted runs of SPILL_RECORDS records; the merge streams directories.rec.
"""
