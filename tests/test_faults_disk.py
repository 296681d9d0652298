"""A full disk: ``convert`` onto a 64 KB tmpfs ends with exit 1 naming the file and the bytes it needed, and leaves
nothing behind. Mounting needs root (CI runs as root); elsewhere the test is skipped and says why."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

TMPFS_BYTES = 64 * 1024


@pytest.fixture
def tiny_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def test_convert_onto_a_full_disk_names_the_file_and_the_bytes_and_leaves_nothing(
    tiny_tmpfs, tmp_path, keras3_cnn_path
):
    fits = tmp_path / "fits.tflite"
    assert CliRunner().invoke(cli, ["convert", str(keras3_cnn_path), "-o", str(fits)]).exit_code == 0
    assert fits.stat().st_size > TMPFS_BYTES  # the fp32 CNN (~150 KB) cannot fit

    target = tiny_tmpfs / "models" / "cnn.tflite"
    result = CliRunner().invoke(cli, ["convert", str(keras3_cnn_path), "-o", str(target)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == (
        f"Error: no space left on the device writing {target} ({fits.stat().st_size:,} bytes needed); "
        "free space or write elsewhere"
    ), result.output
    assert not any(re.search(r"\.tmp|Traceback", line) for line in lines)
    # Nothing partial: no output, no temporary, no lock file, not even the folder the run made for its output.
    assert list(tiny_tmpfs.rglob("*")) == []
