"""Policy schema, layering and `fs3g validate`: every bad-input class gives exit 2 and `FILE: key.path: message`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fs3g_hpc.cli import main
from fs3g_hpc.config import (FileKind, RestoreTier, SmallFiles, StorageClass, UPLOADER_OVERHEAD_BYTES, load_policy,
                             schema_keys, validate_file)
from fs3g_hpc.errors import ConfigError, UsageError
from fs3g_hpc.model.sizes import GIB, KIB, MIB
from fs3g_hpc.resources import DataDir, data_dir

REPO = Path(__file__).resolve().parent.parent

GOOD_LAB = """\
lab:
  name: testlab
roots: [/data/testlab]
s3:
  bucket: fs3g-test-bucket
run_root: /scratch/runs
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_validate(capsys, *files: Path) -> tuple[int, list[str], str]:
    rc = main(["validate", *map(str, files)])
    out, err = capsys.readouterr()
    return rc, err.splitlines(), out


# --- examples --------------------------------------------------------------------------------------------------------

def test_example_configs_are_valid(capsys):
    files = sorted(data_dir(DataDir.CONFIGS).glob("*.yaml"))
    assert {f.name for f in files} >= {"site.yaml", "lab-genomics.yaml", "lab-imaging.yaml"}
    rc, err, out = run_validate(capsys, *files)
    assert (rc, err) == (0, [])
    assert out.count(": ok: ") == len(files)


def test_example_lab_layers_on_site():
    policy = load_policy(data_dir(DataDir.CONFIGS) / "lab-genomics.yaml", environ={})
    assert policy.lab.name == "genomics"
    assert policy.slurm.partition == "service"          # from the site file
    assert policy.slurm.qos == "long"                   # from the lab file
    assert policy.slurm.cpus_per_task == 8              # site, not the schema default 4
    assert policy.storage.archive_storage_class is StorageClass.DEEP_ARCHIVE  # lab overrides site's GLACIER
    assert policy.storage.small_file_threshold_bytes == 128 * KIB
    assert policy.restore.tier is RestoreTier.STANDARD
    assert policy.uploader_memory_ceiling_bytes == 6 * 8 * 64 * MIB + 32 * 128 * KIB + UPLOADER_OVERHEAD_BYTES
    assert [Path(f).name for f in policy.source_files] == ["lab-genomics.yaml", "site.yaml"]


def test_defaults_follow_the_original_tool(tmp_path):
    policy = load_policy(write(tmp_path, "lab.yaml", GOOD_LAB), environ={})
    up = policy.uploader
    assert (up.small_workers, up.large_workers, up.large_buffers, up.buffer_size_bytes) == (64, 4, 8, 40 * MIB)
    assert policy.storage.small_file_threshold_bytes == 131072
    assert policy.storage.archive_storage_class is StorageClass.GLACIER
    assert policy.storage.lifecycle_days == 1
    assert policy.s3.prefix == ""


def test_pack_settings_default_to_512_mib_standard_packs_and_parse(tmp_path):
    storage = load_policy(write(tmp_path, "lab.yaml", GOOD_LAB), environ={}).storage
    assert storage.small_files is SmallFiles.PACKS
    assert storage.pack_size_bytes == 512 * MIB
    assert storage.pack_storage_class is StorageClass.STANDARD
    text = GOOD_LAB + "storage:\n  small_files: objects\n  pack_size_bytes: 1GiB\n  pack_storage_class: DEEP_ARCHIVE\n"
    storage = load_policy(write(tmp_path, "lab2.yaml", text), environ={}).storage
    assert (storage.small_files, storage.pack_size_bytes, storage.pack_storage_class) == (
        SmallFiles.OBJECTS, GIB, StorageClass.DEEP_ARCHIVE)
    # objects: the pack size is not used, so a threshold above it is no problem
    text = GOOD_LAB + "storage:\n  small_files: objects\n  pack_size_bytes: 16MiB\n  small_file_threshold_bytes: 32MiB\n"
    text += "uploader:\n  small_workers: 2\n"
    assert load_policy(write(tmp_path, "lab3.yaml", text), environ={}).storage.pack_size_bytes == 16 * MIB


