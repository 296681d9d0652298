"""An opt-in cache of SavedModel exports of Keras files, shared by runs: ``TFLITE_OPT_EXPORT_CACHE=DIR``.

Every command that converts a Keras model first exports it to a SavedModel (about a second for a small CNN,
much more for a large one). With ``TFLITE_OPT_EXPORT_CACHE`` set to a folder, the export of a Keras file is kept
there under a key made of the file's sha256, the model kind and the TensorFlow/Keras versions, and the next run
on the same bytes reuses it. A CI job that runs ``convert``/``compare``/``debug`` on one model several times pays
the export once. Unset (the default), nothing is kept.

Entries are written to a temporary folder and renamed into place, so a killed run leaves no half entry and two
runs racing on one key both end with a complete one. Only the untouched file is cached: a re-signed model
(``--input-shape``) or a trained one is exported afresh.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

ENV = "TFLITE_OPT_EXPORT_CACHE"
_DONE = "complete"


def cache_root() -> Path | None:
    """The cache folder, or None when caching is off."""
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else None


def cached_export(source: Path, kind: str, export: Callable[[Path], None]) -> Path | None:
    """The cached SavedModel of ``source``, exported with ``export(target)`` on a miss; None when caching is off.

    Any failure of the cache itself (unwritable folder, full disk) falls back to None: the caller exports to its
    own temporary folder as without a cache. Errors of ``export`` propagate.
    """
    root = cache_root()
    if root is None or not source.is_file():
        return None
    entry = root / _key(source, kind)
    if (entry / _DONE).exists():
        return entry / "model"
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    except OSError:
        return None
    try:
        export(staging / "model")
        (staging / _DONE).write_text("")
        os.replace(staging, entry)
    except OSError:
        # Another run renamed its complete entry first (or the disk is full): use what is there, if anything.
        shutil.rmtree(staging, ignore_errors=True)
        return entry / "model" if (entry / _DONE).exists() else None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry / "model"


def _key(source: Path, kind: str) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"\0{kind}\0{_versions()}".encode())
    return digest.hexdigest()[:32]


def _versions() -> str:
    from importlib import metadata

    found = []
    for package in ("tensorflow", "keras", "tf-keras"):
        try:
            found.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package}=none")
    return ",".join(found)
