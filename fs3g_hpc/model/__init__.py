"""Pure rules, one home each: sizes, entry records and their files, entry classes, object keys and metadata, the tree
hash, exclude globs, the sbatch --begin grammar, S3's limits and part sizing, S3's CRC32 checksums, the catalog's
order check and the set of unreadable paths. No outside system (no boto3, no Slurm): modules here import only each
other, fs3g_hpc.errors and the package version."""