def test_site_from_environment(tmp_path):
    site = write(tmp_path, "site.yaml", "kind: site\nslurm:\n  partition: fromenv\nrun_root: /site/runs\n")
    lab = write(tmp_path, "lab.yaml", GOOD_LAB.replace("run_root: /scratch/runs\n", ""))
    policy = load_policy(lab, environ={"FS3G_SITE_CONFIG": str(site)})
    assert policy.slurm.partition == "fromenv"
    assert policy.run_root == "/site/runs"
    with pytest.raises(ConfigError, match=r"lab.yaml: run_root: required key is missing"):
        load_policy(lab, environ={})


def test_lab_list_replaces_site_list_and_mappings_merge(tmp_path):
    write(tmp_path, "site.yaml", "kind: site\nexclude: ['*.tmp']\nslurm: {partition: a, account: acct}\n")
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "site: site.yaml\nexclude: ['*.bak']\nslurm: {partition: b}\n")
    policy = load_policy(lab, environ={})
    assert policy.exclude == ("*.bak",)
    assert (policy.slurm.partition, policy.slurm.account) == ("b", "acct")


def test_prefix_is_normalised_and_time_stays_a_string(tmp_path):
    text = GOOD_LAB.replace("  bucket: fs3g-test-bucket\n", "  bucket: fs3g-test-bucket\n  prefix: /labs/x/\n")
    policy = load_policy(write(tmp_path, "lab.yaml", text + "slurm:\n  time_limit: 24:00:00\n"), environ={})
    assert policy.s3.prefix == "labs/x"
    assert policy.slurm.time_limit == "24:00:00"  # not YAML 1.1's base-60 integer 86400


def test_schema_lists_every_key_with_docs():
    rows = {path: (doc, default) for path, doc, default in schema_keys()}
    assert rows["uploader.large_buffers"][1] == 8
    assert rows["s3.bucket"][1] == "(required)"
    assert all(doc for doc, _ in rows.values())


# --- bad input: one line per problem, exit 2, `FILE: key.path: message` -----------------------------------------------

