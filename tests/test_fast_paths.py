"""The fast paths of ``evaluate`` (issue 16) give exactly what the plain ones gave.

Memory-mapped ``.npz``/``.npy`` loading, the one-pass finiteness check, reductions over every core, quantization
into reused buffers, the thread pool without ``concurrent.futures``, package versions from folder names and the
platform string without a subprocess: each against the slow way it replaces.
"""

from __future__ import annotations

import platform
import sys
import threading
import zipfile
from importlib import metadata

import numpy as np
import pytest

from tflite_opt import environment
from tflite_opt.errors import DataError
from tflite_opt.measure.runtime import quantize
from tflite_opt.measure.workers import WorkerPool
from tflite_opt.representative_data import arrays, parallel
from tflite_opt.representative_data.dataset import Dataset, validate
from tflite_opt.specs import TensorSpec


def _spec(dtype="float32", name="x", shape=(None, 3, 4), **quantization):
    return TensorSpec(name=name, shape=shape, dtype=dtype, **quantization)


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array``'s memory belongs to a memory map (its base chain ends in an mmap)."""
    import mmap

    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, mmap.mmap) or (isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap))


@pytest.fixture
def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "x": rng.random((6, 3, 4), dtype=np.float32),
        "fortran": np.asfortranarray(rng.random((5, 7))),
        "y": np.arange(6) % 3,
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 4), np.float32),
    }


def test_stored_npz_members_are_memory_mapped_and_equal(tmp_path, sample_arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **sample_arrays)
    loaded = arrays._npz_arrays(path)
    assert set(loaded) == set(sample_arrays)
    for key, value in sample_arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
    assert _mapped(loaded["x"]) and _mapped(loaded["fortran"])
    assert not _mapped(loaded["empty"])  # nothing to map: NumPy reads it


def test_writing_to_a_mapped_array_never_changes_the_file(tmp_path, sample_arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **sample_arrays)
    before = path.read_bytes()
    loaded = arrays._npz_arrays(path)
    loaded["x"][...] = 7.0  # copy-on-write: the private pages change, the file does not
    assert path.read_bytes() == before
    np.testing.assert_array_equal(np.load(path)["x"], sample_arrays["x"])


def test_compressed_npz_is_read_as_before(tmp_path, sample_arrays):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, **sample_arrays)
    loaded = arrays._npz_arrays(path)
    for key, value in sample_arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    assert not _mapped(loaded["x"])
    assert zipfile.ZipFile(path).getinfo("x.npy").compress_type == zipfile.ZIP_DEFLATED


def test_npy_is_memory_mapped(tmp_path, sample_arrays):
    path = tmp_path / "x.npy"
    np.save(path, sample_arrays["x"])
    dataset = arrays.load_npy(path, [_spec()])
    np.testing.assert_array_equal(dataset.inputs["x"], sample_arrays["x"])
    assert _mapped(dataset.inputs["x"])


def test_a_truncated_stored_member_is_still_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((1000, 3, 4), np.float32))
    content = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("x.npy")
    start = arrays._stored_member_offset(path, info)
    # Declare 9x the samples in the member's .npy header (same header length), sizes left alone.
    header = bytes(content[start : start + 128])
    patched = header.replace(b"(1000, 3, 4)", b"(9000, 3, 4)")
    assert patched != header
    content[start : start + 128] = patched
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="truncated or damaged"):
        arrays.load_npz(path, [_spec()])


def test_non_finite_samples_are_found_by_index_and_huge_finite_ones_pass():
    values = np.ones((50, 3, 4), np.float32)
    values[37, 1, 2] = np.nan
    with pytest.raises(DataError, match="sample 37 .* NaN or Inf"):
        validate(Dataset(inputs={"x": values}, source="d.npz"), [_spec()])
    values[37, 1, 2] = -np.inf
    with pytest.raises(DataError, match="sample 37"):
        validate(Dataset(inputs={"x": values}, source="d.npz"), [_spec()])
    huge = np.full((50, 3, 4), 3e38, np.float32)  # finite, but any sum of them overflows
    huge[3, 0, 0] = -1e38
    dataset = Dataset(inputs={"x": huge}, source="d.npz")
    validate(dataset, [_spec()])
    assert dataset.inputs["x"] is huge
    # The range the check read is kept for later checks, for as long as the input is that array.
    assert dataset.known_ranges() == {"x": (float(np.float32(-1e38)), float(np.float32(3e38)))}
    dataset.inputs["x"] = huge.copy()
    assert dataset.known_ranges() == {}


