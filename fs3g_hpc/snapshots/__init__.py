"""Catalog snapshots in the bucket: the bucket describes itself, so losing the run root costs no re-upload.

    store.py     write a snapshot (the merge, a rebuild), list them, read one back into a local catalog file
    baseline.py  which catalog a plan diffs against: the local one, or the bucket's newest snapshot
    rebuild.py   `fs3g catalog rebuild`: a catalog (and a snapshot) from listings + object metadata

Key layout and manifest format: model/snapshots.py. S3 requests: transfer/snapshots.py.
"""
