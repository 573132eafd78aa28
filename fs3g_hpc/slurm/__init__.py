"""The only package that runs Slurm commands (sbatch, squeue, sacct, scontrol, scancel) or submitit.

`render` is pure (job scripts as text); `commands` talks to the cluster.
"""
