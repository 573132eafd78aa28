"""`fs3g compare`: what differs between the filesystem and its backup, by class and category, in the order of its
job chain:

- join.py: the policy's roots (or PATHs inside them) walked and merge-joined with the catalog or the bucket, one pair at
  a time (`compare_tree`);
- checks.py: what a pair says (kind, size, mtime) and the checks that cost I/O (HEAD, SHA-256 tree hash); the
  discrepancy types, categories and the summary that counts them;
- jobs.py: the hash checks of a large tree as a job array (`prepare_compare`, `compare_shard`, the run's layout);
- report.py: the text and JSON reports, and the merge of a run's findings into report.json and discrepancies.txt;
- run.py: a compare in this process, or as jobs: prepare, submit, follow.
"""

from .checks import (Against, Category, CompareSummary, Discrepancy, HashSink, NotComparable, listed_class,
                     listed_entry, local_tree_hash, quick_verdict)
# The join function stays in compare.join: re-exported here it would hide the module of that name.
from .join import (DEFAULT_WORKERS, InOrder, Scope, SubtreeExcluder, bounded_map, compare_tree, is_under,
                   newest_per_path, resolve_scope)
from .report import JsonReport, TextReport

__all__ = ["Against", "Category", "CompareSummary", "DEFAULT_WORKERS", "Discrepancy", "HashSink", "InOrder",
           "JsonReport", "NotComparable", "Scope", "SubtreeExcluder", "TextReport", "bounded_map", "compare_tree",
           "is_under", "listed_class", "listed_entry", "local_tree_hash", "newest_per_path", "quick_verdict",
           "resolve_scope"]
