"""Image-folder loader: ``DIR/*.png`` (unlabelled) or ``DIR/<class>/*`` (labelled, classes in sorted order)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tflite_opt.errors import DataError, first_line
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES, Dataset
from tflite_opt.specs import TensorSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    folder: Path, input_specs: Sequence[TensorSpec], *, preprocess: str = "unit", limit: int | None = None
) -> Dataset:
    if preprocess not in PREPROCESS_CHOICES:
        raise DataError(f"unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS_CHOICES)}")
    if len(input_specs) != 1:
        raise DataError(f"image folders feed one-input models; this model has {len(input_specs)} inputs")
    spec = input_specs[0]
    shape = spec.sample_shape
    if len(shape) != 3 or shape[0] is None or shape[1] is None or shape[2] not in (1, 3, 4):
        raise DataError(
            f"input '{spec.name}' has shape {spec.shape}; image folders need a fixed (height, width, channels) "
            "input, or pass --input-shape"
        )
    height, width, channels = shape
    flat = _images_in(folder)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path]
    labels: list[int] | None
    class_names = None
    if flat or not class_dirs:
        files, labels = flat, None
    else:
        class_names = [d.name for d in class_dirs]
        files, labels = [], []
        for index, class_dir in enumerate(class_dirs):
            for image in _images_in(class_dir):
                files.append(image)
                labels.append(index)
        if limit is not None and len(files) > limit:
            # Keep every class represented when the user asks for a subset.
            order = np.random.default_rng(0).permutation(len(files))[:limit]
            order.sort()
            files = [files[i] for i in order]
            labels = [labels[i] for i in order]
    if limit is not None:
        files = files[:limit]
        labels = None if labels is None else labels[:limit]
    if not files:
        raise DataError(f"no images (.jpg, .png, .bmp) in {folder}")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    array = np.empty((len(files), height, width, channels), dtype=np.float32)
    for index, file in enumerate(files):
        array[index] = _read_image(file, index, mode, height, width).reshape(height, width, channels)
    if np.dtype(spec.dtype).kind == "f":
        array = _preprocess(array, preprocess, channels)
    return Dataset(
        inputs={spec.name: array},
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        source=str(folder),
        class_names=class_names,
    )


def _read_image(file: Path, index: int, mode: str, height: int, width: int) -> np.ndarray:
    """One image as float32 pixels in 0-255, converted to ``mode`` and resized (the first frame of an animation).

    16-bit images are scaled to 8-bit range first (PIL's own conversion would clip them to white); CMYK, palette
    and grey images are converted like any other.

    Raises:
        DataError: naming the file, for anything PIL cannot decode (truncated, not an image, empty, a bomb).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                wide = np.asarray(image, dtype=np.float32)
                peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
                image = Image.fromarray(np.clip(wide * (255.0 / peak), 0, 255).astype(np.uint8), mode="L")
            image = image.convert(mode).resize((width, height), Image.BILINEAR)
            return np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = first_line(exc).replace(str(file), "").strip(" :'\"") or type(exc).__name__
        raise DataError(f"cannot read image {file} (sample {index}): {reason}; remove or replace the file") from exc


def _preprocess(array: np.ndarray, preprocess: str, channels: int) -> np.ndarray:
    if preprocess == "raw":
        return array
    if preprocess == "unit":
        return array / 255.0
    if preprocess == "symmetric":
        return array / 127.5 - 1.0
    if channels != 3:
        raise DataError("--preprocess imagenet needs 3-channel images")
    return (array / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
