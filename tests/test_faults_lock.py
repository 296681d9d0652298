"""One writer per output folder / ``-o`` file: a second run fails at once naming the first; the lock dies with its
process, even under SIGKILL; stale temporaries of killed runs are removed when the folder is locked again."""

from __future__ import annotations

import fcntl
import os
import re
import signal

import pytest

from tests.fault_processes import cli_process, dead_pid, run_cli, wait_until
from tflite_opt.outputlock import FOLDER_LOCK_NAME, OutputBusyError, lock_path, output_lock

HOLDER = r"process {pid} \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d, tflite-opt {command}\)"


def test_a_second_lock_fails_naming_the_holder_and_the_lock_is_removed_on_release(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, folder=True, option="--output-dir", command="tflite-opt compare") as path:
        assert path == out / FOLDER_LOCK_NAME
        assert path.read_text().splitlines()[0] == str(os.getpid())
        with pytest.raises(OutputBusyError) as info:
            with output_lock(out, folder=True, option="--output-dir"):
                pass
        expected = HOLDER.format(pid=os.getpid(), command="compare")
        assert re.fullmatch(f"{re.escape(str(out))} is being written by {expected}; wait for it or choose another "
                            "--output-dir", str(info.value))  # fmt: skip
    assert not out.exists()  # the lock made the folder and, left empty, removed it with itself
    with output_lock(out, folder=True, option="--output-dir"):  # free again
        pass


def test_a_folder_the_run_created_is_removed_when_it_stays_empty(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "a" / "b", folder=True, option="--output-dir"):
            raise RuntimeError("the run failed before writing anything")
    assert list(tmp_path.iterdir()) == []
    with output_lock(tmp_path / "c" / "m.tflite", folder=False, option="-o file") as path:
        assert path == tmp_path / "c" / ".m.tflite.lock"
        (tmp_path / "c" / "m.tflite").write_bytes(b"x")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["m.tflite"]


def test_locking_a_folder_removes_the_temporaries_of_dead_writers(tmp_path):
    gone, alive = dead_pid(), os.getpid()
    stale = [f".fp32.tflite.{gone}.abc_12.tmp", f".report.json.{gone}.x9.tmp", f".model.tmp{gone}.keras"]
    for name in stale:
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / f".saved.tmp{gone}").mkdir()  # a SavedModel folder being saved
    (tmp_path / f".saved.tmp{gone}" / "saved_model.pb").write_bytes(b"partial")
    kept = [f".int8.tflite.{alive}.q1.tmp", "notes.tmp", ".hidden"]
    for name in kept:
        (tmp_path / name).write_bytes(b"keep")
    with output_lock(tmp_path, folder=True, option="--output-dir"):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, FOLDER_LOCK_NAME])


@pytest.mark.parametrize("command", ["compare", "convert"])
def test_a_second_run_on_the_same_output_fails_at_once_and_a_killed_run_frees_it(
    command, tmp_path, keras3_cnn_path, data_dir
):
    if command == "compare":
        out = tmp_path / "out"
        args = ["compare", keras3_cnn_path, "--data", data_dir / "test.npz", "--output-dir", out]
        lock, option = lock_path(out, folder=True), "--output-dir"
    else:
        out = tmp_path / "m.tflite"
        args = ["convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data",
                data_dir / "calib.npz"]  # fmt: skip
        lock, option = lock_path(out, folder=False), "-o file"
    with cli_process(*args, cwd=tmp_path) as first:
        wait_until(first, lambda: lock.exists() and lock.read_text().startswith(f"{first.pid}\n"), "the lock is held")
        second = run_cli(*args, cwd=tmp_path, timeout=120)
        assert first.poll() is None, "the first run must still be running for this test to mean anything"
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    assert second.returncode == 1
    expected = HOLDER.format(pid=first.pid, command=command)
    assert re.fullmatch(
        f"Error: {re.escape(str(out))} is being written by {expected}; wait for it or choose another {option}\n",
        second.stderr,
    ), second.stderr  # one line, and before any model loading ("Loading keras3 model ..." is absent)

    # The kernel dropped the flock with the killed process: its file is still there, but free.
    assert lock.exists()
    with open(lock) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    third = run_cli(*[tmp_path / "missing.keras" if a == keras3_cnn_path else a for a in args], cwd=tmp_path)
    assert third.returncode == 1 and "missing.keras does not exist" in third.stderr, third.stderr
    assert not lock.exists()  # the third run took the lock and removed it on its way out
