"""The pack format (model/packs.py) against the readers a user has without fs3g: Python's tarfile, GNU tar and bsdtar
list and extract what member_header writes (exact name bytes, nanosecond times, links); the strict parser takes back
exactly what was written and refuses anything else with PackFormatError; the index round-trips and refuses bad lines.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from fs3g_hpc.errors import UsageError
from fs3g_hpc.model.packs import (BLOCK, END_OF_ARCHIVE, INDEX_SUFFIX, MAX_INDEX_LINE_BYTES, PACKS_DIR, IndexEntry,
                                  IndexHeader, IndexWriter, MemberInfo, MemberType, PackFormatError, PackRef,
                                  absolute_key, index_key, is_index_key, is_pack_key, member_header, padding,
                                  parse_member_header, pack_key, read_index, relative_to_prefix, run_id_of)

RUN = "20261201T120000Z-1a2b3c4d"
PACK = f"packs/{RUN}/000003-00001.tar"
T1960 = -315619199_876543211  # 1960-01-01 00:00:00.123456789 UTC
T2023 = 1_700_000_000_123456789
SEG = b"s" * 249 + b"\xe9"  # a 250-byte segment, not UTF-8
LONG = b"/r/" + b"/".join([SEG] * 15) + b"/" + b"L" * 200  # 3,968 bytes
HOSTILE = [
    b"/r/plain.txt",
    b"/r/new\nline",
    b"/r/bad\xff\xfename",
    b"/r/-leading-dash",
    b"/r/with spaces  and\ttab",
    b"/r/" + b"x" * 96,  # the tar name (without "/") is exactly 100 bytes: the ustar name field
    b"/r/" + b"y" * 97,  # 101 bytes: one past it
    b"/r/caf\xc3\xa9/\xe2\x98\x83 snow",  # UTF-8 kept as is
    b"/r/back\\slash%41",
    b"/r/" + b"t" * 249 + b"\xe9",  # a 250-byte name
    LONG,
]


def file_member(path: bytes, data: bytes, mtime_ns: int = T1960, mode: int = 0o100640) -> tuple[MemberInfo, bytes]:
    return MemberInfo(path, MemberType.FILE, len(data), mtime_ns, T2023, mode, 1234, 5678, "alice", "lab\xe9",
                      sha256=hashlib.sha256(data).hexdigest()), data


def hostile_members() -> list[tuple[MemberInfo, bytes]]:
    members = [file_member(p, b"%d:" % i + os.urandom(37 * i) + p, T1960 + i) for i, p in enumerate(HOSTILE)]
    members.append(file_member(b"/r/empty", b"", T2023))
    members.append(file_member(b"/r/exec", b"#!/bin/sh\n", 0, 0o104755))  # setuid bit kept in the mode
    members.append((MemberInfo(b"/r/sym", MemberType.SYMLINK, 0, T2023, T2023, 0o120777, 1234, 5678, "alice", "lab",
                               link_target=b"plain.txt"), b""))
    members.append((MemberInfo(b"/r/sym-odd\n", MemberType.SYMLINK, 0, T1960, T1960, 0o120777, 1, 2, "a", "b",
                               link_target=b"../bad\xff\xfename"), b""))
    members.append((MemberInfo(b"/r/hard", MemberType.HARDLINK, 0, T1960, T2023, 0o100640, 1234, 5678, "alice",
                               "lab", link_target=b"/r/plain.txt"), b""))
    members.append((MemberInfo(b"/r/hard\xff", MemberType.HARDLINK, 0, T1960 + 2, T2023, 0o100640, 1234, 5678,
                               "alice", "lab", link_target=b"/r/bad\xff\xfename"), b""))
    return members


def build_pack(members: list[tuple[MemberInfo, bytes]]) -> tuple[bytes, list[IndexEntry]]:
    out = io.BytesIO()
    index = []
    for info, data in members:
        header_offset = out.tell()
        header = member_header(info)
        assert len(header) % BLOCK == 0
        out.write(header + data + padding(len(data)))
        index.append(IndexEntry.of(info, header_offset, header_offset + len(header)))
    out.write(END_OF_ARCHIVE)
    return out.getvalue(), index


@pytest.fixture(scope="module")
def pack() -> tuple[bytes, list[IndexEntry], list[tuple[MemberInfo, bytes]]]:
    members = hostile_members()
    data, index = build_pack(members)
    return data, index, members


def tar(*args: str, cwd: Path | None = None, input: bytes | None = None, tool: str = "tar") -> subprocess.CompletedProcess:
    # GNU tar lists names escaped in the C locale; bsdtar wants a UTF-8 locale for the UTF-8 user and group names
    locale = "C" if tool == "tar" else "C.UTF-8"
    return subprocess.run([tool, *args], capture_output=True, cwd=cwd, input=input, timeout=120,
                          env={**os.environ, "LC_ALL": locale})


# -- our own parser ----------------------------------------------------------------------------------------------------

def test_parse_member_header_takes_back_exactly_what_was_written(pack):
    data, index, members = pack
    view = memoryview(data)
    for (info, body), entry in zip(members, index):
        parsed, length = parse_member_header(view[entry.header_offset:], f"{PACK} at {entry.header_offset}")
        assert parsed == info
        assert entry.header_offset + length == entry.data_offset
        assert bytes(view[entry.data_offset:entry.data_end]) == body
    assert data.endswith(END_OF_ARCHIVE) and len(data) % BLOCK == 0


def test_padding_fills_the_last_block():
    assert [len(padding(n)) for n in (0, 1, 511, 512, 513)] == [0, 511, 1, 0, 511]


def test_member_header_refuses_infos_no_reader_could_take_back():
    info, _ = file_member(b"/r/a", b"x")
    bad = [info.__class__(**{**info.__dict__, **change}) for change in (
        {"path": b"relative"}, {"path": b"/r/nul\0"}, {"sha256": ""}, {"sha256": "A" * 64}, {"uid": -1},
        {"link_target": b"x"}, {"mtime_ns": 1 << 63})]
    bad.append(MemberInfo(b"/r/s", MemberType.SYMLINK, 0, 0, 0, 0o120777, 0, 0, "u", "g"))  # no target
    bad.append(MemberInfo(b"/r/h", MemberType.HARDLINK, 0, 0, 0, 0o100644, 0, 0, "u", "g", link_target=b"r/x"))
    for b in bad:
        with pytest.raises(ValueError):
            member_header(b)


def _valid_header() -> bytes:
    info, _ = file_member(b"/r/bad\xff/name", b"data")
    return member_header(info)


def _reblock(block: bytes) -> bytes:
    """Rewrite an ustar block's checksum after a change, so that only the change is judged."""
    block = block[:148] + b" " * 8 + block[156:]
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _with_pax(records: bytes, ustar: bytes | None = None) -> bytes:
    header = _valid_header()
    first = _reblock(header[:124] + b"%011o\0" % len(records) + header[136:BLOCK])
    ustar = ustar or header[-BLOCK:]
    return first + records + padding(len(records)) + ustar


