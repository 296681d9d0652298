"""Atomic writes: permissions follow the umask, errors name the user's path, killed writes leave nothing behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tflite_opt.errors import OutputPathError
from tflite_opt.fileio import atomic_write_bytes, check_writable, remove_stale_temporaries


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "m.tflite", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_unwritable_folder_is_named_by_the_users_path(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/m.tflite"  # even root cannot create files in /proc
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        target = str(folder / "m.tflite")
    with pytest.raises(OutputPathError) as info:
        atomic_write_bytes(target, b"abc")
    assert f"cannot write {target}" in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(OutputPathError, match="cannot write"):
        check_writable(target)


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".m.tflite.{dead_pid}.abc123.tmp"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".m.tflite.{os.getpid()}.xyz.tmp"  # a live writer's temporary is left alone
    mine.write_bytes(b"in progress")
    atomic_write_bytes(tmp_path / "m.tflite", b"complete")
    assert not stale.exists() and mine.exists()
    assert remove_stale_temporaries(tmp_path / "m.tflite") == []
