"""Atomic writes and the never-overwrite-an-input rule."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from tflite_opt.errors import OutputPathError


def ensure_distinct(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse an output path that is one of the inputs (or inside an input SavedModel folder).

    Returns:
        The output path, resolved.
    """
    out = Path(output).resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if out == src or (src.is_dir() and src in out.parents):
            raise OutputPathError(f"output {output} would overwrite the input {item}; choose another output path")
    if out.is_dir():
        raise OutputPathError(f"output {output} is a directory; give a file path such as {output}/model.tflite")
    return out


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (the CLI is single-threaded here).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporary files of earlier writes to ``target`` whose writing process is gone (killed mid-write).

    Temporary names are ``.NAME.PID.RANDOM.tmp``; a file whose PID is still running is left alone.
    """
    removed = []
    folder = target.parent if str(target.parent) else Path(".")
    prefix = _temp_prefix(target)
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for candidate in candidates:
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


# Temporary names of this module's writers: ``.NAME.PID.RANDOM.tmp`` (atomic_write_bytes, check_writable; mkstemp's
# RANDOM has no dots) and ``.STEM.tmpPID[SUFFIX]`` (atomic_save, a file or a SavedModel folder).
_TEMPORARY_NAMES = (re.compile(r"^\..+\.(\d+)\.[a-z0-9_]+\.tmp$"), re.compile(r"^\..+\.tmp(\d+)(\.[^.]+)?$"))


def remove_stale_temporaries_in(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary in ``folder`` left by a writer of this module whose process is gone.

    The output-folder lock (:mod:`tflite_opt.outputlock`) calls this once it holds the folder, so the run after a
    killed one starts clean whichever files the killed run was writing.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = next((int(m.group(1)) for rule in _TEMPORARY_NAMES if (m := rule.match(entry.name))), None)
        if pid is None or _alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A failure leaves no partial file behind; the file gets the usual permissions (0666 less the umask, 0644
    under the common 022), not the temporary file's private 0600. Errors name ``path``, never the temporary.

    Raises:
        OutputPathError: the folder cannot be created or written, or the disk is full.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create folder {folder} for {path}: {exc.strerror}") from exc
    remove_stale_temporaries(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror}; choose a writable output folder") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise OutputPathError(_write_failure(path, exc, len(data))) from exc
        raise
    return target


def _write_failure(path: str | os.PathLike, exc: OSError, size: int) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing {path} ({size:,} bytes needed); free space or write elsewhere"
    return f"cannot write {path}: {exc.strerror or exc}"


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, before any work, when ``path``'s folder cannot be written (create and remove a probe file).

    Raises:
        OutputPathError: naming ``path``.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: {existing} is not writable; choose another output path")
    if folder.exists():
        try:
            fd, probe = tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{os.getpid()}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise OutputPathError(f"cannot write {path}: {exc.strerror}; choose another output path") from exc
        os.close(fd)
        os.unlink(probe)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, save) -> Path:
    """Run ``save(tmp_path)`` (e.g. ``model.save``) on a temporary name that keeps the suffix, then rename.

    Keras picks the format from the suffix, so the temporary file keeps ``path``'s suffix.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{target.stem}.tmp{os.getpid()}{target.suffix}"
    try:
        save(str(tmp))
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    return target
