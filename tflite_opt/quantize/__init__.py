"""Quantization: one module per backend (``converter``: TFLiteConverter) and the transforms on top of them
(``selective`` keep-float, ``debugging`` per-layer error, ``search`` the accuracy-budget search)."""