def _rec(keyword: bytes, value: bytes) -> bytes:
    body = b" " + keyword + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


GOOD_RECORDS = [(b"path", b"r/x"), (b"mtime", b"1.5"), (b"atime", b"-1.000000001"), (b"uid", b"1"), (b"gid", b"2"),
                (b"size", b"4"), (b"FS3G.sha256", hashlib.sha256(b"data").hexdigest().encode())]


def _records(drop: bytes = b"", **replace: bytes) -> bytes:
    return b"".join(_rec(k, replace.get(k.decode().replace(".", "_"), v)) for k, v in GOOD_RECORDS if k != drop)


def test_hand_built_headers_parse_and_the_sign_is_on_the_whole_number():
    info, length = parse_member_header(_with_pax(_records()), "w")
    assert info.path == b"/r/x" and info.mtime_ns == 1_500_000_000 and info.atime_ns == -1_000_000_001
    assert info.uname == "alice" and length == 3 * BLOCK  # uname from the ustar field when pax has none


@pytest.mark.parametrize("data, message", [
    (b"", "truncated"),
    (bytes(2048), "end of archive"),
    (_valid_header()[:-1], "truncated"),
    (_valid_header()[:BLOCK] + _valid_header()[BLOCK:], None),  # the control: valid
    (b"\1" + _valid_header()[1:], "checksum"),
    (_valid_header()[:-BLOCK] + b"\1" + _valid_header()[-BLOCK + 1:], "checksum"),
    (_reblock(_valid_header()[:124] + b"77777777777\0" + _valid_header()[136:BLOCK]) + _valid_header()[BLOCK:],
     "pax header size"),
    (_reblock(_valid_header()[:124] + b"\x80" + bytes(11) + _valid_header()[136:BLOCK]) + _valid_header()[BLOCK:],
     "not octal"),
    (_reblock(_valid_header()[:156] + b"g" + _valid_header()[157:BLOCK]) + _valid_header()[BLOCK:], "'x'"),
    (_with_pax(_records(drop=b"path")), "lacks path"),
    (_with_pax(_records(drop=b"FS3G.sha256")), "FS3G.sha256"),
    (_with_pax(b"99 path=r/x\n" + _records(drop=b"path")), "do not end a record"),
    (_with_pax(b"9 path=r/x\n" + _records(drop=b"path")), "do not end a record"),
    (_with_pax(b"012 path=r/x\n" + _records(drop=b"path")), "no valid length"),
    (_with_pax(b"x" + _records()), "no valid length"),
    (_with_pax(_records() + _rec(b"path", b"r/y")), "twice"),
    (_with_pax(_records() + _rec(b"GNU.sparse.map", b"0,1")), "not one fs3g writes"),
    (_with_pax(_records() + b"9 novalu\n"), "keyword=value"),
    (_with_pax(_records(path=b"/etc/passwd")), "absolute"),
    (_with_pax(_records(path=b"r/\xff")), "not UTF-8"),
    (_with_pax(_records(path=b"r/\0x")), "NUL"),
    (_with_pax(_records(size=b"5")), "contradicts"),
    (_with_pax(_records(size=b"99999999999999999999")), "size is not a number"),
    (_with_pax(_records(uid=b"4294967296")), "uid"),
    (_with_pax(_records(mtime=b"1e9")), "mtime"),
    (_with_pax(_records(mtime=b"+1.0")), "mtime"),
    (_with_pax(_records(atime=b"1.0000000001")), "atime"),
    (_with_pax(_records(FS3G_sha256=b"ABC")), "FS3G.sha256"),
    (_with_pax(_records() + _rec(b"hdrcharset", b"KOI8-R")), "hdrcharset"),
    (_with_pax(_records() + _rec(b"linkpath", b"x")), "linkpath"),
])
def test_garbled_headers_are_refused_with_pack_format_error(data, message):
    if message is None:
        parse_member_header(data, "w")
        return
    with pytest.raises(PackFormatError, match=message) as caught:
        parse_member_header(data, f"{PACK} at 4096")
    assert isinstance(caught.value, UsageError)
    assert str(caught.value).startswith(f"{PACK} at 4096: ")