def test_parallel_reductions_match_one_pass(monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(parallel, "_cores", lambda: 3)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(101, 17)).astype(np.float32)
    values[100, 16], values[0, 0] = 9.5, -8.25
    assert parallel.min_max(values) == (-8.25, 9.5)
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 20)  # blocks of 5 values, across rows and chunk bounds
    assert parallel.min_max(values) == (-8.25, 9.5)
    assert parallel.min_max(values.astype(np.int16)) == (-8, 9)
    values[50, 3] = -np.inf
    assert parallel.min_max(values) == (-np.inf, 9.5)
    values[70, 3] = np.nan  # NaN wins in both, as in np.min/np.max
    low, high = parallel.min_max(values)
    assert np.isnan(low) and np.isnan(high)
    seen = []
    parallel.reduce_chunks(lambda chunk: seen.append((len(chunk), threading.current_thread().name)), values)
    assert sorted(n for n, _ in seen) == [33, 34, 34] and len({name for _, name in seen}) == 3

    def boom(chunk):
        raise ValueError("a chunk failed")

    with pytest.raises(ValueError, match="a chunk failed"):
        parallel.reduce_chunks(boom, values)


@pytest.mark.parametrize(("dtype", "zero_point"), [("int8", -128), ("uint8", 3), ("int16", 0)])
def test_quantizing_into_reused_buffers_gives_the_same_integers(dtype, zero_point):
    spec = _spec(dtype, scale=1 / 255, zero_point=zero_point)
    rng = np.random.default_rng(2)
    scratch: dict = {}
    for _ in range(3):
        values = rng.uniform(-2, 2, (8, 3, 4)).astype(np.float32)
        values[0, 0, :3] = [0.5 / 255, -1.5 / 255, 127.5 / 255]  # ties round away from zero
        expected = quantize(values, spec)
        got = quantize(values, spec, scratch)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.dtype(dtype)
        # Data known to have no negative value skips the sign: the same integers (-0.0 included).
        positive = np.abs(values)
        positive[0, 1, :2] = [0.0, -0.0]
        np.testing.assert_array_equal(quantize(positive, spec, scratch, nonnegative=True), quantize(positive, spec))
    assert quantize(np.float32(0.4), spec, scratch) == quantize(np.float32(0.4), spec)
    assert len(scratch) == 1  # one set of buffers for the one batch shape and dtype


def test_the_pool_runs_tasks_in_order_and_keeps_their_errors():
    order = []
    with WorkerPool(3) as pool:
        first = pool.submit(lambda: order.append("a") or 1)
        assert first.result() == 1
        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result()
        assert pool.submit(lambda x, y: x + y, 2, 3).result() == 5
        helpers = list(pool._threads)
        assert 1 <= len(helpers) <= 2
    assert not any(thread.is_alive() for thread in helpers)
    assert order == ["a"]


def test_a_pool_without_helpers_runs_tasks_at_once():
    caller = threading.current_thread()
    with WorkerPool(1) as pool:
        task = pool.submit(threading.current_thread)
        assert task.result() is caller
        with pytest.raises(KeyError):
            pool.submit(lambda: {}["missing"]).result()


def test_package_versions_from_folder_names_match_importlib_metadata():
    for distribution in [*environment.PACKAGES.values(), "tensorflow-model-optimization", "ai-edge-litert"]:
        try:
            expected = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            expected = None
        assert environment.package_version(distribution) == expected, distribution
    assert environment.package_version("no-such-distribution-here", "numpy") == metadata.version("numpy")
    assert environment.package_version("no-such-distribution-here") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fast path is for Linux")
def test_the_platform_string_is_platform_platform():
    assert environment.platform_string() == platform.platform()


def test_two_quantized_inputs_of_one_shape_keep_their_own_buffers():
    """A worker's scratch serves every input of a batch: inputs of the same shape and dtype (one with a zero
    point, one without) must not share result buffers, or the first is overwritten before it is set."""
    from tflite_opt.measure.runtime import SignatureInfo, TensorBinding, prepare_inputs

    specs = [_spec("int8", name, scale=1 / 255, zero_point=zp) for name, zp in (("a", -128), ("b", 0))]
    info = SignatureInfo("serving_default", 0, tuple(TensorBinding(s, i, (-1, 3, 4)) for i, s in enumerate(specs)), ())
    rng = np.random.default_rng(4)
    chunk = {
        "a": rng.uniform(0, 1, (4, 3, 4)).astype(np.float32),
        "b": rng.uniform(-0.4, 0.4, (4, 3, 4)).astype(np.float32),
    }
    scratch: dict = {}
    for _ in range(2):
        got = prepare_inputs(info, chunk, 4, scratch=scratch, nonnegative=frozenset({"a"}))
        for spec in specs:
            np.testing.assert_array_equal(got[spec.name], quantize(chunk[spec.name], spec))
