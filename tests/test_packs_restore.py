"""Restores from packs, against SeaweedFS and moto: a packed tree comes back byte for byte (names, ns mtimes, modes,
symlinks, hard links); a member altered in the bucket is detected and not written; one file costs one ranged GET;
a large selection one streamed GET per pack; a restore from the bucket alone reads the indexes (newest copy wins);
crafted index entries cannot write outside the destination; a GLACIER pack is restore-requested once.

Packs here are written by tests/pack_fixture.py (model/packs.py's writer and boto3) with a catalog whose records
carry their locations; requests are counted with a botocore `before-send` hook on the restore's own clients."""

from __future__ import annotations

import json
import os
import stat
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fs3g_hpc.config import RestoreTier, load_policy
from fs3g_hpc.model.packs import MemberType, absolute_key
from fs3g_hpc.model.records import read_records
from fs3g_hpc.restore.layout import default_client
from fs3g_hpc.restore.merge import merge_restore
from fs3g_hpc.restore.select import RestoreRequest, prepare_restore
from fs3g_hpc.restore.stage import StageVerdict, preview_stage, stage
from fs3g_hpc.restore.task import restore_shard
from fs3g_hpc.runs.catalog import catalog_path

import helpers
import pack_fixture
from pack_fixture import Member, build_pack, member_of, pack_tree, upload

T0 = 1_600_000_000_123_456_789


