"""The backup pipeline, as its job chain: plan (scan, diff, shards), task (one array task's uploads), merge (verify,
report, catalog), run (submit, follow, retry); catalog: the catalog update the merge writes."""
