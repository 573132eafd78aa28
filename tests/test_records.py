"""Record format 3 (the location field), and files of formats 1 and 2 still read, built here with their own layouts."""

from __future__ import annotations

import gzip
import hashlib
import struct

import pytest

from fs3g_hpc.model.packs import PackRef
from fs3g_hpc.model.records import (FORMAT_VERSION, Entry, EntryKind, RecordFormatError, RecordWriter, decode_records,
                                    directory_partition, encode, encode_many, filter_partition, packed,
                                    read_partition, read_records, sort_key, write_records)

PACK = "packs/20261201T120000Z-1a2b3c4d/000003-00001.tar"


def entries() -> list[Entry]:
    out = []
    for i in range(2000):  # more than one read chunk's worth of records at 4,000-byte paths
        path = b"/r/" + (b"d\xff\n" * 1300)[: 1 + i % 4000] + b"/%d" % i
        tree = hashlib.sha256(path).digest() if i % 3 else b""
        location = PackRef(PACK, 1024 * i, 1024 * i + 1536, i).encode() if i % 2 else b""
        out.append(Entry.of(path, EntryKind.FILE, i, -i * 10**9 - 1, i, 2**62, 0o100644, 2**32 - 1, 7, 2**64 - 1, i,
                            3)._replace(tree_hash=tree, location=location))
    return out


def test_v3_round_trip_keeps_locations_and_tree_hashes(tmp_path):
    assert FORMAT_VERSION == 3
    written = entries()
    path = tmp_path / "catalog.rec"
    assert write_records(path, written) == len(written)
    with gzip.open(path) as f:
        assert f.read(8) == b"FS3GREC3"
    back = list(read_records(path))
    assert back == written
    assert [packed(e) for e in back] == [bool(i % 2) for i in range(len(written))]
    ref = PackRef.decode(back[5].location, "test")
    assert ref == PackRef(PACK, 5120, 5120 + 1536, 5) and ref.data_end == 5120 + 1536 + 5
    assert back[4].location == b"" and not packed(back[4])


def test_new_entries_have_an_empty_location():
    e = Entry.of(b"/a/b", EntryKind.FILE, 1, 2, 3, 4, 0o100644, 5, 6, 7, 8, 1)
    assert e.location == b"" and e.tree_hash == b"" and len(e) == len(Entry._fields) == 14
    assert not packed(e)


def test_a_location_too_long_for_its_length_field_is_refused():
    e = Entry.of(b"/a/b", EntryKind.FILE, 1, 2, 3, 4, 0o100644, 5, 6, 7, 8, 1)._replace(location=b"x" * 65536)
    with pytest.raises(struct.error):
        encode(e)


# The layouts of formats 1 and 2, as they were written (kept here, not in the module: it never writes them).
V1 = struct.Struct("<BQqqqIIIQQII")
V2 = struct.Struct("<BQqqqIIIQQIIB")


def write_old(path, magic: bytes, entries: list[Entry]) -> None:
    with gzip.open(path, "wb") as f:
        f.write(magic)
        for e in entries:
            fields = (e.kind.value, e.size_bytes, e.mtime_ns, e.ctime_ns, e.atime_ns, e.mode, e.uid, e.gid, e.dev,
                      e.ino, e.nlink, len(e.key))
            if magic == b"FS3GREC1":
                f.write(V1.pack(*fields) + e.key)
            else:
                f.write(V2.pack(*fields, len(e.tree_hash)) + e.key + e.tree_hash)


@pytest.mark.parametrize("magic", [b"FS3GREC1", b"FS3GREC2"])
def test_format_1_and_2_files_still_read_with_empty_locations(tmp_path, magic):
    written = [e._replace(location=b"") for e in entries()]
    if magic == b"FS3GREC1":
        written = [e._replace(tree_hash=b"") for e in written]
    path = tmp_path / "old.rec"
    write_old(path, magic, written)
    back = list(read_records(path))
    assert back == written
    assert all(e.location == b"" and not packed(e) for e in back)
    assert any(e.tree_hash for e in back) == (magic == b"FS3GREC2")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "c.rec"
    write_records(path, entries()[:10])
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(tmp_path / "cut.rec", "wb") as f:
        f.write(data[:-3])
    with pytest.raises(RecordFormatError, match="truncated"):
        list(read_records(tmp_path / "cut.rec"))
    with gzip.open(tmp_path / "x.rec", "wb") as f:
        f.write(b"FS3GREC9" + data[8:])
    with pytest.raises(RecordFormatError, match="not an fs3g record file"):
        list(read_records(tmp_path / "x.rec"))


def test_sort_key_is_unchanged_by_the_location():
    a = Entry.of(b"/d/x", EntryKind.FILE, 1, 1, 1, 1, 0o100644, 0, 0, 1, 1, 1)
    assert a._replace(location=PackRef(PACK, 0, 1024, 1).encode()).key == a.key == sort_key(b"/d/x")


def test_encode_many_and_decode_are_encode_and_read(tmp_path):
    batch = entries()
    data = encode_many(batch)
    assert data == b"".join(map(encode, batch)) and encode_many([]) == b""
    assert decode_records(data, "mem") == batch
    with pytest.raises(RecordFormatError, match="mem: truncated"):
        decode_records(data[:-1], "mem")
    path = tmp_path / "many.rec"
    with RecordWriter(path) as writer:
        writer.write(batch[0])
        writer.write_many(batch[1:1500])
        writer.write_encoded(encode_many(batch[1500:]), len(batch) - 1500)
        assert writer.count == len(batch)
    assert list(read_records(path)) == batch


