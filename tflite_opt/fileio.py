"""Atomic writes and the never-overwrite-an-input rule."""

from __future__ import annotations

import os
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
            raise OutputPathError(
                f"output {output} would overwrite the input {item}; choose another output path"
            )
    if out.is_dir():
        raise OutputPathError(f"output {output} is a directory; give a file path such as {output}/model.tflite")
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A failure leaves no partial file behind.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create folder {folder}: {exc.strerror}") from exc
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


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
        os.replace(tmp, target)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return target
