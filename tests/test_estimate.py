"""`fs3g estimate`: costs checked against cases computed by hand from the shipped price table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fs3g_hpc.config import load_prices, policy_from_snapshot
from fs3g_hpc.errors import UsageError
from fs3g_hpc.estimate import (END_OF_ARCHIVE_BYTES, GB, INDEX_BYTES_PER_MEMBER, estimate, member_tar_bytes, render,
                               tally, tally_shards)
from fs3g_hpc.model.packs import PackRef
from fs3g_hpc.model.records import Entry, EntryKind
from fs3g_hpc.resources import DataDir, data_file

MIB = 1024 * 1024
PRICES = data_file(DataDir.CONFIGS, "pricing.yaml")


def policy(**storage):
    storage.setdefault("small_files", "objects")  # the per-object layout unless a test says packs
    return policy_from_snapshot({"lab": {"name": "est"}, "roots": ["/data"], "s3": {"bucket": "est-bucket"},
                                 "run_root": "/tmp/est-runs", "storage": storage,
                                 "uploader": {"buffer_size_bytes": 40 * MIB}, "restore": {"days": 7}}, "test policy")


def f(path: str, size: int) -> Entry:
    return Entry.of(path.encode(), EntryKind.FILE, size, 0, 0, 0, 0o100644, 0, 0, 0, 0, 1)


def link(path: str, target_len: int) -> Entry:
    return Entry.of(path.encode(), EntryKind.SYMLINK, target_len, 0, 0, 0, 0o120777, 0, 0, 0, 0, 1)


def run(entries, pol):
    prices = load_prices(PRICES, "us-east-1")
    t = tally(entries, pol, prices)
    return t, estimate(t, t, pol, prices)


def test_small_files_only():
    entries = [f(f"/data/d{d}/f{i}", 10_000) for d in range(10) for i in range(100)]
    t, e = run(entries, policy())
    assert (t.small_files, t.key_directories, t.large_files) == (1000, 10, 0)
    assert e.requests == {"PUT": 1000, "LIST": 11, "HEAD": 0, "transitions": 0}
    assert e.upload_total == pytest.approx(1000 / 1000 * 0.005 + 11 / 1000 * 0.005)
    assert e.storage_cost_month["STANDARD"] == pytest.approx(10_000_000 / GB * 0.023)
    assert e.storage_cost_month["GLACIER"] == 0 and e.early_deletion_exposure == 0
    bulk = next(r for r in e.restore if r["tier"] == "Bulk")
    assert bulk["retrieval"] == 0 and bulk["temporary_copy"] == 0
    assert bulk["total"] == pytest.approx(1000 / 1000 * 0.0004 + 10_000_000 / GB * 0.09)


def test_large_files_only_multipart_and_lifecycle():
    entries = [f("/data/big/a", 100 * MIB), f("/data/big/b", 100 * MIB)]  # 40 MiB parts: 3 each
    t, e = run(entries, policy(archive_storage_class="GLACIER"))
    assert (t.multipart_uploads, t.parts, t.single_put_large) == (2, 6, 0)
    # 2 tag PUTs at STANDARD; 6 parts + 2 creates + 2 completes at STANDARD (uploaded there, moved by lifecycle)
    assert e.requests == {"PUT": 12, "LIST": 2, "HEAD": 0, "transitions": 2}
    assert e.upload_cost["transitions to GLACIER"] == pytest.approx(2 / 1000 * 0.03)
    assert e.upload_total == pytest.approx(12 / 1000 * 0.005 + 2 / 1000 * 0.005 + 2 / 1000 * 0.03)
    assert e.storage_gb["GLACIER"] == pytest.approx((200 * MIB + 2 * 32768) / GB)
    assert e.storage_gb["STANDARD"] == pytest.approx(2 * 8192 / GB)
    standard = next(r for r in e.restore if r["tier"] == "Standard")
    gb = 200 * MIB / GB
    assert standard["hours"] == 5
    assert standard["total"] == pytest.approx(gb * 0.01 + 2 / 1000 * 0.05 + gb * 0.023 * 7 / 30
                                              + 6 / 1000 * 0.0004 + gb * 0.09)
    assert e.early_deletion_exposure == pytest.approx((200 * MIB + 2 * 32768) / GB * 0.0036 * 90 / 30)


def test_mixed_tree_with_a_single_put_large_file_and_symlinks():
    entries = [f("/data/p/s1", 1000), f("/data/p/s2", 2000), link("/data/p/l", 5),
               f("/data/p/mid", 1 * MIB), f("/data/q/huge", 81 * MIB)]
    t, e = run(entries, policy())
    assert (t.small_files, t.symlinks, t.large_files, t.single_put_large, t.multipart_uploads, t.parts) == \
        (2, 1, 2, 1, 1, 3)
    # small: p (smallfile), l (symlinks), mid (largefile in p), huge (largefile in q): 4 key directories
    assert t.key_directories == 4
    assert e.requests["PUT"] == 2 + 1 + 1 + (1 + 3 + 2)  # small, symlink, single PUT, multipart (+ its tag)
    assert e.storage_gb["STANDARD"] == pytest.approx((3000 + 5 + 2 * 8192) / GB)
    assert e.storage_gb["GLACIER"] == pytest.approx((82 * MIB + 2 * 32768) / GB)


def test_deep_archive_direct_upload_and_its_early_deletion():
    t, e = run([f("/data/x", GB)], policy(archive_storage_class="DEEP_ARCHIVE", upload_large_to_archive=True))
    assert e.requests["transitions"] == 0
    assert e.upload_cost["PUT DEEP_ARCHIVE (large files)"] == pytest.approx((26 + 2) / 1000 * 0.05)  # 40 MiB parts
    billed = (GB + 32768) / GB
    assert e.storage_cost_month["DEEP_ARCHIVE"] == pytest.approx(billed * 0.00099)
    assert e.early_deletion_exposure == pytest.approx(billed * 0.00099 * 180 / 30)
    assert [r["tier"] for r in e.restore] == ["Bulk", "Standard"]  # no Expedited for DEEP_ARCHIVE
    assert next(r for r in e.restore if r["tier"] == "Bulk")["hours"] == 48


def test_minimum_object_size_of_infrequent_access():
    t, e = run([f("/data/x", 200 * 1024)], policy(archive_storage_class="STANDARD_IA", lifecycle_days=30))
    assert e.storage_gb["STANDARD_IA"] == pytest.approx(200 * 1024 / GB)
    t, e = run([f("/data/x", 200 * 1024)], policy(archive_storage_class="STANDARD_IA", lifecycle_days=30,
                                                    small_file_threshold_bytes=1024))
    assert t.large_billed_bytes == 200 * 1024
    t, e = run([f("/data/y", 2000)], policy(archive_storage_class="STANDARD_IA", lifecycle_days=30,
                                              small_file_threshold_bytes=1024))
    assert t.large_billed_bytes == 131072  # billed as 128 KB


# -- packs ------------------------------------------------------------------------------------------------------------

def test_pack_member_bytes_are_headers_plus_data_padded_to_a_block():
    assert member_tar_bytes(f("/data/p/a", 1)) == 1536 + 512
    assert member_tar_bytes(f("/data/p/a", 512)) == 1536 + 512
    assert member_tar_bytes(f("/data/p/a", 513)) == 1536 + 1024
    assert member_tar_bytes(f("/data/p/a", 0)) == 1536
    assert member_tar_bytes(link("/data/p/l", 40)) == 1536  # the target rides in the header
    assert member_tar_bytes(f("/data/p/" + "x" * 400, 1)) == 1536 + 512 + 512  # a long path: one more block


def test_pack_count_is_per_shard_and_puts_are_per_pack():
    pol = policy(small_files="packs", pack_size_bytes="16MiB")
    member = member_tar_bytes(f("/data/d/f", 10_000))  # 11,776
    per_pack = (16 * MIB - END_OF_ARCHIVE_BYTES) // member  # members a pack takes before the next would pass it
    big = [f(f"/data/d{i // 100}/f{i}", 10_000) for i in range(3000)]
    prices = load_prices(PRICES, "us-east-1")
    t = tally_shards([big], pol, prices)
    assert t.packs == -(-3000 // per_pack) == 3 and t.packed_members == t.small_files == 3000
    assert t.pack_bytes == 3000 * member + 3 * END_OF_ARCHIVE_BYTES
    assert t.key_directories == 0 and t.index_bytes == 3000 * INDEX_BYTES_PER_MEMBER
    e = estimate(t, t, pol, prices)
    # each pack fits one 40 MiB part: one PUT, and one index PUT; no PUT per file
    assert e.requests == {"PUT": 3 + 3, "LIST": 1, "HEAD": 0, "transitions": 0}
    assert e.upload_cost["PUT STANDARD (packs)"] == pytest.approx(3 / 1000 * 0.005)
    assert e.upload_cost["PUT STANDARD"] == pytest.approx(3 / 1000 * 0.005)  # the indexes
    assert e.storage_gb["STANDARD"] == pytest.approx((t.pack_bytes + t.index_bytes) / GB)
    # Two shards of ten small files each: at least one pack per shard, however small.
    two = tally_shards([[f(f"/data/a/f{i}", 100) for i in range(10)], [f(f"/data/b/f{i}", 100) for i in range(10)]],
                       pol, prices)
    assert (two.packs, two.packed_members) == (2, 20)
    # Symlinks go into packs too; large files keep their own objects (a multipart upload and its tag).
    mixed = tally_shards([[f("/data/m/s", 10), link("/data/m/l", 5), f("/data/m/big", 100 * MIB)]], pol, prices)
    assert (mixed.packs, mixed.packed_members, mixed.symlinks, mixed.large_files) == (1, 2, 1, 1)
    assert estimate(mixed, mixed, pol, prices).requests["PUT"] == 1 + 1 + (1 + 3 + 2)
    # A pack bigger than a part is a multipart upload in parts.
    huge = policy(small_files="packs", pack_size_bytes="1GiB", small_file_threshold_bytes="1MiB")
    t = tally_shards([[f(f"/data/h/f{i}", MIB) for i in range(100)]], huge, prices)
    assert (t.packs, t.pack_multipart_uploads, t.pack_parts) == (1, 1, 3)  # ~100 MiB in 40 MiB parts
    assert estimate(t, t, huge, prices).requests["PUT"] == 3 + 2 + 1


def test_glacier_overhead_and_transitions_are_per_pack_not_per_file():
    prices = load_prices(PRICES, "us-east-1")
    entries = [f(f"/data/d{i // 100}/f{i}", 4000) for i in range(2000)]
    packed_pol = policy(small_files="packs", pack_storage_class="GLACIER", archive_storage_class="GLACIER")
    t = tally_shards([entries], packed_pol, prices)
    e = estimate(t, t, packed_pol, prices)
    assert t.packs == 1
    assert e.storage_gb["GLACIER"] == pytest.approx((t.pack_bytes + 32768) / GB)
    assert e.storage_gb["STANDARD"] == pytest.approx((8192 + t.index_bytes) / GB)
    assert e.packs["overhead_bytes"] == 40960 and e.packs["overhead_bytes_if_per_object"] == 2000 * 40960
    assert e.packs["transitions_if_moved"] == 1 and e.packs["transitions_if_per_object"] == 2000
    assert e.packs["transition_cost_if_per_object"] == pytest.approx(2000 / 1000 * 0.03)
    assert e.upload_cost["PUT GLACIER (packs)"] == pytest.approx(1 / 1000 * 0.03)
    # The same files per object: every one in STANDARD, a PUT each.
    t2, e2 = run(entries, policy())
    assert e2.requests["PUT"] == 2000 and e2.storage_gb["STANDARD"] == pytest.approx(8_000_000 / GB)
    # A restore from GLACIER packs thaws the whole pack: the retrieval is priced on its bytes, once per pack.
    standard = next(r for r in e.restore if r["tier"] == "Standard")
    gb = t.pack_bytes / GB
    assert standard["retrieval"] == pytest.approx(gb * 0.01 + 1 / 1000 * 0.05)
    assert e.restore_packs["thawed_bytes"] == t.pack_bytes and e.restore_packs["packs"] == 1
    text = "\n".join(render(e, t, t, "test"))
    assert "2,000 small files and symlinks in 1 packs" in text and "thaw amplification" in text
    assert "transitions to GLACIER: 1 (one per pack" in text


def test_thaw_amplification_counts_whole_packs_for_the_selected_files():
    prices = load_prices(PRICES, "us-east-1")
    pol = policy(small_files="packs", pack_size_bytes="16MiB", pack_storage_class="DEEP_ARCHIVE")
    shard = [f(f"/data/d{i // 100:02d}/f{i}", 10_000) for i in range(3000)]  # 3 packs, d00..d29 in order
    wanted = [b"/data/d00/"]  # the first 100 files: all in the first pack
    t = tally_shards([shard], pol, prices, selected=lambda e: e.path.startswith(wanted[0]))
    assert (t.small_files, t.restore_packs) == (100, 1)
    assert t.restore_selected_bytes == 100 * 10_000
    first = (16 * MIB - END_OF_ARCHIVE_BYTES) // member_tar_bytes(shard[0]) * member_tar_bytes(shard[0])
    assert t.thawed_bytes == first + END_OF_ARCHIVE_BYTES
    assert t.thaw_amplification == pytest.approx(t.thawed_bytes / 1_000_000) and t.thaw_amplification > 16
    e = estimate(t, t, pol, prices)
    assert e.restore_packs["thaw_amplification"] == pytest.approx(t.thaw_amplification)
    # Everything selected: every pack thawed, amplification only the tar headers and padding.
    every = tally_shards([shard], pol, prices)
    assert every.restore_packs == 3 and every.thawed_bytes == every.pack_bytes
    assert 1.0 < every.thaw_amplification < 1.2
    # STANDARD packs: nothing to thaw, ranged GETs fetch the members.
    plain = policy(small_files="packs", pack_size_bytes="16MiB")
    e = estimate(every, every, plain, prices)
    assert e.restore_packs["thawed_bytes"] == 0 and e.restore_packs["thaw_amplification"] is None
    # From the catalog: records with a location are packed, counted per distinct pack; the others per object.
    def packed_record(path, size, pack, offset):
        return f(path, size)._replace(location=PackRef(pack, offset, offset + 1024, size).encode())

    catalog = [packed_record(f"/data/c/f{i}", 1000, f"packs/20261201T000000Z-00000000/000000-0000{i % 2}.tar",
                             i * 2048) for i in range(10)] + [f("/data/c/old", 500)]
    c = tally_shards([catalog], pol, prices, from_catalog=True, selected=lambda e: e.path == b"/data/c/f3")
    assert (c.packs, c.packed_members, c.small_files, c.restore_packs) == (1, 1, 1, 1)  # the pack holding it
    assert c.restore_selected_bytes == 1000 and c.thawed_bytes == 9 * 2048 + 1024 + 1000 + END_OF_ARCHIVE_BYTES


def test_unknown_region_or_class_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no prices for region 'mars-1'"):
        load_prices(PRICES, "mars-1")
    table = tmp_path / "pricing.yaml"
    table.write_text(PRICES.read_text().replace("      DEEP_ARCHIVE: 0.00099\n", ""))
    prices = load_prices(table, "us-east-1")
    with pytest.raises(UsageError, match=r"storage_gb_month: no price for 'DEEP_ARCHIVE'"):
        prices.storage("DEEP_ARCHIVE")


def test_cli_estimates_a_fresh_scan_and_refuses_bad_prices(tmp_path):
    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    for i in range(3):
        (root / "d" / f"s{i}").write_bytes(b"x" * 100)
    (root / "d" / "big").write_bytes(b"y" * (300 * 1024))
    lab = tmp_path / "lab.yaml"
    lab.write_text(textwrap.dedent(f"""\
        lab: {{name: est}}
        roots: [{root}]
        s3: {{bucket: est-bucket}}
        run_root: {tmp_path / 'runs'}
        """))
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(lab), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert (data["stored"]["small_files"], data["stored"]["large_files"]) == (3, 1)
    # packs (the default): the 3 small files in one pack, its index, and the large file's own PUT
    assert data["requests"]["PUT"] == 3 and data["requests"]["transitions"] == 1
    assert (data["stored"]["packs"], data["stored"]["packed_members"]) == (1, 3)
    assert not [p for p in (tmp_path / "runs" / "est").iterdir() if p.name.startswith(".estimate-")]
    text = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(lab)],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "storage" in text.stdout and "early deletion" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(lab), "--region", "mars-1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "mars-1" in bad.stderr
    table = tmp_path / "p.yaml"
    table.write_text(Path(PRICES).read_text().replace("      GLACIER: 0.0036\n", ""))
    bad = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(lab), "--pricing",
                          str(table)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "GLACIER" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_cli_shows_packs_and_the_thaw_of_a_restore_from_an_archive_class(tmp_path):
    """`fs3g estimate` with packs in DEEP_ARCHIVE: the packs line, per-pack transitions against per-object ones, and
    the thaw of a restore of one directory (whole packs) with its amplification, in text and JSON."""
    import json

    root = tmp_path / "data"
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(780):  # a member is 10,752 tar bytes: 1,560 fill a 16 MiB pack, so d0 + d1, then d2
            (root / f"d{d}" / f"f{i:04d}").write_bytes(b"z" * 9000)
    lab = tmp_path / "lab.yaml"
    lab.write_text(textwrap.dedent(f"""\
        lab: {{name: est}}
        roots: [{root}]
        s3: {{bucket: est-bucket}}
        run_root: {tmp_path / 'runs'}
        storage: {{small_files: packs, pack_size_bytes: 16MiB, pack_storage_class: DEEP_ARCHIVE}}
        """))
    args = [sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(lab)]
    data = json.loads(subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120).stdout)
    assert (data["stored"]["packs"], data["stored"]["packed_members"]) == (2, 2340)
    assert data["requests"]["PUT"] == 4  # two packs (one part each) and their indexes, not 2,340 PUTs
    assert data["packs"]["transitions_if_per_object"] == 2340 and data["packs"]["overhead_bytes"] == 2 * 40960
    assert data["restore_packs"]["thawed_bytes"] == data["stored"]["pack_bytes"]
    one = json.loads(subprocess.run([*args, "--json", str(root / "d2")], capture_output=True, text=True,
                                    timeout=120).stdout)
    thaw = one["restore_packs"]
    assert thaw["packs"] == 1 and thaw["selected_bytes"] == 780 * 9000  # d2 fills the second pack alone
    assert thaw["thawed_bytes"] > thaw["selected_bytes"] and thaw["thaw_amplification"] == pytest.approx(
        thaw["thawed_bytes"] / thaw["selected_bytes"])
    text = subprocess.run([*args, str(root / "d2")], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "packs     780 small files and symlinks in 1 packs" in text.stdout
    assert f"thaw amplification {thaw['thaw_amplification']:.2f}x" in text.stdout
    assert "transitions to DEEP_ARCHIVE: 1 (one per pack" in text.stdout
    # DEEP_ARCHIVE has no Expedited tier: a restore that must thaw its packs cannot use it, whatever GLACIER offers
    assert [r["tier"] for r in one["restore"]] == ["Bulk", "Standard"] and "Expedited" not in text.stdout


def test_cli_estimates_an_incremental_plan_with_storage_from_the_catalog(seaweed_bucket, tmp_path):
    from test_restore import backup, make_tree, write_policy

    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "inc", root, seaweed_bucket, layout="packs")
    backup(policy)
    (root / "proj" / "added.txt").write_bytes(b"new file")
    plan = tmp_path / "plan"
    assert subprocess.run([sys.executable, "-m", "fs3g_hpc", "plan", "--config", str(policy), "--run-dir", str(plan)],
                          capture_output=True, timeout=120).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(policy), "--run-dir",
                           str(plan), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    # only the new file goes: one pack (it alone) and its index
    assert data["upload"]["small_files"] == 1 and data["requests"]["PUT"] == 2 and data["upload"]["packs"] == 1
    stored = data["stored"]  # the catalog's packed records, by their locations; packs.jsonl gives the pack's size
    assert stored["packed_members"] == stored["small_files"] + stored["symlinks"]
    usage = [json.loads(line) for line in (tmp_path / "runs" / "inc" / "packs.jsonl").read_text().splitlines()]
    assert stored["packs"] == len(usage) >= 1 and stored["pack_bytes"] == sum(u["bytes"] for u in usage)
    assert data["stored"]["small_files"] + data["stored"]["large_files"] + data["stored"]["symlinks"] == 14
    assert "storage and restore from the catalog" in data["scope"]
    under = subprocess.run([sys.executable, "-m", "fs3g_hpc", "estimate", "--config", str(policy), "--run-dir",
                            str(plan), "--json", str(root / "weird")], capture_output=True, text=True, timeout=120)
    assert json.loads(under.stdout)["upload"]["small_files"] == 0


def test_validate_checks_a_price_table(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(PRICES)], capture_output=True, text=True)
    assert ok.returncode == 0 and "price table of 2025-11-01" in ok.stdout
    bad = tmp_path / "pricing.yaml"
    bad.write_text(Path(PRICES).read_text().replace("GLACIER: 0.0036", "GLACIER: -1"))
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "storage_gb_month.GLACIER: must be a number >= 0" in proc.stderr


# --- the shipped price table covers the regions research sites use ---------------------------------------------------

REQUIRED_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-central-1",
                    "eu-north-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "ap-south-1")


def test_shipped_price_table_prices_every_region_in_full():
    from fs3g_hpc.config import TRANSITION_CLASSES, read_yaml

    data = read_yaml(PRICES)
    assert str(data["date"]) == "2025-11-01" and "pricing" in data["source"] and data["currency"] == "USD"
    assert set(REQUIRED_REGIONS) <= set(data["regions"])
    sections = {"storage_gb_month", "put_per_1000", "list_per_1000", "get_per_1000", "transition_per_1000",
                "minimum_object_bytes", "archive_overhead_bytes", "retrieval", "transfer_out_per_gb"}
    classes = {"STANDARD"} | {c.value for c in TRANSITION_CLASSES}
    for region, table in data["regions"].items():
        assert set(table) == sections, region
        prices = load_prices(PRICES, region)
        for klass in classes:
            assert prices.storage(klass) > 0 and prices.put(klass) > 0, (region, klass)
        for klass in classes - {"STANDARD"}:
            assert prices.transition(klass) > 0, (region, klass)
        assert prices.tiers("GLACIER") == ["Bulk", "Standard", "Expedited"]
        assert prices.tiers("DEEP_ARCHIVE") == ["Bulk", "Standard"]
        # Deep Archive is the cheapest storage everywhere, STANDARD the dearest of the three.
        assert prices.storage("DEEP_ARCHIVE") < prices.storage("GLACIER") < prices.storage("STANDARD"), region
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(PRICES)], capture_output=True, text=True)
    assert proc.returncode == 0 and all(r in proc.stdout for r in REQUIRED_REGIONS), proc.stderr


@pytest.mark.parametrize("region", [None, *REQUIRED_REGIONS])
def test_estimate_on_the_shipped_site_works_in_every_region(tmp_path, capsys, region):
    """The shipped site sets us-west-2, which the table lacked: every lab on it failed `fs3g estimate`."""
    from fs3g_hpc.cli import main

    root = tmp_path / "data"
    root.mkdir()
    (root / "small").write_bytes(b"x" * 100)
    (root / "big").write_bytes(b"y" * (300 * 1024))
    lab = tmp_path / "lab.yaml"
    lab.write_text(textwrap.dedent(f"""\
        site: {data_file(DataDir.CONFIGS, 'site.yaml')}
        lab: {{name: est}}
        roots: [{root}]
        s3: {{bucket: est-bucket{f', region: {region}' if region else ''}}}
        run_root: {tmp_path / 'runs'}
        """))
    assert main(["estimate", "--config", str(lab), "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert (data["stored"]["small_files"], data["stored"]["large_files"]) == (1, 1)
    assert data["region"] == (region or "us-west-2") and data["prices_date"] == "2025-11-01"


# --- minimum storage durations: one table, read by estimate and prune ------------------------------------------------

def test_minimum_storage_days_have_one_home_that_estimate_and_prune_read(tmp_path):
    from fs3g_hpc.config.pricing import MINIMUM_STORAGE_DAYS, check_price_table, minimum_storage_days

    prices = load_prices(PRICES, "eu-west-1")
    assert "minimum_days" not in prices.table  # the shipped table carries no copy
    for klass in ("STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "INTELLIGENT_TIERING"):
        assert prices.minimum_days(klass) == minimum_storage_days(klass) == MINIMUM_STORAGE_DAYS.get(klass, 0)
    text = Path(PRICES).read_text()
    # A table written before (the same durations listed) still loads; one whose copy differs is refused by name.
    same = tmp_path / "same.yaml"
    same.write_text(text.replace("    list_per_1000: 0.005\n", "    list_per_1000: 0.005\n    minimum_days: {"
                                 + ", ".join(f"{k}: {v}" for k, v in MINIMUM_STORAGE_DAYS.items()) + "}\n", 1))
    assert load_prices(same, "us-east-1").minimum_days("GLACIER") == 90 and check_price_table(same)
    edited = tmp_path / "edited.yaml"
    edited.write_text(same.read_text().replace("GLACIER: 90", "GLACIER: 30", 1))
    with pytest.raises(UsageError, match=r"regions.us-east-1.minimum_days: minimum storage durations are S3's rules"):
        load_prices(edited, "us-east-1")
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(edited)], capture_output=True, text=True)
    assert proc.returncode == 2 and "minimum_days" in proc.stderr and str(edited) in proc.stderr