@pytest.mark.parametrize("partitions", [1, 2, 5])
def test_partitions_split_by_directory_and_cover_every_record(tmp_path, partitions):
    batch = sorted(entries() + [Entry.of(b"/r/x/%d" % i, EntryKind.FILE, i, 0, 0, 0, 0o100644, 0, 0, 1, i, 1)
                                for i in range(500)], key=lambda e: e.key)
    path = tmp_path / "all.rec"
    write_records(path, batch)
    seen: list[Entry] = []
    for p in range(partitions):
        part = list(read_partition(path, p, partitions, read_chunk=4096))  # many chunk boundaries
        assert part == list(filter_partition(batch, p, partitions))
        assert all(directory_partition(e.directory, partitions) == p for e in part)
        seen += part
    assert sorted(seen, key=lambda e: e.key) == batch


FALLBACK = """
import sys
from pathlib import Path
from fs3g_hpc.model import zlibs
from fs3g_hpc.model.records import read_records, write_records, read_partition
print(zlibs.IMPLEMENTATION)
source, target = Path(sys.argv[1]), Path(sys.argv[2])
entries = list(read_records(source))
assert list(read_partition(source, 0, 2)) + list(read_partition(source, 1, 2)) != []
write_records(target, entries)
"""


def test_the_standard_library_fallback_reads_and_writes_what_isal_does(tmp_path):
    """FS3G_NO_ISAL=1 forces the standard library: each implementation reads the other's files, record for record
    (whether or not the `fast` extra is installed here; with it, both paths are exercised)."""
    import os
    import subprocess
    import sys

    from fs3g_hpc.model import zlibs

    batch = entries()
    native = tmp_path / "native.rec"
    write_records(native, batch)
    env = {**os.environ, "FS3G_NO_ISAL": "1"}
    proc = subprocess.run([sys.executable, "-c", FALLBACK, str(native), str(tmp_path / "std.rec")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "zlib"
    assert list(read_records(tmp_path / "std.rec")) == batch
    assert zlibs.IMPLEMENTATION == ("isal" if zlibs.ACCELERATED else "zlib")
    with gzip.open(native, "rb") as f:  # the standard library's gzip reads ours whichever wrote it
        assert f.read(8) == b"FS3GREC3"


def test_the_gzip_reader_reads_what_gzip_reads_a_piece_of_input_at_a_time(tmp_path):
    """zlibs.GzipReader: several members, exact reads across member and input boundaries, never more than its input
    chunk of compressed data held; a truncated stream is an EOFError and damaged data a BadGzipFile, as the gzip
    module's (callers catch those); an empty file reads as empty."""
    import os

    from fs3g_hpc.model import zlibs

    data = [os.urandom(50_000) + b"z" * 300_000, b"", b"second member " * 5000]
    path = tmp_path / "members.gz"
    path.write_bytes(b"".join(gzip.compress(d, mtime=0) for d in data))
    whole = b"".join(data)
    for input_chunk in (17, 4096, 1 << 20):
        with zlibs.GzipReader(path, input_chunk) as reader:
            got, sizes = [], [1, 7, 65536, 3, 1 << 20]
            for i in range(10_000):
                piece = reader.read(sizes[i % len(sizes)])
                assert reader.pending_input <= input_chunk
                if not piece:
                    break
                assert len(piece) == sizes[i % len(sizes)] or len(b"".join(got)) + len(piece) == len(whole)
                got.append(piece)
        assert b"".join(got) == whole
    compressed = path.read_bytes()
    (tmp_path / "cut.gz").write_bytes(compressed[:len(compressed) // 2])
    with pytest.raises(EOFError), zlibs.GzipReader(tmp_path / "cut.gz", 4096) as reader:
        while reader.read(1 << 16):
            pass
    damaged = bytearray(gzip.compress(b"abc" * 10_000, mtime=0))
    damaged[-6] ^= 0xFF  # the CRC-32 in the trailer
    (tmp_path / "crc.gz").write_bytes(bytes(damaged))
    (tmp_path / "foreign.gz").write_bytes(b"not gzip at all" * 100)
    for name in ("crc.gz", "foreign.gz"):
        with pytest.raises(gzip.BadGzipFile), zlibs.GzipReader(tmp_path / name) as reader:
            while reader.read(1 << 16):
                pass
    (tmp_path / "empty.gz").write_bytes(b"")
    with zlibs.GzipReader(tmp_path / "empty.gz") as reader:
        assert reader.read(8) == b""


def test_a_merge_of_many_runs_holds_its_budget_not_a_chunk_per_run(tmp_path):
    """The k-way merge's read chunks share records.MERGE_BUFFER_BYTES: each of 64 readers gets 1/64 of it (at least
    MIN_MERGE_CHUNK), 4 readers at most 1 MiB each; the merge is the sorted union either way."""
    from fs3g_hpc.model.records import MERGE_BUFFER_BYTES, MIN_MERGE_CHUNK, merge_chunk, merge_sorted

    assert merge_chunk(64) * 64 <= MERGE_BUFFER_BYTES and merge_chunk(64) >= MIN_MERGE_CHUNK
    assert merge_chunk(4) == 1 << 20 and merge_chunk(1000) == MIN_MERGE_CHUNK
    batch = sorted(entries(), key=lambda e: e.key)
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"run{i}.rec")
        write_records(paths[-1], batch[i::8])
    assert list(merge_sorted(paths)) == batch
