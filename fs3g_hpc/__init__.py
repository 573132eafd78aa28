"""fs3g-hpc: back up and restore research filesystems to S3 and Glacier with Slurm job arrays."""

__version__ = "0.1.0"
