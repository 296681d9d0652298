"""Every data loader: representative (calibration), evaluation and training data.

Sources (SPEC §3): ``.npz`` (one array per input name, or ``x``; labels in ``y``), ``.npy`` (one-input models),
an image folder (flat = unlabelled, ``DIR/<class>/*`` = labelled), or the word ``random`` (smoke tests only).
No TensorFlow import here: ``evaluate`` uses these loaders too.
"""

from tflite_opt.representative_data.dataset import Dataset, split_validation
from tflite_opt.representative_data.loading import load_data

__all__ = ["Dataset", "load_data", "split_validation"]
