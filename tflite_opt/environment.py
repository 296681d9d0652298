"""What this machine runs: versions and CPU flags, for bug reports and the report's ``environment`` block.

Versions come from package metadata, so nothing here imports TensorFlow. They are read from the names of the
installed distributions' metadata folders (``tensorflow-2.21.0.dist-info``), which every installer writes and
which costs one directory listing per ``sys.path`` entry; :mod:`importlib.metadata` (tens of milliseconds to
import, since it pulls in the email parser) is the fallback for what the names do not tell.
"""

from __future__ import annotations

import functools
import os
import re
import sys

PACKAGES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "ai_edge_litert": "ai-edge-litert",
    "litert_quantizer": "litert-quantizer",
    "tflite_micro": "tflite-micro",
    "numpy": "numpy",
    "click": "click",
    "rich": "rich",
}
INTERESTING_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_int8",
    "neon",
    "asimd",
    "fphp",
    "asimdhp",
    "asimddp",
    "sve",
)


def package_version(*distributions: str) -> str | None:
    """The installed version of the first of ``distributions`` that is installed (e.g. a -cpu or nightly twin)."""
    for distribution in distributions:
        version = _installed_versions().get(_normalize(distribution))
        if version == "":  # a metadata folder whose name does not carry the version
            version = _metadata_version(distribution)
        if version is not None:
            return version
    return None


def _normalize(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503), with underscores as in metadata folder names."""
    return re.sub(r"[-_.]+", "_", name).lower()


@functools.lru_cache(maxsize=1)
def _installed_versions() -> dict[str, str]:
    """Normalized name -> version of every ``NAME-VERSION.dist-info`` / ``.egg-info`` folder on ``sys.path`` (the
    first wins, as for imports); ``""`` where the folder's name does not say the version (``NAME.egg-info``), for
    :func:`_metadata_version` to read."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if not dot or suffix not in ("dist-info", "egg-info"):
                continue
            parts = stem.split("-")
            found.setdefault(_normalize(parts[0]), parts[1] if len(parts) >= 2 else "")
    return found


def _metadata_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def platform_string() -> str:
    """``platform.platform()`` without its cost on Linux, where it runs ``uname -p`` in a subprocess (~10 ms) for
    a processor name it then mostly drops: the same string from ``os.uname()`` and the C library's version."""
    uname = os.uname() if hasattr(os, "uname") else None
    libc = (os.confstr("CS_GNU_LIBC_VERSION") or "").split() if hasattr(os, "confstr") else []
    if uname is None or uname.sysname != "Linux" or len(libc) != 2:
        import platform

        return platform.platform()
    text = "-".join((uname.sysname, uname.release, uname.machine, "with", libc[0] + libc[1]))
    for character in ' /\\:;"()':  # the characters platform.platform() replaces
        text = text.replace(character, "_" if character == " " else "-")
    while "--" in text:
        text = text.replace("--", "-")
    return text.rstrip("-")


def cpu_flags() -> list[str]:
    """The CPU features that matter for XNNPACK kernels (from /proc/cpuinfo where it exists)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in INTERESTING_CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _machine() -> str:
    import platform

    return platform.machine()


def describe() -> dict:
    """Everything `tflite-opt env` prints."""
    from tflite_opt import __version__

    return {
        "tflite_opt": __version__,
        "python": sys.version.split()[0],
        **{name: package_version(dist) for name, dist in PACKAGES.items()},
        "platform": platform_string(),
        "machine": os.uname().machine if hasattr(os, "uname") else _machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
    }
