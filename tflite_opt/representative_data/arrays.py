"""``.npz`` and ``.npy`` loaders.

Arrays stored uncompressed (``np.savez``, ``np.save``) are memory-mapped copy-on-write rather than read: loading
takes no time and no memory of its own, pages come in as the inference workers reach them (in parallel), and
nothing can write to the file. The zip's CRC of a memory-mapped ``.npz`` member is therefore not checked (a
``.npy`` file has none either); sizes still are. Compressed members (``np.savez_compressed``) are read by NumPy.
"""

from __future__ import annotations

import mmap
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.representative_data.dataset import Dataset
from tflite_opt.specs import TensorSpec

LABEL_KEY = "y"
SINGLE_INPUT_KEY = "x"


def normalize_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """Class ids as int64 ``(n,)``; one-hot (or probability) rows are argmax-ed."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"labels 'y' in {source} must be class ids (n,) or one-hot (n, classes), got {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(np.mod(labels, 1) == 0):
            raise DataError(f"labels 'y' in {source} must be whole class ids")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"labels 'y' in {source} must be integer class ids, got {labels.dtype}")
    return labels.astype(np.int64)


def check_npy_size(handle, size: int, source: str) -> None:
    """Refuse an array whose ``.npy`` header declares more data than the ``size`` bytes stored, before NumPy
    allocates the declared array (a damaged or hostile header would otherwise ask for any amount of memory).

    ``handle`` is positioned at the start of the ``.npy`` data; headers this cannot parse are left to ``np.load``.

    Raises:
        DataError: naming ``source``.
    """
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(handle)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        start = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError):
        return
    if dtype.hasobject:
        return
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if start + declared > size:
        raise DataError(
            f"{source} is truncated or damaged: its header declares an array of shape {tuple(shape)} and dtype "
            f"{dtype} ({declared:,} bytes) but it holds {max(size - start, 0):,} bytes of data; re-create the file"
        )


def _map_array(path: Path, data_offset: int, size: int) -> np.ndarray | None:
    """The ``.npy`` array whose bytes start at ``data_offset`` in ``path`` (``size`` bytes), memory-mapped
    copy-on-write; ``None`` where it cannot be (an empty or object array, a header NumPy must parse itself)."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as handle:
        handle.seek(data_offset)
        try:
            version = npy_format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                return None
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
        except (ValueError, OSError, EOFError, SyntaxError, TypeError):
            return None
        start = handle.tell()
        count = int(np.prod(shape, dtype=np.int64))
        if dtype.hasobject or count == 0 or start - data_offset + count * dtype.itemsize > size:
            return None
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=start)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _stored_member_offset(path: Path, info: zipfile.ZipInfo) -> int | None:
    """Where an uncompressed, unencrypted zip member's bytes start in the file (after its local header)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        members = set(archive.zip.namelist())
        arrays = {}
        for key in archive.files:
            info = archive.zip.getinfo(f"{key}.npy" if f"{key}.npy" in members else key)
            with archive.zip.open(info) as member:
                check_npy_size(member, info.file_size, f"array '{key}' in {path}")
            offset = _stored_member_offset(path, info)
            array = (
                None if offset is None or not hasattr(mmap, "MAP_PRIVATE") else _map_array(path, offset, info.file_size)
            )
            arrays[key] = array if array is not None else archive[key]
        return arrays


def load_npz(path: Path, input_specs: Sequence[TensorSpec]) -> Dataset:
    try:
        arrays = _npz_arrays(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npz archive: {exc}") from exc
    labels = arrays.pop(LABEL_KEY, None)
    names = [spec.name for spec in input_specs]
    if len(names) == 1 and SINGLE_INPUT_KEY in arrays and names[0] not in arrays:
        arrays[names[0]] = arrays.pop(SINGLE_INPUT_KEY)
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        expected = ", ".join(repr(n) for n in names) + (" (or 'x')" if len(names) == 1 else "")
        raise DataError(
            f"{path} has array(s) {', '.join(repr(u) for u in unknown)} that match no model input; "
            f"expected keys {expected} and optional labels 'y'"
        )
    dataset = Dataset(inputs=arrays, source=str(path))
    if labels is not None:
        dataset.labels = normalize_labels(labels, str(path))
    return dataset


def load_npy(path: Path, input_specs: Sequence[TensorSpec]) -> Dataset:
    if len(input_specs) != 1:
        raise DataError(
            f"{path} is a .npy file (one array) but the model has {len(input_specs)} inputs; "
            "use a .npz keyed by input name"
        )
    try:
        with open(path, "rb") as handle:
            check_npy_size(handle, path.stat().st_size, str(path))
        array = _map_array(path, 0, path.stat().st_size) if hasattr(mmap, "MAP_PRIVATE") else None
        if array is None:
            array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array: {exc}") from exc
    return Dataset(inputs={input_specs[0].name: array}, source=str(path))
