"""One writer per output: an advisory lock on the output folder (``--output-dir``) or file (``-o``).

Two runs writing the same folder would interleave their ``.tflite`` files and reports into a set that belongs to
neither, so the second run fails at once naming the first. The lock is ``flock(2)`` on a small file —
``DIR/.tflite-opt.lock`` for a folder, ``.NAME.lock`` beside an ``-o`` file — holding the writer's process id and
start time. The kernel drops a ``flock`` when its process dies, however it dies (SIGKILL, OOM killer, a crash), so
a crashed run never leaves a lock that blocks the next one; a lock file left behind by such a run is reused.

A lock file that cannot be created (a read-only folder, a full disk) does not stop the run: the command's own
write then fails with its usual message, which names the output.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tflite_opt.errors import OutputPathError
from tflite_opt.fileio import remove_stale_temporaries_in

FOLDER_LOCK_NAME = ".tflite-opt.lock"


class OutputBusyError(OutputPathError):
    """Another live process holds the output's lock."""


def lock_path(target: str | os.PathLike, *, folder: bool) -> Path:
    """Where the lock of an output folder (``folder=True``) or output file lives."""
    target = Path(target)
    if folder:
        return target / FOLDER_LOCK_NAME
    parent = target.parent if str(target.parent) else Path(".")
    return parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, *, folder: bool, option: str, command: str = "") -> Iterator[Path | None]:
    """Hold the lock of ``target`` for the duration of the ``with`` block.

    Args:
        target: the output folder or file, as the user gave it.
        folder: ``target`` is a folder (``--output-dir``) rather than a file.
        option: how the user names the output, for the message (``--output-dir``, ``-o``).
        command: what this run is (``tflite-opt compare``), recorded for the message another run shows.

    Yields:
        The lock file, or ``None`` when it could not be created (the run goes on unlocked).

    Raises:
        OutputBusyError: another live process holds the lock.
    """
    target = Path(target)
    path = lock_path(target, folder=folder)
    created = _make_folders(path.parent)
    fd = None
    try:
        if created is not None:
            fd = _acquire(path, target, option)
        if fd is not None:
            _record_holder(fd, command)
            if folder:
                remove_stale_temporaries_in(target)
        yield path if fd is not None else None
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # still holding the lock: a waiting run re-checks the inode (see _acquire)
            os.close(fd)
        for made in reversed(created or []):
            with contextlib.suppress(OSError):
                made.rmdir()  # only folders this run created and left empty (a run that failed early)


def _make_folders(folder: Path) -> list[Path] | None:
    """Create ``folder`` and missing parents; returns the ones created, ``None`` when that fails."""
    missing = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return list(reversed(missing))


def _acquire(path: Path, target: Path, option: str) -> int | None:
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{target} is being written by {holder}; wait for it or choose another {option}"
            ) from None
        except OSError:  # a filesystem without flock (some network mounts): run unlocked
            os.close(fd)
            return None
        # The previous holder unlinks the file while holding it: a lock taken on that unlinked file is void.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _record_holder(fd: int, command: str) -> None:
    text = f"{os.getpid()}\n{time.time():.0f}\n{command}\n".encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError:
        pass  # the lock holds without its note; a waiting run then says "another process"


def _read_holder(fd: int) -> str:
    """``process N (started TIME, COMMAND)`` from the lock file, or ``another process``."""
    for _ in range(20):  # the holder writes its note just after locking
        try:
            lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
        except OSError:
            break
        if len(lines) >= 2 and lines[0].isdigit():
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(lines[1] or 0)))
            what = f", {lines[2]}" if len(lines) > 2 and lines[2] else ""
            return f"process {lines[0]} (started {started}{what})"
        time.sleep(0.025)
    return "another process"
