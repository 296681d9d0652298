"""What this machine runs: versions and CPU flags, for bug reports and the report's ``environment`` block.

Versions come from package metadata, so nothing here imports TensorFlow.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

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
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


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
    return platform.processor() or platform.machine()


def describe() -> dict:
    """Everything `tflite-opt env` prints."""
    import os

    from tflite_opt import __version__

    return {
        "tflite_opt": __version__,
        "python": sys.version.split()[0],
        **{name: package_version(dist) for name, dist in PACKAGES.items()},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
    }