def test_pax_padding_must_be_zero():
    header = bytearray(_valid_header())
    header[2 * BLOCK - 1] = 1  # the last byte of the pax block's padding (the records are shorter than 512)
    with pytest.raises(PackFormatError, match="padding"):
        parse_member_header(bytes(header), "w")


def test_random_byte_flips_give_a_valid_parse_or_pack_format_error(pack):
    data, index, members = pack
    rng = random.Random(15)
    samples = [data[e.header_offset:e.data_offset] for e in index]
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(4000):
        header = bytearray(rng.choice(samples))
        for _ in range(rng.choice((1, 1, 2, 8))):
            header[rng.randrange(len(header))] = rng.randrange(256)
        cut = len(header) if rng.random() < 0.8 else rng.randrange(len(header))
        try:
            info, length = parse_member_header(bytes(header[:cut]), "fuzz")
        except PackFormatError:
            outcomes["refused"] += 1
        else:
            assert isinstance(info, MemberInfo) and length <= cut
            outcomes["parsed"] += 1
    assert outcomes["refused"] > 1000 and outcomes["parsed"] > 0


# -- Python's tarfile --------------------------------------------------------------------------------------------------

def test_python_tarfile_reads_names_times_links_and_the_sha256(pack, tmp_path):
    data, index, members = pack
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        read = archive.getmembers()
        assert len(read) == len(members)
        for got, (info, body) in zip(read, members):
            assert os.fsencode(got.name) == info.path[1:]  # surrogateescape gives back the exact bytes
            assert abs(got.mtime - info.mtime_ns / 1e9) < 1e-6
            assert got.uid == info.uid and got.gid == info.gid and got.mode == info.mode & 0o7777
            if info.type is MemberType.FILE:
                assert got.isreg() and got.size == len(body)
                assert got.pax_headers["FS3G.sha256"] == info.sha256
                assert archive.extractfile(got).read() == body
            elif info.type is MemberType.SYMLINK:
                assert got.issym() and os.fsencode(got.linkname) == info.link_target
            else:
                assert got.islnk() and os.fsencode(got.linkname) == info.link_target[1:]
        assert os.fsencode(read[HOSTILE.index(LONG)].name) == LONG[1:]


