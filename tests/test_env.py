"""``tflite-opt env``: versions for bug reports, without importing TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from click.testing import CliRunner

from tflite_opt.cli import cli


def test_env_json_names_the_installed_versions():
    result = CliRunner().invoke(cli, ["env", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tensorflow"] == metadata.version("tensorflow")
    assert info["ai_edge_litert"] == metadata.version("ai-edge-litert")
    assert info["tfmot"] == metadata.version("tensorflow-model-optimization")
    assert info["python"] == sys.version.split()[0]
    assert isinstance(info["cpu_flags"], list)


def test_env_table_does_not_import_tensorflow():
    code = (
        "import sys; from click.testing import CliRunner; from tflite_opt.cli import cli; "
        "r = CliRunner().invoke(cli, ['env']); assert r.exit_code == 0, r.output; "
        "assert 'tensorflow' in r.stdout; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
