"""The only package that runs Slurm commands (sbatch, squeue, sacct, scontrol, scancel) or submitit.

`render` and `jobs` are pure (job descriptions, scripts as text); `engine` submits jobs through submitit's
SlurmExecutor and `local` runs shards as submitit local jobs; `commands` talks to the cluster (every Slurm command,
submitit's sbatch included, goes through `commands.run`); `submit` is what the pipelines call.
"""
