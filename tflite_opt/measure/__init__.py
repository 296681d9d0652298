"""Measuring .tflite files on LiteRT and NumPy only (never TensorFlow): the interpreter factory (``runtime``),
the flatbuffer reader (``inspection``), accuracy and fidelity (``evaluation``), latency (``latency``)."""
