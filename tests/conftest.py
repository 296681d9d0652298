"""Shared fixtures: a small CNN trained once per session on scikit-learn's digits (ships with the package).

Area-specific fixtures live in ``tests/fixtures_<area>.py`` modules registered below, so that several people
can add fixtures without editing one file.
"""

from __future__ import annotations

import os

# No TF_USE_LEGACY_KERAS here: tests see the import order the CLI has. Fixtures that build tf_keras models
# import tf_keras explicitly; tests where the order matters run the CLI in a fresh process
# (tests/test_import_order.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

pytest_plugins = [
    "tests.fixtures_models",
    "tests.fixtures_eval",
    "tests.fixtures_training",
    "tests.fixtures_safety",
    "tests.fixtures_distill",
]


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """One SavedModel export per Keras file per test run (``TFLITE_OPT_EXPORT_CACHE``, shared by xdist workers
    and by the CLI processes tests start); tests/test_export_cache.py checks the cache itself."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    os.environ["TFLITE_OPT_EXPORT_CACHE"] = str(root / "export-cache")
    yield root / "export-cache"


@pytest.fixture(scope="session")
def digits():
    """Digits as (train_x, train_y, test_x, test_y), images 8x8x1 in [0, 1], float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = 1400
    return x[:split], y[:split], x[split:], y[split:]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, digits):
    """``train.npz`` (x, y), ``test.npz`` (x, y), ``calib.npz`` (x), ``calib.npy`` in one folder."""
    folder = tmp_path_factory.mktemp("data")
    train_x, train_y, test_x, test_y = digits
    np.savez(folder / "train.npz", x=train_x, y=train_y)
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    np.savez(folder / "calib.npz", x=train_x[:200])
    np.save(folder / "calib.npy", train_x[:200])
    return folder


# The slowest modules (measured: several multi-process or training walkthroughs each) start first, so that the
# pytest-xdist workers (--dist loadscope: a module per worker) end together instead of one finishing a long module
# alone at the end.
SLOW_MODULES_FIRST = (
    "test_distribute.py",
    "test_rescue.py",
    "test_faults_kill.py",
    "test_evaluate.py",
    "test_qat.py",
    "test_convert.py",
    "test_compare.py",
    "test_run.py",
    "test_quantizer.py",
    "test_distill.py",
    "test_import_order.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a module stays