# -- GNU tar and bsdtar ------------------------------------------------------------------------------------------------

def gnu_escape(name: bytes) -> str:
    """A name as GNU tar's default `escape` quoting style lists it in the C locale."""
    named = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v",
             0x5C: "\\\\"}
    return "".join(named.get(c) or (chr(c) if 0x20 <= c < 0x7F else f"\\{c:03o}") for c in name)


@pytest.mark.parametrize("tool", ["tar", "bsdtar"])
def test_tar_tools_list_every_member(pack, tool):
    data, index, members = pack
    listed = tar("-tf", "-", input=data, tool=tool)
    assert listed.returncode == 0, listed.stderr
    if tool == "tar":
        assert listed.stdout.decode().splitlines() == [gnu_escape(i.path[1:]) for i, _ in members]
        # GNU tar 1.34 names the keywords it does not know, and says nothing else once told not to
        assert b"Ignoring unknown extended header keyword 'FS3G.sha256'" in listed.stderr
        quiet = tar("--warning=no-unknown-keyword", "-tf", "-", input=data)
        assert quiet.returncode == 0 and quiet.stderr == b""
    else:
        assert len(listed.stdout.splitlines()) == len(members)  # bsdtar escapes a newline too (\\n)
        assert b"r/bad\\377\\376name\n" in listed.stdout
    verbose = tar("-tvf", "-", input=data, tool=tool)
    assert verbose.returncode == 0 and b"alice" in verbose.stdout and b"plain.txt" in verbose.stdout


def walk(root: Path) -> dict[bytes, os.stat_result]:
    """Every entry under root by exact relative name, walking by directory descriptor (paths pass PATH_MAX)."""
    found = {}
    for top, dirs, files, fd in os.fwalk(os.fsencode(str(root))):
        rel = top[len(os.fsencode(str(root))) + 1:]
        for name in files + dirs:
            found[(rel + b"/" if rel else b"") + name] = os.stat(name, dir_fd=fd, follow_symlinks=False)
    return found


