"""Whole jobs that use every layer below: ``comparison`` (compare: one export, every mode, training rows, reports)
and ``demo`` (the embedded demo model and data)."""
