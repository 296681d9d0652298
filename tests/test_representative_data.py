"""Data loaders: .npz, .npy, image folders, 'random' — and the validation every sample goes through."""

from __future__ import annotations

import numpy as np
import pytest

from tflite_opt.errors import DataError
from tflite_opt.representative_data import load_data, split_validation
from tflite_opt.specs import TensorSpec

IMAGE = TensorSpec("image", (None, 8, 8, 3))


def write_images(folder, count, size=(12, 10), color=(255, 0, 0), mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new(mode, size, color).save(folder / f"img_{i}.png")


def test_labelled_image_folder_in_sorted_class_order(tmp_path):
    write_images(tmp_path / "dog", 2, color=(0, 255, 0))
    write_images(tmp_path / "cat", 3, color=(255, 0, 0))
    data = load_data(tmp_path, [IMAGE])
    assert data.class_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    images = data.inputs["image"]
    assert images.shape == (5, 8, 8, 3) and images.dtype == np.float32
    assert images[0, 0, 0].tolist() == [1.0, 0.0, 0.0]  # red cat, unit scale
    assert images[4, 0, 0].tolist() == [0.0, 1.0, 0.0]  # green dog


@pytest.mark.parametrize(
    "preprocess, expected", [("unit", 1.0), ("symmetric", 1.0), ("raw", 255.0), ("imagenet", (1.0 - 0.485) / 0.229)]
)
def test_preprocessing_of_a_flat_unlabelled_folder(tmp_path, preprocess, expected):
    write_images(tmp_path, 2, color=(255, 255, 255))
    data = load_data(tmp_path, [IMAGE], preprocess=preprocess)
    assert data.labels is None
    assert data.inputs["image"][0, 0, 0, 0] == pytest.approx(expected, rel=1e-5)


def test_images_are_converted_to_the_inputs_channels(tmp_path):
    write_images(tmp_path, 1, color=(255, 255, 255))
    data = load_data(tmp_path, [TensorSpec("gray", (None, 4, 4, 1))])
    assert data.inputs["gray"].shape == (1, 4, 4, 1)
    assert data.inputs["gray"].max() == pytest.approx(1.0)


def test_image_folder_needs_a_fixed_image_input(tmp_path):
    write_images(tmp_path, 1)
    with pytest.raises(DataError, match="fixed \\(height, width, channels\\)"):
        load_data(tmp_path, [TensorSpec("image", (None, None, None, 3))])


def test_npz_one_hot_labels_and_single_input_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 8, 8, 3)), y=np.eye(3)[[2, 0, 1, 2]])
    data = load_data(path, [IMAGE])
    assert data.labels.tolist() == [2, 0, 1, 2]
    assert data.inputs["image"].dtype == np.float32  # float64 cast to the input's float32


def test_npz_keyed_by_input_name_for_two_inputs(tmp_path):
    specs = [TensorSpec("a", (None, 2)), TensorSpec("b", (None, 3), "int32")]
    path = tmp_path / "d.npz"
    np.savez(path, a=np.ones((5, 2)), b=np.arange(15, dtype=np.int64).reshape(5, 3))
    data = load_data(path, specs, num_samples=3)
    assert len(data) == 3 and data.inputs["b"].dtype == np.int32
    np.savez(path, a=np.ones((5, 2)), b=np.ones((4, 3)))
    with pytest.raises(DataError, match="different sample counts"):
        load_data(path, specs)
    np.savez(path, a=np.ones((5, 2)), b=np.full((5, 3), 0.5))
    with pytest.raises(DataError, match="non-integer floats"):
        load_data(path, specs)


def test_npy_cannot_feed_two_inputs(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((2, 2)))
    with pytest.raises(DataError, match="2 inputs; use a .npz"):
        load_data(path, [TensorSpec("a", (None, 2)), TensorSpec("b", (None, 2))])


def test_inf_is_rejected_with_the_sample_index(tmp_path):
    x = np.zeros((6, 8, 8, 3), np.float32)
    x[4, 1, 1, 1] = np.inf
    path = tmp_path / "d.npy"
    np.save(path, x)
    with pytest.raises(DataError, match="sample 4 .*NaN or Inf"):
        load_data(path, [IMAGE])


def test_label_count_mismatch_and_out_of_range(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 8, 8, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        load_data(path, [IMAGE])
    np.savez(path, x=np.zeros((3, 8, 8, 3)), y=np.array([0, 1, 7]))
    data = load_data(path, [IMAGE])
    with pytest.raises(DataError, match="label 7 of sample 2 .* 5 classes"):
        data.check_labels(5)


def test_random_only_when_allowed_and_always_warned():
    with pytest.raises(DataError, match="not allowed here"):
        load_data("random", [IMAGE])
    data = load_data("random", [IMAGE], allow_random=True, num_samples=7)
    assert data.inputs["image"].shape == (7, 8, 8, 3)
    assert data.warnings and "meaningless" in data.warnings[0]


def test_unknown_path_and_suffix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "missing.npz", [IMAGE])
    other = tmp_path / "data.csv"
    other.write_text("1,2,3")
    with pytest.raises(DataError, match="expected a .npz or .npy file"):
        load_data(other, [IMAGE])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_data(broken, [IMAGE])


def test_validation_split_is_disjoint_and_sized(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    np.savez(path, x=x, y=np.arange(20) % 2)
    data = load_data(path, [TensorSpec("v", (None, 1))])
    train, val = split_validation(data, 0.25)
    assert len(train) == 15 and len(val) == 5
    assert not set(train.inputs["v"][:, 0]) & set(val.inputs["v"][:, 0])
    assert split_validation(data, 0.0) == (data, None)
    with pytest.raises(DataError, match="validation split"):
        split_validation(data, 1.0)