def read_at(root: Path, rel: bytes) -> bytes:
    fd = os.open(os.fsencode(str(root)), os.O_RDONLY)
    try:
        for part in rel.split(b"/")[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = rel.split(b"/")[-1]
        if stat.S_ISLNK(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
            return os.readlink(leaf, dir_fd=fd)
        ffd = os.open(leaf, os.O_RDONLY, dir_fd=fd)
        with os.fdopen(ffd, "rb") as f:
            return f.read()
    finally:
        os.close(fd)


@pytest.mark.parametrize("tool", ["tar", "bsdtar"])
def test_tar_tools_extract_exact_names_times_and_links(pack, tmp_path, tool):
    data, index, members = pack
    (tmp_path / "pack.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--warning=no-unknown-keyword"] if tool == "tar" else []
    done = tar(*args, "-xpf", str(tmp_path / "pack.tar"), "-C", str(out), tool=tool)
    assert done.returncode == 0, done.stderr
    found = walk(out)
    for info, body in members:
        rel = info.path[1:]
        st = found[rel]
        if info.type is MemberType.SYMLINK:
            assert stat.S_ISLNK(st.st_mode) and read_at(out, rel) == info.link_target
            continue
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o7777 == info.mode & 0o7777
        if info.type is MemberType.HARDLINK:
            first = found[info.link_target[1:]]
            assert (st.st_ino, st.st_nlink) == (first.st_ino, 2)
            continue
        assert read_at(out, rel) == body
        assert st.st_mtime_ns == extracted_mtime_ns(info.mtime_ns, tool)
        assert (st.st_uid, st.st_gid) == (info.uid, info.gid)  # run as root here, as tar -p keeps them
    assert set(found) - {i.path[1:] for i, _ in members} == {b"r", *_parents(LONG), b"r/caf\xc3\xa9"}


def extracted_mtime_ns(mtime_ns: int, tool: str) -> int:
    """GNU tar sets the exact time, before 1970 too. bsdtar (libarchive 3.6) applies the sign of "-S.F" to S alone
    (-315619199.876543211 becomes -315619199 + 0.876543211 s): exact from 1970 on, off before it (README, Packs)."""
    if tool == "tar" or mtime_ns >= 0:
        return mtime_ns
    seconds, fraction = divmod(-mtime_ns, 1_000_000_000)
    return -seconds * 1_000_000_000 + fraction


def _parents(path: bytes) -> set[bytes]:
    parts = path[1:].split(b"/")
    return {b"/".join(parts[:i]) for i in range(1, len(parts))}


def test_gnu_tar_lists_nanoseconds_and_keeps_them_on_extraction(tmp_path):
    data, _ = build_pack([file_member(b"/t/after", b"a", T2023), file_member(b"/t/before", b"b", T1960)])
    listed = tar("--warning=no-unknown-keyword", "--full-time", "-tvf", "-", input=data)
    assert b"2023-11-14 22:13:20.123456789 t/after" in listed.stdout
    # GNU tar 1.34 prints a time before 1970 with its seconds rounded toward zero (00:00:01.876543211 for
    # 00:00:00.123456789), a display quirk: extraction below sets the exact time.
    assert b"1960-01-01 00:00:0" in listed.stdout
    (tmp_path / "x").mkdir()
    done = tar("--warning=no-unknown-keyword", "-xf", "-", "-C", str(tmp_path / "x"), input=data)
    assert done.returncode == 0 and b"implausibly old time stamp" in done.stderr
    assert os.stat(tmp_path / "x/t/before").st_mtime_ns == T1960
    assert os.stat(tmp_path / "x/t/after").st_mtime_ns == T2023


@pytest.mark.parametrize("tool", ["tar", "bsdtar"])
def test_a_range_from_a_header_to_its_padded_data_end_is_a_tar_stream(pack, tmp_path, tool):
    """What `aws s3api get-object --range bytes=H-E` gives, E = data_offset + padded size - 1: the tools extract the
    one member though the end blocks are missing. Cut at the unpadded end, GNU tar fails (Unexpected EOF)."""
    data, index, members = pack
    i = HOSTILE.index(b"/r/bad\xff\xfename")
    entry = index[i]
    end = entry.data_offset + entry.size_bytes + len(padding(entry.size_bytes))
    out = tmp_path / "one"
    out.mkdir()
    args = ["--warning=no-unknown-keyword"] if tool == "tar" else []
    done = tar(*args, "-xf", "-", "-C", str(out), input=data[entry.header_offset:end], tool=tool)
    assert done.returncode == 0, done.stderr
    assert read_at(out, b"r/bad\xff\xfename") == members[i][1]
    assert set(walk(out)) == {b"r", b"r/bad\xff\xfename"}
    if tool == "tar":
        cut = tar("-xf", "-", "-C", str(out), input=data[entry.header_offset:entry.data_end])
        assert cut.returncode == 2 and b"Unexpected EOF" in cut.stderr


# -- PackRef and keys --------------------------------------------------------------------------------------------------

def test_pack_ref_round_trips_and_refuses_garbage():
    ref = PackRef(PACK, 512 * 10**9, 512 * 10**9 + 1536, 2**40)
    data = ref.encode()
    assert len(data) < 80 and PackRef.decode(data, "w") == ref and ref.data_end == 512 * 10**9 + 1536 + 2**40
    assert PackRef.decode(memoryview(data), "w") == ref
    bad = [b"", data[:21], b"\2" + data[1:], data[:21] + b"packs/nope.tar", data[:21] + b"\xff" * 20,
           data[:21] + ("/" + PACK).encode(), PackRef(PACK, 7, 7 + 1024, 1).encode(),
           PackRef(PACK, 0, 512, 1).encode()]
    for b in bad:
        with pytest.raises(PackFormatError, match="catalog.rec"):
            PackRef.decode(b, "catalog.rec")


def test_key_helpers():
    assert pack_key("labs/genomics", RUN, 3, 1) == f"labs/genomics/{PACK}"
    assert pack_key("", RUN, 1234567, 123456) == f"packs/{RUN}/1234567-123456.tar"
    assert index_key(f"labs/g/{PACK}") == f"labs/g/{PACK}{INDEX_SUFFIX}"
    assert relative_to_prefix("labs/g", f"labs/g/{PACK}") == PACK and relative_to_prefix("", PACK) == PACK
    assert absolute_key("labs/g", PACK) == f"labs/g/{PACK}" and absolute_key("", PACK) == PACK
    assert is_pack_key(PACK) and is_pack_key(f"labs/g/{PACK}") and not is_pack_key(PACK + ".idx")
    assert is_index_key(PACK + ".idx") and is_index_key(f"x/{PACK}.idx") and not is_index_key(PACK)
    assert not is_pack_key(f"smallfile/r/{PACKS_DIR}x/{RUN}/000003-00001.tar")
    assert not is_pack_key("packs/20261201T1200Z-1a2b3c4d/000003-00001.tar")
    assert run_id_of(f"p/{PACK}") == RUN
    for call in (lambda: pack_key("", "bad", 0, 0), lambda: pack_key("", RUN, -1, 0), lambda: index_key("x.tar"),
                 lambda: relative_to_prefix("labs/g", "labs/gx/a"), lambda: relative_to_prefix("labs/g", "labs/g/")):
        with pytest.raises(ValueError):
            call()


# -- the index ---------------------------------------------------------------------------------------------------------

def test_index_round_trips_and_zcat_reads_it(pack, tmp_path):
    data, index, members = pack
    writer = IndexWriter(PACK, RUN)
    for entry in index:
        writer.add(entry)
    blob = writer.finish(len(data))
    header, entries = read_index(io.BytesIO(blob), PACK + ".idx", pack=PACK)
    assert header == IndexHeader(PACK, len(index), len(data), RUN)
    assert list(entries) == index
    (tmp_path / "i.idx").write_bytes(blob)
    text = subprocess.run(["zcat", str(tmp_path / "i.idx")], capture_output=True, check=True).stdout
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"format": "fs3g-pack-index", "version": 1, "pack": PACK, "members": len(index),
                        "pack_bytes": len(data), "run_id": RUN}
    assert lines[1]["path"] == "r/plain.txt" and lines[1]["type"] == "0" and len(lines[1]["sha256"]) == 64
    assert lines[1 + HOSTILE.index(b"/r/bad\xff\xfename")]["path"] == "r/bad%FF%FEname"
    assert lines[1 + HOSTILE.index(b"/r/new\nline")]["path"] == "r/new%0Aline"
    odd = next(line for line in lines[1:] if line["path"] == "r/sym-odd%0A")
    assert odd["link"] == "../bad%FF%FEname" and odd["type"] == "2" and "sha256" not in odd
    assert next(line for line in lines[1:] if line["path"] == "r/hard%FF")["link"] == "r/bad%FF%FEname"


def test_index_writer_refuses_overlaps_and_a_short_pack():
    writer = IndexWriter(PACK, RUN)
    entry = IndexEntry(b"/a", MemberType.FILE, 0, 1024, 10, 0, 0o100644, 0, 0, "0" * 64)
    writer.add(entry)
    with pytest.raises(ValueError):
        writer.add(entry)
    with pytest.raises(ValueError):
        writer.finish(2048)
    with pytest.raises(ValueError):
        IndexWriter(PACK, "20261201T120000Z-ffffffff")


def _index(lines: list, *, header: dict | None = None, raw: bytes | None = None) -> bytes:
    head = header or {"format": "fs3g-pack-index", "version": 1, "pack": PACK, "members": len(lines),
                      "pack_bytes": 1 << 20, "run_id": RUN}
    text = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
                    for line in [head, *lines])
    return gzip.compress(raw if raw is not None else text)


