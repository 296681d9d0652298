"""The unsafe-layer scan fails closed: a config it cannot read, custom objects and file-loading layers are refused
before Keras deserializes anything (and before TensorFlow is imported); --trust-model overrides."""

from __future__ import annotations

import json
import zipfile

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.errors import ModelLoadError
from tflite_opt.models.safety import unsafe_layers

METADATA = json.dumps({"keras_version": "3.13.0", "date_saved": "2026-12-01"})


def _layer(class_name, name, module="keras.layers", registered_name=None, **config):
    return {
        "module": module,
        "class_name": class_name,
        "registered_name": registered_name,
        "config": {"name": name, **config},
    }


def _model(*layers):
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": "m", "layers": list(layers)},
    }


def _archive(path, config_text):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", METADATA)
        archive.writestr("config.json", config_text)
        archive.writestr("model.weights.h5", b"")
    return path


CASES = {
    "malformed_json": ('{"class_name": "Sequential", "config": {', "is not valid JSON (line 1, column"),
    "unexpected_structure": (json.dumps([1, 2, 3]), "unexpected structure"),
    "custom_object": (
        json.dumps(_model(_layer("Scale", "scale", module="my_pkg.layers", registered_name="my_pkg>Scale"))),
        "scale (Scale: custom object",
    ),
    "tfsm_layer": (
        json.dumps(_model(_layer("TFSMLayer", "wrapped", filepath="/tmp/sm"))),
        "wrapped (TFSMLayer: loads external files)",
    ),
    "vocabulary_file": (
        json.dumps(_model(_layer("StringLookup", "lookup", vocabulary="/etc/words.txt"))),
        "lookup (StringLookup: reads its vocabulary from a file)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_keras_files_are_refused_with_one_line(tmp_path, case):
    text, expected = CASES[case]
    model = _archive(tmp_path / f"{case}.keras", text)
    out = tmp_path / "m.tflite"
    result = CliRunner().invoke(cli, ["-q", "convert", str(model), "-o", str(out), "--mode", "fp32"])
    assert result.exit_code == 1, result.output
    assert expected in result.stderr and "--trust-model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_trust_model_skips_the_scan(tmp_path):
    model = _archive(tmp_path / "bad.keras", "{not json")
    result = CliRunner().invoke(cli, ["convert", str(model), "-o", str(tmp_path / "m.tflite"), "--trust-model"])
    # Past the scan, Keras itself reports the damaged archive.
    assert result.exit_code == 1 and "unsafe" not in result.stderr


def test_builtin_layers_pass_the_scan():
    config = _model(_layer("Dense", "d", units=3), _layer("StringLookup", "lookup", vocabulary=["a", "b"]))
    assert unsafe_layers(config) == []
    with pytest.raises(ModelLoadError, match="unexpected structure"):
        unsafe_layers({"class_name": 3})
