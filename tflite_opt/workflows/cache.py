"""The pipeline's content-addressed cache: entries named by the sha256 of everything that made them.

An entry is a folder ``ROOT/<namespace>/<key[:2]>/<key>/`` holding its files and a ``manifest.json`` with each
file's sha256 and size. It is built under a temporary name in the same folder and renamed into place in one step,
so a reader sees a whole entry or none; the first writer wins and a second writer of the same key throws its copy
away. Changes to the cache (commit, discard) also hold an exclusive ``flock`` on ``ROOT/.lock``, so two runs that
share a cache never interleave them. Every read checks the manifest's sha256 and size of every file: a truncated or
corrupt entry is discarded with a warning, and the caller recomputes it.

Nothing here imports TensorFlow: a rerun that finds everything in the cache stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tflite_opt.errors import OutputPathError
from tflite_opt.progress import Progress, ensure

MANIFEST = "manifest.json"
FORMAT = 1
DEFAULT_DIR_NAME = ".tflite-opt-cache"
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def path_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (a SavedModel, an image folder) file by file in sorted order.

    A folder's digest covers every file's relative path and bytes, so renaming, adding or editing any file
    changes it.
    """
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256(b"tflite-opt tree v1\0")
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(file_sha256(item)))
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Entry:
    """A verified cache entry: its files' bytes and the metadata stored with them."""

    key: str
    files: dict[str, bytes]
    meta: dict[str, Any] = field(default_factory=dict)


class Cache:
    """A content-addressed store of files under ``root`` (see the module docstring).

    Args:
        root: the cache folder (created on first write).
        progress: where warnings about discarded entries go.
    """

    def __init__(self, root: str | os.PathLike, progress: Progress | None = None) -> None:
        self.root = Path(root)
        self.progress = ensure(progress)

    def _entry_dir(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / key

    def peek(self, namespace: str, key: str) -> Entry | None:
        """The verified entry, or ``None``; nothing is discarded (for ``--dry-run``)."""
        return self._read(namespace, key)[0]

    def contains(self, namespace: str, key: str) -> bool:
        """Whether a whole, verified entry exists (nothing is discarded)."""
        return self.peek(namespace, key) is not None

    def get(self, namespace: str, key: str) -> Entry | None:
        """The verified entry, or ``None``; a damaged entry is discarded with a warning."""
        entry, problem = self._read(namespace, key)
        if problem is not None:
            self.progress.warn(f"cache entry {namespace}/{key[:12]} is damaged ({problem}); discarded, recomputing")
            self.discard(namespace, key)
        return entry

    def _read(self, namespace: str, key: str) -> tuple[Entry | None, str | None]:
        folder = self._entry_dir(namespace, key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            return None, f"unreadable manifest: {type(exc).__name__}"
        if not isinstance(manifest, dict) or manifest.get("key") != key or not isinstance(manifest.get("files"), dict):
            return None, "manifest does not match its key"
        files: dict[str, bytes] = {}
        for name, facts in manifest["files"].items():
            try:
                content = (folder / name).read_bytes()
            except OSError:
                if not folder.exists():  # discarded by another run while we read: a plain miss
                    return None, None
                return None, f"{name} is missing"
            if len(content) != facts.get("size") or hashlib.sha256(content).hexdigest() != facts.get("sha256"):
                return None, f"{name} is truncated or corrupt: sha256 mismatch"
            files[name] = content
        return Entry(key=key, files=files, meta=dict(manifest.get("meta") or {})), None

    def put(self, namespace: str, key: str, files: Mapping[str, bytes], meta: Mapping[str, Any] | None = None) -> None:
        """Store ``files`` under ``key``: written under a temporary name, then renamed into place in one step.

        A whole entry already there (another run made it first) is kept; a damaged one is replaced.

        Raises:
            OutputPathError: the cache folder cannot be written.
        """
        final = self._entry_dir(namespace, key)
        manifest = {
            "format": FORMAT,
            "key": key,
            "files": {
                name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()
            },
            "meta": dict(meta or {}),
        }
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
        except OSError as exc:
            raise OutputPathError(
                f"cannot write the cache {self.root}: {exc.strerror}; pass --cache-dir or --no-cache"
            ) from exc
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            # The manifest goes last: an entry folder without one is never read as whole.
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            with self._locked():
                if final.exists():
                    if self._read(namespace, key)[0] is not None:
                        return  # the first writer wins
                    self._remove(final)
                os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def discard(self, namespace: str, key: str) -> None:
        """Remove an entry (renamed away first, so no reader sees it half-deleted)."""
        with self._locked():
            folder = self._entry_dir(namespace, key)
            if folder.exists():
                self._remove(folder)

    @staticmethod
    def _remove(folder: Path) -> None:
        trash = folder.with_name(f".{folder.name[:16]}.{os.getpid()}.trash")
        try:
            os.rename(folder, trash)
        except OSError:
            trash = folder
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on ``ROOT/.lock`` (POSIX ``flock``; without it, the atomic renames still hold)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