def _entry(**change) -> dict:
    base = {"path": "r/a", "type": "0", "header_offset": 0, "data_offset": 1024, "size": 5, "mtime_ns": -1,
            "mode": 0o100644, "sha256": "a" * 64, "uid": 0, "gid": 0}
    base.update(change)
    return {k: v for k, v in base.items() if v is not None}


def _read_all(blob: bytes) -> list[IndexEntry]:
    header, entries = read_index(io.BytesIO(blob), "lab/" + PACK + ".idx")
    return list(entries)


def test_index_reads_links_and_hostile_paths_undecided():
    blob = _index([_entry(path="r/..%2F..%2Fetc", header_offset=0),
                   _entry(path="r/s", type="2", size=0, sha256=None, link="/abs/..", header_offset=2048,
                          data_offset=3072),
                   _entry(path="r/h", type="1", size=0, sha256=None, link="r/..%2Fa", header_offset=3072,
                          data_offset=4096)])
    a, s, h = _read_all(blob)
    assert a.path == b"/r/../../etc" and s.link == b"/abs/.." and h.link == b"/r/../a"


@pytest.mark.parametrize("lines, message", [
    ([b"not json"], "line 2: index line is not JSON"),
    ([_entry(size=True)], "line 2: index field 'size' is not a int"),
    ([_entry(size=1.0)], "line 2: index field 'size'"),
    ([_entry(size=-1)], "line 2: index field 'size' is out of range"),
    ([_entry(uid=1 << 32)], "line 2: index field 'uid' is out of range"),
    ([_entry(mtime_ns=1 << 63)], "line 2: index field 'mtime_ns' is out of range"),
    ([_entry(type="5")], "line 2: index entry type"),
    ([_entry(path=7)], "line 2: index field 'path' is not a str"),
    ([_entry(path="")], "line 2: index entry path is empty"),
    ([_entry(path="a%00b")], "line 2: .*NUL"),
    ([_entry(sha256=None)], "line 2: index file entry needs a sha256"),
    ([_entry(sha256="A" * 64)], "line 2: index file entry needs a sha256"),
    ([_entry(link="x")], "line 2: index file entry needs a sha256 .* and no link"),
    ([_entry(type="2", size=0, sha256=None)], "line 2: index link entry needs a link"),
    ([_entry(type="2", size=3, sha256=None, link="x")], "line 2: index link entry"),
    ([_entry(extra=1)], "line 2: index fields 'extra' are not"),
    ([b'{"path": "r/a", "path": "r/b"}'], "line 2: index line is not JSON: a key appears twice"),
    ([_entry(header_offset=100)], "line 2: index offsets"),
    ([_entry(data_offset=512)], "line 2: index offsets"),
    ([_entry(), _entry(header_offset=0, path="r/b")], "line 3: member at 0 is not after"),
    ([_entry(header_offset=1024, data_offset=2048, size=1 << 20)], "line 2: member ends at"),
    ([b"[1, 2]"], "line 2: index entry is not a JSON object"),
    ([b'{"path": "r/\\ud800", "type": "0"}'], "line 2: index field 'path' is not text"),
    ([_entry(type="2", size=0, sha256=None, link="\ud800")], "line 2: index field 'link' is not text"),
    ([_entry(sha256="\udcff" * 64)], "line 2: index file entry needs a sha256"),
    ([b"1" * 70000], "line 2: index line is too long"),
])
def test_bad_index_lines_are_refused_naming_the_line(lines, message):
    with pytest.raises(PackFormatError, match=message) as caught:
        _read_all(_index(lines))
    assert str(caught.value).startswith(f"lab/{PACK}.idx line ")


