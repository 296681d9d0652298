"""Damaged SavedModel directories and image folders: each ends with exit 1 and one line naming the file (or exit 0
where the input is legitimately usable), never a traceback or a signal death. The variants are generated here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli


def _png(path: Path, array: np.ndarray, **kwargs) -> Path:
    from PIL import Image

    Image.fromarray(array, **kwargs).save(path)
    return path


def _image_cases(folder: Path) -> dict[str, tuple[Path, int]]:
    """name -> (image folder, expected exit code). Each folder holds good digits plus one odd file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    good = (rng.random((8, 8)) * 255).astype(np.uint8)
    cases: dict[str, tuple[Path, int]] = {}

    def case(name: str, expected: int, make) -> None:
        target = folder / name
        target.mkdir()
        _png(target / "a_good.png", good)
        make(target / "z_odd")
        cases[name] = (target, expected)

    def truncated_png(base: Path) -> None:
        data = _png(base.with_suffix(".png"), good).read_bytes()
        base.with_suffix(".png").write_bytes(data[: len(data) // 2])

    def truncated_jpeg(base: Path) -> None:
        Image.fromarray(good).save(base.with_suffix(".jpg"), quality=90)
        data = base.with_suffix(".jpg").read_bytes()
        base.with_suffix(".jpg").write_bytes(data[: len(data) // 3])

    def animated_gif(base: Path) -> None:
        frames = [Image.fromarray(good), Image.fromarray(255 - good)]
        frames[0].save(base.with_suffix(".gif"), save_all=True, append_images=frames[1:], duration=50, loop=0)

    case("truncated_png", 1, truncated_png)
    case("truncated_jpeg", 1, truncated_jpeg)
    case("text_named_png", 1, lambda b: b.with_suffix(".png").write_text("not an image at all\n"))
    case("zero_byte", 1, lambda b: b.with_suffix(".png").write_bytes(b""))
    case("png_header_only", 1, lambda b: b.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n"))
    case("one_pixel", 0, lambda b: _png(b.with_suffix(".png"), good[:1, :1]))
    case("sixteen_bit", 0, lambda b: Image.fromarray(good.astype(np.uint16) * 257).save(b.with_suffix(".png")))
    case(
        "cmyk_jpeg", 0, lambda b: Image.fromarray(np.stack([good] * 3, -1)).convert("CMYK").save(b.with_suffix(".jpg"))
    )
    case("animated_gif", 0, animated_gif)
    case("palette_png", 0, lambda b: Image.fromarray(good).convert("P").save(b.with_suffix(".png")))
    case("rgba_png", 0, lambda b: Image.fromarray(np.stack([good] * 4, -1)).save(b.with_suffix(".png")))
    return cases


def test_damaged_image_folders(tflite_files, tmp_path):
    cases = _image_cases(tmp_path)
    assert len(cases) >= 10
    outcomes = {}
    for name, (folder, expected) in cases.items():
        result = CliRunner().invoke(
            cli, ["-q", "evaluate", str(tflite_files["fp32"]), "--data", str(folder), "--runs", "0", "--format", "json"]
        )
        outcomes[name] = result.exit_code
        assert result.exit_code == expected, (name, result.output)
        assert "Traceback" not in result.output
        if expected == 1:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "z_odd" in lines[0] and "cannot read image" in lines[0], (name, lines)
    assert sorted(outcomes.values()).count(1) == 5


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from tflite_opt.representative_data.images import load_image_folder
    from tflite_opt.specs import TensorSpec

    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "mid.png")
    dataset = load_image_folder(tmp_path, [TensorSpec("image", (None, 4, 4, 1), "float32")], preprocess="raw")
    assert abs(float(dataset.inputs["image"].mean()) - 127.5) < 1.0


def _savedmodel_cases(source: Path, folder: Path) -> dict[str, Path]:
    cases = {}

    def case(name: str, damage) -> None:
        target = folder / name
        shutil.copytree(source, target)
        damage(target)
        cases[name] = target

    variables = "variables/variables"
    data_shard = next((source / "variables").glob("variables.data-*")).name
    case("no_saved_model_pb", lambda t: (t / "saved_model.pb").unlink())
    case("empty_saved_model_pb", lambda t: (t / "saved_model.pb").write_bytes(b""))
    case("garbage_saved_model_pb", lambda t: (t / "saved_model.pb").write_bytes(b"\x08\x96\x01garbage" * 50))
    case(
        "truncated_saved_model_pb",
        lambda t: (t / "saved_model.pb").write_bytes((source / "saved_model.pb").read_bytes()[:200]),
    )
    case("no_variables_folder", lambda t: shutil.rmtree(t / "variables"))
    case("no_index", lambda t: (t / f"{variables}.index").unlink())
    case(
        "truncated_index",
        lambda t: (t / f"{variables}.index").write_bytes((source / f"{variables}.index").read_bytes()[:20]),
    )
    case("no_data_shard", lambda t: (t / "variables" / data_shard).unlink())
    case(
        "truncated_data_shard",
        lambda t: (t / "variables" / data_shard).write_bytes((source / "variables" / data_shard).read_bytes()[:64]),
    )
    case("empty_folder", lambda t: [p.unlink() if p.is_file() else shutil.rmtree(p) for p in list(t.iterdir())])
    return cases


@pytest.mark.slow
def test_damaged_savedmodels(two_io_savedmodel, tmp_path):
    cases = _savedmodel_cases(two_io_savedmodel, tmp_path / "models")
    assert len(cases) >= 10
    for name, model in cases.items():
        out = tmp_path / f"{name}.tflite"
        result = CliRunner().invoke(cli, ["-q", "convert", str(model), "-o", str(out), "--mode", "fp32"])
        assert result.exit_code == 1, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output, (name, lines)
        assert not out.exists()
