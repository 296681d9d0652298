"""Build an expensive session fixture once per test run, also when pytest-xdist runs several workers.

Under xdist every worker is its own process with its own session, so a plain session fixture (a trained model,
a set of converted files) would be built once per worker. ``build_once`` keeps one copy in the run's shared
temporary folder: the first worker to ask builds it under an exclusive ``flock`` and writes its value as JSON;
the others wait on the lock and read that value. Without xdist it is an ordinary ``mktemp`` + build.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__path__" in value:
        return Path(value["__path__"])
    if isinstance(value, dict) and "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def build_once(tmp_path_factory, key: str, build: Callable[[Path], Any]) -> Any:
    """``build(folder)`` once per run; its value (paths, dicts, lists, JSON scalars) for every worker."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(key))
    root = tmp_path_factory.getbasetemp().parent / "shared-fixtures"
    root.mkdir(exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"{key}.json"
        if done.exists():
            return _decode(json.loads(done.read_text()))
        folder = root / key
        folder.mkdir(exist_ok=True)
        value = build(folder)
        done.write_text(json.dumps(_encode(value)))
        return value