@pytest.mark.parametrize("header, message", [
    ({"format": "tar"}, "line 1: not an fs3g pack index"),
    ({"format": "fs3g-pack-index", "version": 2}, "line 1: index version 2"),
    ({"format": "fs3g-pack-index", "version": 1, "pack": "x.tar", "members": 0, "pack_bytes": 1024,
      "run_id": RUN}, "line 1: index header names"),
    ({"format": "fs3g-pack-index", "version": 1, "pack": PACK, "members": 0, "pack_bytes": 1024,
      "run_id": "20261201T120000Z-00000000"}, "line 1: index run_id"),
    ({"format": "fs3g-pack-index", "version": 1, "pack": PACK, "members": 0, "pack_bytes": 2000,
      "run_id": RUN}, "line 1: pack_bytes 2000 is not a whole number of blocks"),
    ({"format": "fs3g-pack-index", "version": 1, "pack": PACK, "members": 2, "pack_bytes": 1024,
      "run_id": RUN}, "line 1: index field 'members' is out of range"),
])
def test_bad_index_headers_are_refused(header, message):
    with pytest.raises(PackFormatError, match=message):
        _read_all(_index([], header=header))


def test_random_damage_to_an_index_gives_entries_or_pack_format_error(pack):
    data, index, members = pack
    writer = IndexWriter(PACK, RUN)
    for entry in index:
        writer.add(entry)
    text = bytearray(gzip.decompress(writer.finish(len(data))))
    rng = random.Random(16)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(1500):
        damaged = bytearray(text)
        for _ in range(rng.choice((1, 1, 3))):
            damaged[rng.randrange(len(damaged))] = rng.choice(b'0123456789"{}[],:\\u\n %\xff')
        blob = gzip.compress(bytes(damaged))
        if rng.random() < 0.2:
            blob = blob[:rng.randrange(len(blob))]
        try:
            header, entries = read_index(io.BytesIO(blob), "fuzz")
            assert all(isinstance(e, IndexEntry) for e in entries)
            outcomes["read"] += 1
        except PackFormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 500 and outcomes["read"] > 0


