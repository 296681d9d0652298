"""tflite-opt: make neural networks small and fast for edge devices, and measure the cost."""

__version__ = "0.1.0"
