"""The README is the front door: its command reference is exactly the commands' --help."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location(
        "update_readme_reference", ROOT / "scripts/update_readme_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_is_in_the_readme():
    from tflite_opt.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"### tflite-opt {name}\n" in readme, name


def test_readme_reference_matches_help():
    generator = _generator()
    readme = (ROOT / "README.md").read_text()
    assert generator.updated_readme(readme) == readme, "run: python scripts/update_readme_reference.py"


def test_readme_names_the_demo_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/demo" in readme and "scripts/test" in readme