class Requests:
    """Every S3 request the restore's clients send: (method, key, query, Range)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str | None]] = []

    def factory(self, policy):
        client = default_client(policy)
        client.meta.events.register("before-send.s3", self._on_send)
        return client

    def _on_send(self, request, **_):
        url = urlsplit(request.url)
        key = unquote(url.path).split("/", 2)[-1]
        rng = request.headers.get("Range")
        self.sent.append((request.method, key, url.query, rng.decode() if isinstance(rng, bytes) else rng))

    def gets(self, suffix: str = ".tar") -> list[tuple[str, str, str, str | None]]:
        return [r for r in self.sent if r[0] == "GET" and r[1].endswith(suffix) and "list-type" not in r[2]]

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for method, _key, query, rng in self.sent:
            kind = ("LIST" if "list-type" in query else "RESTORE" if "restore" in query
                    else "RANGED-GET" if method == "GET" and rng else method)
            out[kind] = out.get(kind, 0) + 1
        return out


def make_tree(root: Path) -> None:
    """Hostile names, modes, nanosecond times, symlinks (relative, absolute, dangling), hard links within and across
    directories, an empty file and one of more than one 1 MiB tree-hash leaf."""
    r = os.fsencode(root)
    for d in (b"/proj/deep", b"/weird", b"/links/a", b"/links/b"):
        os.makedirs(r + d, exist_ok=True)
    files = {
        b"/proj/a.txt": b"alpha\n", b"/proj/empty": b"", b"/proj/deep/b.bin": os.urandom(70_000),
        b"/proj/big.bin": os.urandom(1_500_000), b"/weird/with space": b"space", b"/weird/tab\there": b"tab",
        b"/weird/new\nline": b"newline", b"/weird/back\\slash%41": b"percent", b"/weird/\xff\xfeinvalid": b"latin",
        b"/weird/" + b"n" * 250: b"long name", b"/links/a/one": b"one inode, three names\n",
    }
    for i, (rel, data) in enumerate(sorted(files.items())):
        with open(r + rel, "wb") as f:
            f.write(data)
        os.chmod(r + rel, (0o640, 0o755, 0o600, 0o444)[i % 4])
        os.utime(r + rel, ns=(T0 + i, T0 + 1000 * i))
    os.link(r + b"/links/a/one", r + b"/links/a/two")
    os.link(r + b"/links/a/one", r + b"/links/b/three")
    os.symlink(b"../a.txt", r + b"/proj/deep/rel-link")
    os.symlink(b"/etc/passwd", r + b"/weird/abs-link")
    os.symlink(b"does/not/exist", r + b"/weird/dangling")
    os.utime(r + b"/proj/deep/rel-link", ns=(T0, T0 + 77), follow_symlinks=False)


def assert_same_tree(src: Path, dst: Path) -> int:
    count = 0
    s = os.fsencode(src)
    for directory, dirs, names in os.walk(s):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            a = os.path.join(directory, name)
            b = os.fsencode(dst) + a[len(s):]
            sa, sb = os.lstat(a), os.lstat(b)
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), a
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b), a
            else:
                assert open(a, "rb").read() == open(b, "rb").read(), a
                assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), a
            assert sa.st_mtime_ns == sb.st_mtime_ns, a
            if os.geteuid() == 0:
                assert (sa.st_uid, sa.st_gid) == (sb.st_uid, sb.st_gid), a
            count += 1
    return count


def policy_for(tmp: Path, name: str, root: Path, bucket, max_files: int = 100):
    path = helpers.write_policy(tmp, root, bucket, name=name, prefix=f"labs/{name}", shards=f"max_files: {max_files}")
    return load_policy(path)


def restore(policy, dest: Path, run_dir: Path, requests: Requests, paths: tuple[str, ...] = ()):
    """Select, stage, every shard, merge: in this process, on clients whose requests are counted."""
    _layout, header = prepare_restore(policy, RestoreRequest(paths, dest, RestoreTier.STANDARD, 1), run_dir,
                                      client_factory=requests.factory)
    assert stage(run_dir, client_factory=requests.factory).verdict is StageVerdict.READY
    for shard in header["shards"]:
        restore_shard(run_dir, shard["index"], environ={}, client_factory=requests.factory)
    return merge_restore(run_dir)


def failures(run_dir: Path) -> dict[str, dict]:
    return {json.loads(line)["path"]: json.loads(line)
            for line in (run_dir / "failures.jsonl").read_text().splitlines()}


# -- round trip ----------------------------------------------------------------------------------------------------------

def test_a_packed_tree_restores_byte_identical_with_one_streamed_get_per_pack(bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root)
    policy = policy_for(tmp_path, "prt", root, bucket)
    refs = pack_tree(bucket.client, policy, root, per_pack=6)
    packs = {r.pack for r in refs.values()}
    assert len(packs) == 3
    assert all(e.location for e in read_records(catalog_path(policy)) if e.kind.name != "DIRECTORY")

    requests = Requests()
    dest = tmp_path / "restored"
    report = restore(policy, dest, tmp_path / "run1", requests)
    assert report.ok, report.data
    count = assert_same_tree(root, dest)
    assert report.data["restored"]["files"] == count == 16
    one = [dest / "links" / "a" / "one", dest / "links" / "a" / "two", dest / "links" / "b" / "three"]
    assert len({os.stat(p).st_ino for p in one}) == 1 and os.stat(one[0]).st_nlink == 3
    assert report.data["restored"]["linked"] == 2
    layouts = report.data["layouts"]
    assert layouts["packed"]["files"] == 14 and layouts["objects"]["files"] == 0
    # Everything of each pack is wanted: one streamed GET per pack, from its first member to its last.
    gets = requests.gets()
    assert len(gets) == layouts["packed"]["gets"] == len(packs) == 3
    for pack in packs:
        ends = [(r.header_offset, r.data_end) for r in refs.values() if r.pack == pack]
        (get,) = [g for g in gets if g[1].endswith(pack)]
        assert get[3] == f"bytes={min(a for a, _ in ends)}-{max(b for _, b in ends) - 1}"
    assert not requests.gets(".idx")  # the catalog knows where every member is: no index read
    assert not list(dest.rglob(".fs3g-restore-*"))

    # Again: everything is found in place; no pack is read.
    again = Requests()
    report = restore(policy, dest, tmp_path / "run2", again)
    assert report.ok and report.data["restored"]["files"] == 0 and report.data["already_present"] == 16
    assert not again.gets()


def test_one_file_from_a_pack_costs_one_ranged_get(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    for i in range(40):
        (root / "d" / f"f{i:02d}").write_bytes(os.urandom(3000 + i))
    policy = policy_for(tmp_path, "one", root, seaweed_bucket)
    refs = pack_tree(seaweed_bucket.client, policy, root)
    wanted = os.fsencode(root / "d" / "f17")
    requests = Requests()
    dest = tmp_path / "one"
    report = restore(policy, dest, tmp_path / "run", requests, paths=(str(root / "d" / "f17"),))
    assert report.ok and report.data["restored"]["files"] == 1
    assert (dest / "f17").read_bytes() == (root / "d" / "f17").read_bytes()
    ref = refs[wanted]
    # The whole cost: the stage's one listing of packs/<run_id>/ (sizes and classes) and one ranged GET of exactly
    # the member's headers and data. No HEAD, no index.
    assert requests.kinds() == {"LIST": 1, "RANGED-GET": 1}, requests.sent
    (get,) = requests.gets()
    assert get[3] == f"bytes={ref.header_offset}-{ref.data_end - 1}"


# -- altered in the bucket -----------------------------------------------------------------------------------------------

def test_a_member_altered_in_the_bucket_is_detected_and_not_written(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}").write_bytes(bytes([65 + i]) * (1000 + i))
    policy = policy_for(tmp_path, "flip", root, seaweed_bucket)
    refs = pack_tree(seaweed_bucket.client, policy, root)
    key = absolute_key(policy.s3.prefix, refs[os.fsencode(root / "f0")].pack)
    data_ref, header_ref = refs[os.fsencode(root / "f2")], refs[os.fsencode(root / "f4")]
    pack_fixture.flip_byte(seaweed_bucket.client, seaweed_bucket.name, key, data_ref.data_offset + 10)
    pack_fixture.flip_byte(seaweed_bucket.client, seaweed_bucket.name, key, header_ref.data_offset - 512 + 100)

    dest = tmp_path / "restored"
    run = tmp_path / "run"
    report = restore(policy, dest, run, Requests())
    assert not report.ok and report.data["restored"]["files"] == 4 and report.data["failed"]["files"] == 2
    failed = failures(run)
    assert failed[str(root / "f2")]["outcome"] == "corrupt" and "SHA-256" in failed[str(root / "f2")]["reason"]
    assert failed[str(root / "f4")]["outcome"] == "corrupt"
    assert not (dest / "f2").exists() and not (dest / "f4").exists()
    for i in (0, 1, 3, 5):
        assert (dest / f"f{i}").read_bytes() == (root / f"f{i}").read_bytes()
    assert not list(dest.rglob(".fs3g-restore-*"))


# -- from the bucket alone -----------------------------------------------------------------------------------------------

def test_restore_from_the_bucket_alone_reads_the_indexes_and_the_newest_copy_wins(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / name).write_bytes(f"{name} first\n".encode())
    os.link(root / "a", root / "a-link")
    policy = policy_for(tmp_path, "alone", root, seaweed_bucket)
    pack_tree(seaweed_bucket.client, policy, root, run_id="20250101T000000Z-aaaaaaaa", write_catalog=False)
    (root / "b").write_bytes(b"b second, in a later run\n")
    os.utime(root / "b", ns=(T0, T0))
    os.unlink(root / "a-link")
    keep = {n: (root / n).read_bytes() for n in ("a", "c")}
    moved = tmp_path / "later"
    moved.mkdir()
    os.rename(root / "a", moved / "a")
    os.rename(root / "c", moved / "c")
    pack_tree(seaweed_bucket.client, policy, root, run_id="20250601T000000Z-bbbbbbbb", write_catalog=False)
    os.rename(moved / "a", root / "a")
    os.rename(moved / "c", root / "c")
    # c also as its own object, uploaded now: newer than both runs.
    from fs3g_hpc.model.keys import KeyClass, object_key
    from fs3g_hpc.model.treehash import tree_hash
    obj = b"c as its own object\n"
    seaweed_bucket.client.put_object(
        Bucket=seaweed_bucket.name, Key=object_key(policy.s3.prefix, KeyClass.SMALL, os.fsencode(root / "c")).key,
        Body=obj, Metadata={"mtime": "1600000000.000000005", "mode": "100600", "sha256hashtree": tree_hash(obj)})
    assert not catalog_path(policy).exists()

    requests = Requests()
    dest = tmp_path / "restored"
    run = tmp_path / "run"
    report = restore(policy, dest, run, requests)
    assert report.ok, report.data
    assert (dest / "a").read_bytes() == keep["a"]
    assert (dest / "a-link").read_bytes() == keep["a"]  # a hard-link member: its first link's data, its own name
    assert (dest / "b").read_bytes() == b"b second, in a later run\n" and os.stat(dest / "b").st_mtime_ns == T0
    assert (dest / "c").read_bytes() == obj
    assert report.data["restored"]["files"] == 4 and report.data["refused"] == 0
    assert len(requests.gets(".idx")) == 2  # each index read once, as a stream


# -- crafted indexes ---------------------------------------------------------------------------------------------------

def test_crafted_index_entries_cannot_write_outside_the_destination(moto_bucket, tmp_path):
    """The 2025-26 tarfile filter bypasses (CVE-2025-4517, -4330, -4138, -4435) as the anchor: names that climb out,
    absolute names, a symlink then a member written through it, links pointing out, NUL, and an index that lies
    about the member it points at."""
    root = tmp_path / "data"
    r = os.fsencode(root)
    root.mkdir()
    st = os.stat(tmp_path)
    tag = uuid.uuid4().hex[:8].encode()

    def file(path: bytes, data: bytes = b"payload\n") -> Member:
        m = member_of(path, st, data)
        m.info = replace(m.info, mode=0o100644)
        return m

    def link(path: bytes, target: bytes, mtype: MemberType = MemberType.SYMLINK) -> Member:
        m = member_of(path, st, link=target, mtype=mtype)
        m.info = replace(m.info, mode=0o120777 if mtype is MemberType.SYMLINK else 0o100644)
        return m

    text = os.fsdecode(r[1:])  # the root in the index's text form (no leading /)
    members = [
        file(r + b"/ok/fine"),                                   # 0 restored
        file(r + b"/placeholder-dotdot"),                        # 1 index: ../x (reads as /../x)
        file(r + b"/placeholder-abs"),                           # 2 index: /etc/fs3g-<tag>
        file(r + b"/placeholder-climb"),                         # 3 index: ROOT/a/../../x
        link(r + b"/s", b"/"),                                   # 4 a symlink to /
        file(r + b"/s/etc/fs3g-" + tag),                         # 5 then a file under that symlink's name
        link(r + b"/up", b"../../../.."),                        # 6 a symlink climbing out
        file(r + b"/up/escaped-" + tag),                         # 7 and a file through it
        link(r + b"/h", b"/etc/passwd", MemberType.HARDLINK),    # 8 a hard link out of the tree
        link(r + b"/h2", r + b"/s", MemberType.HARDLINK),        # 9 a hard link to the symlink to /
        link(r + b"/h3", r + b"/ok/fine", MemberType.HARDLINK),  # 10 index: link ../../etc/passwd
        link(r + b"/sl", b"harmless"),                           # 11 index: its target is /etc/shadow instead
        file(r + b"/other"),                                     # 12 index says ROOT/claimed: the header differs
        file(r + b"/placeholder-nul"),                           # 13 index: NUL in the name (ends the index)
        file(r + b"/after-nul"),                                 # 14 not read: after the bad line
    ]
    craft = {1: {"path": "../x"}, 2: {"path": f"etc/fs3g-{tag.decode()}"},
             3: {"path": f"{text}/a/../../x-{tag.decode()}"}, 10: {"link": "../../etc/passwd"},
             11: {"link": "/etc/shadow"}, 12: {"path": f"{text}/claimed"}, 13: {"path": f"{text}/nul%00name"}}

    policy = policy_for(tmp_path, "craft", root, moto_bucket)
    built = build_pack(f"packs/{pack_fixture.RUN_ID}/000000-00000.tar", members)
    built.index = pack_fixture.craft_index(built.index, craft)
    upload(moto_bucket.client, moto_bucket.name, policy.s3.prefix, built)
    arena = tmp_path / "arena"
    arena.mkdir()
    dest = arena / "dest"
    run = tmp_path / "run"
    report = restore(policy, dest, run, Requests())
    assert not report.ok
    refused = [json.loads(line) for line in (run / "refused.jsonl").read_text().splitlines()]
    reasons = {item["path"]: item["reason"] for item in refused}
    assert any(p.endswith("x-" + tag.decode()) and ".." in why for p, why in reasons.items()), reasons
    assert any(p.endswith("/h") and "does not hold" in why for p, why in reasons.items())
    assert any(p.endswith("/h2") and "does not hold" in why for p, why in reasons.items())
    assert any(p.endswith("/h3") and "does not hold" in why for p, why in reasons.items())
    assert any(p.endswith(".tar.idx") and "NUL" in why and "line 15" in why for p, why in reasons.items()), reasons
    assert len(refused) == 5, refused
    failed = failures(run)
    assert failed[str(root / "claimed")]["outcome"] == "mismatch"
    assert failed[str(root / "sl")]["outcome"] == "corrupt"  # the header's target is not the index's
    through = [f for p, f in failed.items() if p.endswith("fs3g-" + tag.decode()) or "escaped-" in p]
    assert len(through) == 2 and {f["outcome"] for f in through} == {"refused"}, failed
    # What was written: the good file and the two symlinks, as symlinks (never followed), nothing else anywhere.
    assert (dest / "ok" / "fine").read_bytes() == b"payload\n"
    assert os.readlink(dest / "s") == "/" and os.readlink(dest / "up") == "../../../.."
    written = sorted(str(p.relative_to(arena)) for p in arena.rglob("*"))
    assert written == ["dest", "dest/ok", "dest/ok/fine", "dest/s", "dest/up"], written
    assert not (Path("/etc") / f"fs3g-{tag.decode()}").exists() and not Path("/x").exists()
    assert not list(tmp_path.glob(f"**/escaped-{tag.decode()}")) and not list(tmp_path.glob("**/x-*"))
    assert not (dest / "claimed").exists() and not (dest / "other").exists() and not os.path.lexists(dest / "sl")


# -- Glacier -------------------------------------------------------------------------------------------------------------

def test_a_glacier_pack_is_restore_requested_once_for_all_its_members(moto_bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(7):
        (root / f"f{i}").write_bytes(os.urandom(2000 + i))
    policy = policy_for(tmp_path, "cold", root, moto_bucket, max_files=2)  # its members in four shards
    refs = pack_tree(moto_bucket.client, policy, root, storage_class="GLACIER")
    (pack,) = {r.pack for r in refs.values()}
    listed = moto_bucket.client.list_objects_v2(Bucket=moto_bucket.name, Prefix="labs/cold/packs/")["Contents"]
    assert {o["Key"]: o["StorageClass"] for o in listed}[absolute_key(policy.s3.prefix, pack)] == "GLACIER"

    requests = Requests()
    dest = tmp_path / "restored"
    run = tmp_path / "run"
    _layout, header = prepare_restore(policy, RestoreRequest((), dest, RestoreTier.STANDARD, 1), run,
                                      client_factory=requests.factory)
    assert header["shard_count"] == 4
    # The dry run's preview: one pack to thaw, its whole size.
    preview = preview_stage(run, client_factory=requests.factory)
    size = next(o["Size"] for o in listed if o["Key"].endswith(".tar"))
    assert preview.packs == {"to_request": [1, size]} and preview.packed == [7, sum(2000 + i for i in range(7))]
    # Before the stage: the pack cannot be read; every member says so, nothing is written.
    restore_shard(run, 0, environ={}, client_factory=requests.factory)
    assert not dest.exists() or not list(dest.iterdir())
    lines = [json.loads(line) for line in (run / "results" / "shard-000000.failures.jsonl").read_text().splitlines()]
    assert {item["outcome"] for item in lines} == {"not-ready"} and len(lines) == 2

    report_stage = stage(run, client_factory=requests.factory)
    assert report_stage.requested == 1 and report_stage.verdict is StageVerdict.READY
    assert requests.kinds().get("RESTORE") == 1  # once for the pack, not once per member or per shard
    for shard in header["shards"]:
        restore_shard(run, shard["index"], environ={}, client_factory=requests.factory)
    report = merge_restore(run)
    assert report.ok and report.data["restored"]["files"] == 7, report.data
    assert_same_tree(root, dest)


def test_members_far_apart_are_read_with_one_ranged_get_each_on_one_version(seaweed_bucket, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    names = ["a", "b-filler", "c", "d-filler", "e"]  # packed in this order
    for name in names:
        (root / name).write_bytes(os.urandom(3 * 1024 * 1024 if "filler" in name else 5000))
    policy = policy_for(tmp_path, "far", root, seaweed_bucket)
    refs = pack_tree(seaweed_bucket.client, policy, root)
    requests = Requests()
    dest = tmp_path / "restored"
    report = restore(policy, dest, tmp_path / "run", requests, paths=(str(root / "a"), str(root / "e")))
    assert report.ok and report.data["restored"]["files"] == 2
    assert (dest / "a").read_bytes() == (root / "a").read_bytes() and (dest / "e").read_bytes() == (
        root / "e").read_bytes()
    ranges = sorted(g[3] for g in requests.gets())
    expected = sorted(f"bytes={refs[os.fsencode(root / n)].header_offset}-{refs[os.fsencode(root / n)].data_end - 1}"
                      for n in ("a", "e"))
    assert ranges == expected  # 6 MiB apart: two ranges, not the 6 MiB between them (the second If-Match the first)
    # A hard link whose first link is not selected: its data is read at the first link's member.
    os.link(root / "a", root / "a2")
    (root / "sub").mkdir()
    os.link(root / "a", root / "sub" / "a3")
    pack_tree(seaweed_bucket.client, policy, root, run_id="20261202T000000Z-0badcafe")
    report = restore(policy, tmp_path / "only-sub", tmp_path / "run2", Requests(), paths=(str(root / "sub"),))
    assert report.ok and (tmp_path / "only-sub" / "a3").read_bytes() == (root / "a").read_bytes()


def test_spans_join_close_members_and_take_the_whole_span_past_half_the_pack():
    from fs3g_hpc.model.packs import PackRef
    from fs3g_hpc.model.records import Entry, EntryKind
    from fs3g_hpc.restore.packs import Wanted, plan_spans

    def wanted(header_offset: int, size: int) -> Wanted:
        entry = Entry.of(b"/x", EntryKind.FILE, size, 0, 0, 0, 0o100644, 0, 0, 0, 0, 1)
        return Wanted(PackRef(f"packs/{pack_fixture.RUN_ID}/000000-00000.tar", header_offset, header_offset + 1024,
                              size), (entry,))

    mib = 1024 * 1024
    near = [wanted(0, 100), wanted(4096, 100), wanted(3 * mib, 100)]
    spans = plan_spans(near, pack_bytes=100 * mib)
    assert [(s.start, s.end, len(s.members)) for s in spans] == [(0, 4096 + 1124, 2), (3 * mib, 3 * mib + 1124, 1)]
    # More than half of a 4 MiB pack wanted: one span from the first to the last member.
    big = [wanted(0, 2 * mib), wanted(3 * mib + 512 * 1024, 100)]
    assert [(s.start, s.end) for s in plan_spans(big, pack_bytes=4 * mib)] == [(0, 3 * mib + 512 * 1024 + 1124)]
    assert len(plan_spans(big, pack_bytes=None)) == 2  # size unknown: 1.5 MiB apart, two ranges
    assert plan_spans([], pack_bytes=1) == []


def test_a_packed_link_the_destination_refuses_is_read_from_its_pack_as_a_copy(seaweed_bucket, tmp_path,
                                                                                monkeypatch):
    import errno

    root = tmp_path / "data"
    root.mkdir()
    (root / "a").write_bytes(b"one file, two names\n")
    os.link(root / "a", root / "b")
    policy = policy_for(tmp_path, "nolink", root, seaweed_bucket)
    pack_tree(seaweed_bucket.client, policy, root)

    def no_links(*args, **kwargs):  # a filesystem with no hard links, or a file at its link limit
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", no_links)
    requests = Requests()
    dest = tmp_path / "restored"
    report = restore(policy, dest, tmp_path / "run", requests)
    assert report.ok and report.data["restored"]["files"] == 2 and report.data["restored"]["linked"] == 0
    assert (dest / "a").read_bytes() == (dest / "b").read_bytes() == b"one file, two names\n"
    assert os.stat(dest / "a").st_ino != os.stat(dest / "b").st_ino
    assert len(requests.gets()) == 2  # the copy read from the pack again, at the first link's member
