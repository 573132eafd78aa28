"""Test fixture: real packs and indexes (model/packs.py's writer, uploaded with boto3) and a catalog whose records
carry their locations, as a backup writing packs leaves them; plus the pieces to craft hostile packs and indexes.

Test-only: the product's pack writer is transfer/packer.py.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from fs3g_hpc.config import Policy
from fs3g_hpc.model.packs import (END_OF_ARCHIVE, IndexEntry, IndexWriter, MemberInfo, MemberType, PackRef,
                                  absolute_key, member_header, padding)
from fs3g_hpc.model.records import Entry, EntryKind, by_key, sort_key, write_records
from fs3g_hpc.model.treehash import tree_hash
from fs3g_hpc.runs.catalog import catalog_path, record_catalog_target
from fs3g_hpc.runs.layout import ensure_private_dir

RUN_ID = "20261201T120000Z-1a2b3c4d"


@dataclass
class Member:
    info: MemberInfo
    data: bytes = b""


@dataclass
class BuiltPack:
    key: str  # relative to the lab prefix
    tar: bytes
    index: bytes
    refs: list[PackRef] = field(default_factory=list)  # per member, in order


def member_of(path: bytes, st: os.stat_result, data: bytes = b"", link: bytes = b"",
              mtype: MemberType | None = None) -> Member:
    if mtype is None:
        mtype = MemberType.SYMLINK if stat.S_ISLNK(st.st_mode) else MemberType.FILE
    size = len(data) if mtype is MemberType.FILE else 0
    info = MemberInfo(path=path, type=mtype, size_bytes=size, mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns,
                      mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, uname="", gname="", link_target=link,
                      sha256=hashlib.sha256(data).hexdigest() if mtype is MemberType.FILE else "")
    return Member(info, data)


def build_pack(key: str, members: list[Member],
               index_entry: Callable[[int, IndexEntry], IndexEntry] | None = None) -> BuiltPack:
    """The tar bytes and the index of `members`; `index_entry(i, entry)` may replace what the index says."""
    run_id = key.split("/")[1]
    writer = IndexWriter(key, run_id)
    pieces: list[bytes] = []
    offset = 0
    refs = []
    for i, m in enumerate(members):
        header = member_header(m.info)
        data_offset = offset + len(header)
        pieces += [header, m.data, padding(len(m.data))]
        entry = IndexEntry.of(m.info, offset, data_offset)
        if index_entry is not None:
            entry = index_entry(i, entry)
        writer.add(entry)
        refs.append(PackRef(key, offset, data_offset, len(m.data)))
        offset = data_offset + len(m.data) + len(padding(len(m.data)))
    pieces.append(END_OF_ARCHIVE)
    tar = b"".join(pieces)
    return BuiltPack(key, tar, writer.finish(len(tar)), refs)


def upload(client: Any, bucket: str, prefix: str, pack: BuiltPack, storage_class: str = "STANDARD",
           with_index: bool = True) -> None:
    client.put_object(Bucket=bucket, Key=absolute_key(prefix, pack.key), Body=pack.tar, StorageClass=storage_class)
    if with_index:
        client.put_object(Bucket=bucket, Key=absolute_key(prefix, pack.key + ".idx"), Body=pack.index)


def pack_tree(client: Any, policy: Policy, root: Path, *, run_id: str = RUN_ID, per_pack: int = 1000,
              storage_class: str = "STANDARD", write_catalog: bool = True) -> dict[bytes, PackRef]:
    """Pack every regular file and symlink under `root` (walk order, `per_pack` members a pack; the later links of
    a hard-linked file as hard-link members of its pack, their records pointing at the first one's data), upload
    packs and indexes, and write the lab's catalog (files, symlinks, directories; tree hashes and locations)."""
    prefix, bucket = policy.s3.prefix, policy.s3.bucket
    records: list[Entry] = []
    refs: dict[bytes, PackRef] = {}
    members: list[tuple[Member, Entry, bytes | None]] = []  # member, record, first link (hard links)
    packs: list[BuiltPack] = []
    firsts: dict[tuple[int, int], bytes] = {}
    top = os.fsencode(root)

    def flush() -> None:
        if not members:
            return
        key = f"packs/{run_id}/000000-{len(packs):05d}.tar"
        built = build_pack(key, [m for m, _, _ in members])
        packs.append(built)
        upload(client, bucket, prefix, built, storage_class)
        by_path = {}
        for (m, entry, first), ref in zip(members, built.refs):
            by_path[m.info.path] = ref
        for (m, entry, first), ref in zip(members, built.refs):
            location = by_path[first] if first is not None else ref
            refs[entry.path] = location
            records.append(entry._replace(location=location.encode()))
        members.clear()

    # In catalog order (by record key), as a backup shard packs the files of its manifest.
    found: list[tuple[bytes, os.stat_result]] = []
    for directory, dirs, names in os.walk(top):
        for name in dirs + names:
            path = os.path.join(directory, name)
            found.append((path, os.lstat(path)))
    records.append(Entry.from_stat(top, EntryKind.DIRECTORY, os.lstat(top)))
    for path, st in sorted(found, key=lambda item: sort_key(item[0])):
        if stat.S_ISDIR(st.st_mode):
            records.append(Entry.from_stat(path, EntryKind.DIRECTORY, st))
            continue
        if len(members) >= per_pack:
            flush()
            firsts.clear()  # hard links point within one pack
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            entry = Entry.from_stat(path, EntryKind.SYMLINK, st)._replace(tree_hash=bytes.fromhex(
                tree_hash(target)))
            members.append((member_of(path, st, link=target), entry, None))
            continue
        data = open(path, "rb").read()
        entry = Entry.from_stat(path, EntryKind.FILE, st)._replace(tree_hash=bytes.fromhex(tree_hash(data)))
        first = firsts.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            members.append((member_of(path, st, link=first, mtype=MemberType.HARDLINK), entry, first))
        else:
            if st.st_nlink > 1:
                firsts[(st.st_dev, st.st_ino)] = path
            members.append((member_of(path, st, data), entry, None))
    flush()
    if write_catalog:
        ensure_private_dir(catalog_path(policy).parent)
        write_records(catalog_path(policy), sorted(records, key=by_key))
        record_catalog_target(policy)
    return refs


def flip_byte(client: Any, bucket: str, key: str, offset: int) -> None:
    """Overwrite an object with one byte changed at `offset` (plain boto3: the bucket altered behind our back)."""
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[offset] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def with_path(info: MemberInfo, path: bytes, **changes: Any) -> MemberInfo:
    return replace(info, path=path, **changes)


def craft_index(index: bytes, changes: dict[int, dict[str, Any]]) -> bytes:
    """An index with member i's JSON fields replaced by `changes[i]` (raw values: `path` as the index's text form,
    where `%00` is a NUL and the leading `/` is implied), anything the writer would refuse to write."""
    import gzip
    import json

    lines = gzip.decompress(index).splitlines()
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        item = json.loads(line)
        item.update(changes.get(i, {}))
        out.append(json.dumps(item, ensure_ascii=False).encode())
    return gzip.compress(b"\n".join(out) + b"\n", mtime=0)
