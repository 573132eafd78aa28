"""`fasts3plusglacier`: the original tool's flags on fs3g's engine, and objects shared both ways with `fs3g`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO
from helpers import fs3g
from test_restore import assert_same_tree, make_tree


def compat(*args: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fs3g_hpc.cli.compat", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def compat_env(bucket, tmp: Path, **extra: str) -> dict:
    # The original tool knew only the standard AWS configuration: the endpoint comes from AWS_ENDPOINT_URL.
    return {**os.environ, "AWS_ENDPOINT_URL": bucket.endpoint_url, "FS3G_RUN_ROOT": str(tmp / "compat-runs"),
            **extra}


def lab_policy(tmp: Path, name: str, root: Path, bucket, extra: str = "") -> Path:
    """An fs3g lab on the same bucket in the original layout (no prefix, `small_files: objects`, also in an `extra`
    storage section): the objects the original command reads."""
    extra = textwrap.dedent(extra)
    storage = "" if "storage: {" in extra else "storage: {small_files: objects}\n"
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        lab: {{name: {name}}}
        roots: [{root}]
        s3: {{bucket: {bucket.name}, endpoint_url: {bucket.endpoint_url}}}
        run_root: {tmp / 'runs'}
        uploader: {{buffer_size_bytes: 5MiB, large_buffers: 4}}
        """) + storage + extra.replace("storage: {", "storage: {small_files: objects, "))
    return path


def test_the_original_layout_is_forced_one_object_per_small_file(tmp_path):
    """fs3g labs pack small files by default; fasts3plusglacier keeps the original per-object layout."""
    from fs3g_hpc.cli.compat import build_parser, build_policy
    from fs3g_hpc.config import SmallFiles

    args = build_parser().parse_args(["--backup", "--bucketname", "some-bucket", str(tmp_path)])
    policy = build_policy(args, args.directories)
    assert policy.storage.small_files is SmallFiles.OBJECTS
    assert policy.s3.prefix == "" and policy.storage.small_file_threshold_bytes == 128 * 1024


def test_backup_compare_restore_round_trip_and_bucket_policy(bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=bucket.endpoint_name != "moto")
    env = compat_env(bucket, tmp_path)
    flags = ["--bucketname", bucket.name, "--num-smallfile-workers", "8", "--num-largefile-workers", "2",
             "--num-largefile-buffers", "3"]

    proc = compat(*flags, str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "missing-in-s3" in proc.stdout, proc.stdout + proc.stderr
    proc = compat(*flags, "--backup", str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = [o["Key"] for o in bucket.client.list_objects_v2(Bucket=bucket.name)["Contents"]]
    assert any(k.startswith("smallfile" + str(root)) for k in keys)  # the original layout: no prefix
    assert any(k.startswith("largefile" + str(root)) for k in keys)
    assert any(k.startswith("symlinks" + str(root)) for k in keys)

    assert compat(*flags, str(root), cwd=tmp_path, env=env).returncode == 0
    assert compat(*flags, "--check-sha256", str(root), cwd=tmp_path, env=env).returncode == 0
    # Same size, same mtime, other bytes: only the tree hash sees it.
    victim = root / "proj" / "deep" / "er" / "b.bin"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert compat(*flags, str(root), cwd=tmp_path, env=env).returncode == 0
    proc = compat(*flags, "--check-sha256", str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "b.bin" in proc.stdout, proc.stdout
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    work = tmp_path / "cwd"
    work.mkdir()
    proc = compat(*flags, "--restore", str(root), cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_tree(root, work / "glacierrestore")

    proc = compat("--bucketname", bucket.name, "--show-bucket-policy", str(root), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "largefile/" in proc.stdout and "GLACIER after 1 day" in proc.stdout


def test_objects_are_shared_both_ways_with_fs3g(moto_bucket, tmp_path):
    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    env = compat_env(moto_bucket, tmp_path)
    assert compat("--bucketname", moto_bucket.name, "--backup", str(root), cwd=tmp_path, env=env).returncode == 0
    # fs3g, with no catalog of its own for this bucket, restores from the listing what fasts3plusglacier wrote.
    policy = lab_policy(tmp_path, "reader", root, moto_bucket)
    dest = tmp_path / "by-fs3g"
    proc = fs3g("restore", "--config", str(policy), "--dest", str(dest), "--executor", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bucket listing" in proc.stdout
    assert_same_tree(root, dest)

    # And the reverse: what fs3g backs up, fasts3plusglacier compares clean.
    other = tmp_path / "other"
    make_tree(other, newline_names=False)
    writer = lab_policy(tmp_path, "writer", other, moto_bucket)
    proc = fs3g("backup", "--config", str(writer), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = compat("--bucketname", moto_bucket.name, "--check-sha256", str(other), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_restore_requests_glacier_and_a_second_run_finishes_it(moto_bucket, tmp_path):
    """The original's way: request restores, download what is readable, run again later for the rest."""
    root = tmp_path / "data"
    make_tree(root, newline_names=False)
    writer = lab_policy(tmp_path, "glacier", root, moto_bucket, """\
        storage: {archive_storage_class: GLACIER, upload_large_to_archive: true}
        """)
    proc = fs3g("backup", "--config", str(writer), "--executor", "local", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    env = compat_env(moto_bucket, tmp_path, FS3G_BOTOCORE_HOOK="restore_hooks:install",
                     FS3G_TEST_HOOK_DIR=str(hooks), FS3G_TEST_IN_PROGRESS_POLLS="1",
                     PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    work = tmp_path / "cwd"
    work.mkdir()
    first = compat("--bucketname", moto_bucket.name, "--restore", str(root), cwd=work, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "large-multi.bin: not-ready" in first.stdout and "run the same restore again" in first.stdout
    assert not (work / "glacierrestore" / "proj" / "large-multi.bin").exists()
    assert (work / "glacierrestore" / "proj" / "a.txt").exists()
    second = compat("--bucketname", moto_bucket.name, "--restore", str(root), cwd=work, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_same_tree(root, work / "glacierrestore")
    requested = (hooks / "restore-keys.jsonl").read_text().splitlines()
    assert len(requested) == 4  # two archived objects, requested by each run (S3 answers the second 200 or 409)