BAD_CASES = {
    "yaml-syntax": ("lab:\n  name: [unclosed\n", "", r"YAML syntax error: line \d+, column \d+"),
    "not-a-mapping": ("- just\n- a list\n", "", "expected a mapping of policy keys"),
    "empty": ("", "", "file is empty"),
    "wrong-type-int": (GOOD_LAB + "uploader:\n  small_workers: many\n", "uploader.small_workers",
                       "expected an integer, got a string"),
    "wrong-type-section": (GOOD_LAB + "slurm: [a]\n", "slurm", "expected a mapping, got a list"),
    "wrong-type-bool": (GOOD_LAB + "storage:\n  upload_large_to_archive: 3\n", "storage.upload_large_to_archive",
                        "expected true or false"),
    "missing-bucket": (GOOD_LAB.replace("  bucket: fs3g-test-bucket\n", "  region: us-east-1\n"), "s3.bucket",
                       "required key is missing"),
    "missing-lab-name": (GOOD_LAB.replace("lab:\n  name: testlab\n", ""), "lab.name", "required key is missing"),
    "unknown-key-typo": (GOOD_LAB + "uploader:\n  large_bufers: 4\n", "uploader.large_bufers",
                         "unknown key; did you mean 'large_buffers'\\? valid keys: buffer_size_bytes, "),
    "unknown-top-key": (GOOD_LAB + "bukcet: x\n", "bukcet", "unknown key; .*valid keys:"),
    "negative-size": (GOOD_LAB + "shards:\n  max_bytes: -1GiB\n", "shards.max_bytes", "must not be negative"),
    "negative-count": (GOOD_LAB + "shards:\n  max_files: -3\n", "shards.max_files", "must be >= 1"),
    "bad-size-unit": (GOOD_LAB + "uploader:\n  buffer_size_bytes: 40 parsecs\n", "uploader.buffer_size_bytes",
                      "not a size"),
    "bucket-uppercase": (GOOD_LAB.replace("fs3g-test-bucket", "My_Bucket"), "s3.bucket", "lowercase letters"),
    "bucket-too-short": (GOOD_LAB.replace("fs3g-test-bucket", "ab"), "s3.bucket", "3 to 63 characters"),
    "bucket-ip": (GOOD_LAB.replace("fs3g-test-bucket", "192.168.1.10"), "s3.bucket", "IP address"),
    "bucket-double-dot": (GOOD_LAB.replace("fs3g-test-bucket", "a..b"), "s3.bucket", "two adjacent dots"),
    "bucket-xn": (GOOD_LAB.replace("fs3g-test-bucket", "xn--bucket"), "s3.bucket", "must not begin with 'xn--'"),
    "relative-root": (GOOD_LAB.replace("[/data/testlab]", "[data/testlab]"), "roots",
                      "item 0: 'data/testlab' is not an absolute path"),
    "nested-roots": (GOOD_LAB.replace("[/data/testlab]", "[/data, /data/testlab]"), "roots", "lies inside"),
    "relative-run-root": (GOOD_LAB.replace("/scratch/runs", "runs"), "run_root", "not an absolute path"),
    "run-root-percent": (GOOD_LAB.replace("/scratch/runs", "/scratch/100%"), "run_root", "must not contain"),
    "storage-class-unknown": (GOOD_LAB + "storage:\n  archive_storage_class: GLACEIR\n",
                              "storage.archive_storage_class", "is not one of .*did you mean 'GLACIER'"),
    "storage-class-not-transition": (GOOD_LAB + "storage:\n  archive_storage_class: REDUCED_REDUNDANCY\n",
                                     "storage.archive_storage_class", "not allowed here"),
    "storage-class-case": (GOOD_LAB + "storage:\n  archive_storage_class: glacier\n",
                           "storage.archive_storage_class", "write it as 'GLACIER'"),
    "memory-over-budget": (GOOD_LAB + "uploader:\n  large_workers: 16\n  large_buffers: 16\n"
                           "memory_budget_bytes: 4GiB\nslurm:\n  mem_bytes: 8GiB\n",
                           "memory_budget_bytes", "uploader memory ceiling 16 large_workers × 16 large_buffers .* "
                                                  "exceeds the budget 4 GiB"),
    "budget-over-slurm-mem": (GOOD_LAB + "memory_budget_bytes: 16GiB\nslurm:\n  mem_bytes: 8GiB\n",
                              "slurm.mem_bytes", "less than memory_budget_bytes"),
    "part-too-small": (GOOD_LAB + "uploader:\n  buffer_size_bytes: 1MiB\n", "uploader.buffer_size_bytes",
                       "must be at least 5 MiB"),
    "part-too-large": (GOOD_LAB + "uploader:\n  buffer_size_bytes: 6GiB\n", "uploader.buffer_size_bytes",
                       "must be at most 5 GiB"),
    "small-threshold-over-put-limit": (GOOD_LAB + "storage:\n  small_file_threshold_bytes: 6GiB\n",
                                       "storage.small_file_threshold_bytes", "at most 5 GiB"),
    "small-files-unknown": (GOOD_LAB + "storage:\n  small_files: tar\n", "storage.small_files",
                            "'tar' is not one of packs, objects"),
    "pack-size-too-small": (GOOD_LAB + "storage:\n  pack_size_bytes: 8MiB\n", "storage.pack_size_bytes",
                            "must be at least 16 MiB"),
    "pack-size-too-large": (GOOD_LAB + "storage:\n  pack_size_bytes: 6GiB\n", "storage.pack_size_bytes",
                            "must be at most 5 GiB"),
    "pack-size-under-threshold": (GOOD_LAB + "storage:\n  pack_size_bytes: 16MiB\n"
                                  "  small_file_threshold_bytes: 32MiB\nuploader:\n  small_workers: 2\n",
                                  "storage.pack_size_bytes",
                                  "16 MiB is less than storage.small_file_threshold_bytes \\(32 MiB\\)"),
    "pack-storage-class-unknown": (GOOD_LAB + "storage:\n  pack_storage_class: ICE\n", "storage.pack_storage_class",
                                   "'ICE' is not one of STANDARD"),
    "deep-archive-expedited": (GOOD_LAB + "storage:\n  archive_storage_class: DEEP_ARCHIVE\nrestore:\n"
                               "  tier: Expedited\n", "restore.tier", "no Expedited"),
    "ia-too-early": (GOOD_LAB + "storage:\n  archive_storage_class: STANDARD_IA\n", "storage.lifecycle_days",
                     "before 30 days"),
    "secret-in-policy": (GOOD_LAB + "s3_secret: x\n", "s3_secret", "credentials do not belong in a policy"),
    "secret-in-url": (GOOD_LAB.replace("  bucket: fs3g-test-bucket\n",
                                       "  bucket: fs3g-test-bucket\n  endpoint_url: http://me:pw@host:9000\n"),
                      "s3.endpoint_url", "credentials do not belong"),
    "managed-sbatch-option": (GOOD_LAB + "slurm:\n  extra_sbatch_options: [-a, '--mem=4G']\n",
                              "slurm.extra_sbatch_options", "fs3g sets --array itself"),
    "bad-slurm-time": (GOOD_LAB + "slurm:\n  time_limit: two days\n", "slurm.time_limit", "not a Slurm time"),
    "bad-slurm-partition": (GOOD_LAB + "slurm:\n  partition: 'a b'\n", "slurm.partition", "not a Slurm name"),
    "duplicate-key": (GOOD_LAB + "run_root: /other\n", "run_root", "duplicate key"),
    "bad-tier": (GOOD_LAB + "restore:\n  tier: Fast\n", "restore.tier", "not one of Bulk, Standard, Expedited"),
    "bad-engine": (GOOD_LAB + "uploader:\n  engine: crt\n", "uploader.engine", "'crt' is not one of auto, botocore"),
    "bad-kind": ("kind: cluster\n" + GOOD_LAB, "kind", "not one of lab, site"),
    "bad-prefix": (GOOD_LAB.replace("  bucket: fs3g-test-bucket\n", "  bucket: fs3g-test-bucket\n  prefix: a//b\n"),
                   "s3.prefix", "empty, '.' or '..' segment"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_exit_2_and_one_line(case, tmp_path, capsys):
    text, key, pattern = BAD_CASES[case]
    path = write(tmp_path, "lab.yaml", text)
    rc, err, out = run_validate(capsys, path)
    assert rc == 2, err
    assert out == ""
    assert not any("Traceback" in line for line in err)
    prefix = f"{path}: {key}: " if key else f"{path}: "
    matching = [line for line in err if line.startswith(prefix)]
    assert matching, f"no line starts with {prefix!r}: {err}"
    import re
    assert any(re.search(pattern, line) for line in matching), err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = GOOD_LAB.replace("fs3g-test-bucket", "Bad_Bucket") + "uploader:\n  large_bufers: 3\n  small_workers: 0\n"
    rc, err, _ = run_validate(capsys, write(tmp_path, "lab.yaml", text))
    assert rc == 2
    keys = sorted(line.split(": ")[1] for line in err)
    assert keys == ["s3.bucket", "uploader.large_bufers", "uploader.small_workers"]
    assert all(line.endswith(")") and "(line " in line for line in err)  # each names its line


def test_line_numbers_point_at_the_key(tmp_path, capsys):
    rc, err, _ = run_validate(capsys, write(tmp_path, "lab.yaml", GOOD_LAB + "uploader:\n  small_workers: 0\n"))
    assert rc == 2 and err == [f"{tmp_path / 'lab.yaml'}: uploader.small_workers: must be >= 1, got 0 (line 8)"]


def test_secret_values_are_never_echoed(tmp_path, capsys):
    rc, err, _ = run_validate(capsys, write(tmp_path, "lab.yaml", GOOD_LAB + "aws_secret_access_key: hunter2xyz\n"))
    assert rc == 2 and "hunter2xyz" not in "\n".join(err)


def test_problems_in_the_site_file_name_the_site_file(tmp_path, capsys):
    site = write(tmp_path, "site.yaml", "kind: site\nslurm:\n  cpus_per_tsk: 4\nroots: [/x]\n")
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "site: site.yaml\n")
    rc, err, _ = run_validate(capsys, lab)
    assert rc == 2
    assert any(line.startswith(f"{site}: slurm.cpus_per_tsk: unknown key; did you mean 'cpus_per_task'") for line in err)
    assert any(line.startswith(f"{site}: roots: belongs in a lab policy") for line in err)


def test_value_from_site_is_blamed_on_the_site(tmp_path, capsys):
    site = write(tmp_path, "site.yaml", "kind: site\nslurm:\n  mem_bytes: 1GiB\n")
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "site: site.yaml\n")
    rc, err, _ = run_validate(capsys, lab)
    assert rc == 2 and err[0].startswith(f"{site}: slurm.mem_bytes: 1 GiB is less than memory_budget_bytes")


