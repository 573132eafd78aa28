"""`fs3g estimate`: costs checked against cases computed by hand from the shipped price table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fs3g_hpc.config import load_prices, policy_from_snapshot
from fs3g_hpc.errors import UsageError
from fs3g_hpc.estimate import GB, estimate, tally
from fs3g_hpc.model.records import Entry, EntryKind
from fs3g_hpc.resources import DataDir, data_file

MIB = 1024 * 1024
PRICES = data_file(DataDir.CONFIGS, "pricing.yaml")


def policy(**storage):
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
    assert data["requests"]["PUT"] == 4 and data["requests"]["transitions"] == 1
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


def test_cli_estimates_an_incremental_plan_with_storage_from_the_catalog(seaweed_bucket, tmp_path):
    from test_restore import backup, make_tree, write_policy

    root = tmp_path / "data"
    make_tree(root, newline_names=True)
    policy = write_policy(tmp_path, "inc", root, seaweed_bucket)
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
    assert data["upload"]["small_files"] == 1 and data["requests"]["PUT"] == 1  # only the new file goes
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
                "minimum_days", "minimum_object_bytes", "archive_overhead_bytes", "retrieval", "transfer_out_per_gb"}
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
