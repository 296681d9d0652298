"""How sizes and times are written in every table (one place, so every renderer agrees)."""

from __future__ import annotations


def format_size(size: int) -> str:
    """Human file size, 1 decimal: ``46.2 KB``, ``3.1 MB`` (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def format_ms(value: float) -> str:
    """Milliseconds with 3 significant digits below 1 ms (``0.0112 ms``), 2 decimals above (``12.34 ms``)."""
    return f"{value:.2f} ms" if value >= 1 else f"{value:.3g} ms"