def test_missing_site_file(tmp_path, capsys):
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "site: nowhere.yaml\n")
    rc, err, _ = run_validate(capsys, lab)
    assert rc == 2 and err == [f"{lab}: site: site file {tmp_path / 'nowhere.yaml'}: file not found (line 7)"]


def test_missing_file(tmp_path, capsys):
    rc, err, _ = run_validate(capsys, tmp_path / "absent.yaml")
    assert rc == 2 and err == [f"{tmp_path / 'absent.yaml'}: file not found"]


def test_site_file_alone(tmp_path):
    good = validate_file(write(tmp_path, "site.yaml", "kind: site\nslurm:\n  partition: p\n"))
    assert good.ok and good.kind is FileKind.SITE
    bad = validate_file(write(tmp_path, "site2.yaml", "kind: site\nslurm:\n  cpus_per_task: 0\n"))
    assert [str(p) for p in bad.problems] == [f"{tmp_path / 'site2.yaml'}: slurm.cpus_per_task: must be >= 1, got 0 "
                                              "(line 3)"]


def test_console_script_end_to_end(tmp_path):
    """The installed `fs3g` (not in-process): exit codes and no traceback on stderr."""
    bad = write(tmp_path, "lab.yaml", BAD_CASES["memory-over-budget"][0])
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"{bad}: memory_budget_bytes: uploader memory ceiling")
    assert "Traceback" not in proc.stderr
    good = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", *map(str, data_dir(DataDir.CONFIGS).glob("*.yaml"))],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr


def test_gib_constant_sanity():
    assert GIB == 1024 * MIB  # the formulas above are written in these units


# --- files that are not YAML text, and alias bombs --------------------------------------------------------------------

BROKEN_FILES = {
    "random bytes": (lambda p: p.write_bytes(bytes(range(128, 256)) * 8 + b"\xff\xfe"), "not UTF-8 text (byte 0)"),
    "binary text": (lambda p: p.write_bytes(b"kind: lab\n\x00\x01\x02"), "not a text file: character #x0000"),
    "directory": (lambda p: p.mkdir(), "is a directory, not a YAML file"),
    "missing": (lambda p: None, "file not found"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
@pytest.mark.parametrize("command", ["validate", "plan", "estimate"])
def test_unreadable_or_binary_policy_is_one_line_exit_2(tmp_path, case, command):
    """Non-UTF-8 bytes gave `internal error: UnicodeDecodeError` (exit 3); a NUL gave `ReaderError` (exit 3)."""
    make, message = BROKEN_FILES[case]
    path = tmp_path / "g.yaml"
    make(path)
    argv = [str(path)] if command == "validate" else ["--config", str(path)]
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", command, *argv], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert len(proc.stderr.splitlines()) == 1 and f"{path}: {message}" in proc.stderr, proc.stderr


def test_permission_denied_policy_is_one_line_exit_2(tmp_path, capsys):
    """Mode 000; as root (who reads anything) the check runs in a forked child that became nobody."""
    import os

    path = write(tmp_path, "lab.yaml", GOOD_LAB)
    path.chmod(0)
    if os.geteuid() != 0:
        rc, err, _ = run_validate(capsys, path)
        assert (rc, err) == (2, [f"{path}: cannot read: Permission denied"])
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, load, report the problems through the pipe, never return into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            lines = [str(p) for p in validate_file(path).problems]
            os.write(write_end, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        reported = f.read().decode()
    os.waitpid(pid, 0)
    assert reported == f"{path}: cannot read: Permission denied"


@pytest.mark.parametrize("case", ["random bytes", "binary text", "directory"])
def test_broken_site_file_named_by_a_lab(tmp_path, capsys, case):
    make, message = BROKEN_FILES[case]
    make(tmp_path / "site.yaml")
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "site: site.yaml\n")
    rc, err, _ = run_validate(capsys, lab)
    assert rc == 2 and len(err) == 1 and err[0].endswith("(line 7)")
    assert err[0].startswith(f"{lab}: site: site file {tmp_path / 'site.yaml'}: {message}")


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_price_table_is_one_line_exit_2(tmp_path, case):
    from fs3g_hpc.config import check_price_table, load_prices

    make, message = BROKEN_FILES[case]
    path = tmp_path / "pricing.yaml"
    make(path)
    for call in (lambda: load_prices(path, "us-east-1"), lambda: check_price_table(path)):
        with pytest.raises(UsageError) as caught:
            call()
        assert str(caught.value).startswith(f"{path}: {message}")


def laughs(levels: int, width: int = 9) -> str:
    """A few hundred bytes that stand for width**levels strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int) -> str:
    """Merge keys that double a mapping's pairs at each level."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,message", [
    (laughs(9), "refused: the document expands to more than 100,000 nodes"),  # 9**9: minutes without the bound
    (merge_bomb(40), "refused: the document expands to more than 100,000 nodes"),
    ("a: &a [1, *a]\n", "refused: an alias refers to the mapping or list that contains it"),
    ("a: " + "[" * 500 + "]" * 500 + "\n", "refused: the document nests mappings and lists more than 64 levels"),
])
@pytest.mark.parametrize("kind", ["lab", "pricing"])
def test_alias_bombs_are_refused(tmp_path, text, message, kind):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"kind: {kind}\n" + text)
    assert len(path.read_bytes()) < 2000
    proc = subprocess.run([sys.executable, "-m", "fs3g_hpc", "validate", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"{path}: {message}") and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_aliases_within_the_bound_still_work(tmp_path):
    lab = write(tmp_path, "lab.yaml", GOOD_LAB + "common: &x ['*.tmp', '*.bak']\nexclude: *x\n")
    text = lab.read_text().replace("common: &x ['*.tmp', '*.bak']\nexclude: *x\n", "exclude: &x ['*.tmp', '*.bak']\n")
    lab.write_text(text + "slurm: {extra_sbatch_options: *x}\n".replace("*x", "['--constraint=ib']"))
    policy = load_policy(lab, environ={})
    assert policy.exclude == ("*.tmp", "*.bak")
    from fs3g_hpc.config import MAX_YAML_NODES, read_yaml

    big = tmp_path / "big.yaml"
    big.write_text(laughs(4) + "kind: x\n")  # 9**4 = 6,561 strings: fine
    assert len(read_yaml(big)["l4"]) == 9 and MAX_YAML_NODES >= 100_000