def test_member_counts_and_the_container_are_checked():
    head = {"format": "fs3g-pack-index", "version": 1, "pack": PACK, "pack_bytes": 1 << 20, "run_id": RUN}
    with pytest.raises(PackFormatError, match="1 members, the header says 2"):
        _read_all(_index([_entry()], header={**head, "members": 2}))
    with pytest.raises(PackFormatError, match="line 3: more members than the header's 1"):
        _read_all(_index([_entry(), _entry(header_offset=2048, data_offset=3072)], header={**head, "members": 1}))
    with pytest.raises(PackFormatError, match="index is empty"):
        _read_all(gzip.compress(b""))
    whole = _index([_entry()])
    for blob in (b"not gzip at all", whole[:-9], zlib.compress(b"{}")):
        with pytest.raises(PackFormatError, match="gzip"):
            _read_all(blob)
    with pytest.raises(PackFormatError, match="unterminated"):
        _read_all(gzip.compress(json.dumps({**head, "members": 0}).encode()))
    with pytest.raises(PackFormatError, match="describes"):
        read_index(io.BytesIO(whole), "w", pack=f"packs/{RUN}/000003-00002.tar")
    assert MAX_INDEX_LINE_BYTES < 70000


def test_one_pass_hashes_are_the_tree_hash_and_the_sha256_on_both_sides_of_one_leaf():
    from fs3g_hpc.model.treehash import LEAF_BYTES, TreeHasher, tree_hash_and_sha256

    rng = random.Random(7)
    for size in (0, 1, 4096, LEAF_BYTES - 1, LEAF_BYTES, LEAF_BYTES + 1, 3 * LEAF_BYTES + 5):
        data = rng.randbytes(size)
        hasher = TreeHasher()
        hasher.update(data)
        assert tree_hash_and_sha256(data) == (hasher.hexdigest(), hashlib.sha256(data).hexdigest()), size
    # Past one leaf the two differ: the shortcut must not be taken there.
    big = rng.randbytes(LEAF_BYTES + 1)
    tree, sha = tree_hash_and_sha256(big)
    assert tree != sha


def test_pax_record_lengths_count_their_own_digits_across_digit_boundaries():
    """Every path length from 1 to 1,100 bytes (records whose length, counting its own digits, crosses 10, 100 and
    1,000 bytes): the strict parser takes each header back, and Python's tarfile reads the same name."""
    for n in range(1, 1101):
        info = MemberInfo(path=b"/" + b"p" * n, type=MemberType.FILE, size_bytes=0, mtime_ns=1, atime_ns=1,
                          mode=0o100644, uid=0, gid=0, uname="u", gname="g", sha256=hashlib.sha256(b"").hexdigest())
        header = member_header(info)
        assert parse_member_header(header, "x") == (info, len(header)), n
        if n in (4, 5, 80, 81, 82, 985, 986, 987, 988):
            with tarfile.open(fileobj=io.BytesIO(header + END_OF_ARCHIVE)) as tar:
                assert tar.getnames() == ["p" * n]


def test_header_checksums_and_index_lines_are_what_the_generic_encoders_give(pack):
    """The fast paths of the writer (the ustar checksum through Adler-32 halves, index lines formatted directly)
    give exactly the bytes of the plain definitions: the byte sum of each header block with its checksum field as
    spaces, and the JSON encoder's line of `to_json()`."""
    data, index, members = pack
    blocks = 0
    for entry in index:
        for offset in (entry.header_offset, entry.data_offset - BLOCK):  # the pax header's block, the member's
            block = data[offset:offset + BLOCK]
            assert int(block[148:154], 8) == sum(block[:148] + b" " * 8 + block[156:]), (entry.path, offset)
            blocks += 1
        assert entry.line() == json.dumps(entry.to_json(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert blocks >= 2 * len(index)
    # A block of 0xff bytes in every text field sums past 65,521 (Adler-32's modulus): still exact.
    heavy = MemberInfo(b"/" + b"\xff" * 4000, MemberType.SYMLINK, 0, T2023, T2023, 0o120777, 8 ** 7 - 1, 8 ** 7 - 1,
                       "\udcff" * 32, "\udcff" * 32, link_target=b"\xff" * 4000)
    header = member_header(heavy)
    member = header[-BLOCK:]
    assert sum(member[:148] + b" " * 8 + member[156:]) > 65521
    assert int(member[148:154], 8) == sum(member[:148] + b" " * 8 + member[156:])
    assert parse_member_header(header, "x") == (heavy, len(header))
