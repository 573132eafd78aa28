"""`fs3g prune`: retention applied to the bucket (prune/run.py), and the lab locks it shares with backups
(prune/locks.py)."""
