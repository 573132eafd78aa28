"""The sharded run core under backup, restore and compare: the run directory's layout and typed files, the shard
journal, the catalog reader, the shard cutter, progress, the merge's reading of results and failures, the executors."""
