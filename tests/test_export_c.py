"""``tflite-opt export-c``: the array compiles (g++, and gcc as C11), reads back byte for byte, is 16-byte aligned;
the output is deterministic, the name validated, the input never overwritten."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

GXX = shutil.which("g++")
GCC = shutil.which("gcc")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no C++ compiler (g++) on PATH; .ci/run installs it")

# Writes the array back out, after checking the address TFLM will read the flatbuffer from.
READ_BACK = """
#include <stdint.h>
#include <stdio.h>
#include "model.h"

int main(int argc, char** argv) {
  if ((uintptr_t)g_model % 16 != 0) {
    fprintf(stderr, "g_model at %p is not 16-byte aligned\\n", (const void*)g_model);
    return 2;
  }
  FILE* out = fopen(argv[1], "wb");
  if (out == NULL || fwrite(g_model, 1, g_model_len, out) != g_model_len) return 3;
  return fclose(out) == 0 ? 0 : 4;
}
"""
# A one-byte object before the array: without alignas, a 32-bit MCU toolchain may put the array right after it.
PADDING = "extern const unsigned char g_pad[1];\nconst unsigned char g_pad[1] = {1};\n"
# x86-64's ABI aligns every global array of 16 bytes or more, so the run-time check above cannot catch a missing
# alignas on this host; the alignment the array is *declared* with can, at compile time.
DECLARED_ALIGNMENT = """
#include "model.cc"
static_assert(__alignof__(g_model) >= 16, "g_model is not declared 16-byte aligned");
"""


def _export(*args: str):
    return CliRunner().invoke(cli, ["export-c", *args])


def _build_and_read_back(tmp_path, compiler: str, main_name: str, sources: list, flags: list[str]) -> bytes:
    program = tmp_path / "read_back"
    main = tmp_path / main_name
    main.write_text(READ_BACK)
    pad = tmp_path / (main_name.replace("main", "pad"))
    pad.write_text(PADDING)
    compiled = subprocess.run(
        [compiler, *flags, "-O2", "-Wall", "-Werror", "-o", str(program), str(pad), *map(str, sources), str(main)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stderr
    copy = tmp_path / "copy.tflite"
    ran = subprocess.run([str(program), str(copy)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return copy.read_bytes()


@needs_gxx
def test_compiled_array_is_the_file_byte_for_byte_and_aligned(tmp_path, tflite_files):
    model = tflite_files["int8"]
    result = _export(str(model), "-o", str(tmp_path / "model.cc"), "--header", str(tmp_path / "model.h"))
    assert result.exit_code == 0, result.output
    size = model.stat().st_size
    assert result.stdout == f"g_model: {size:,} bytes -> {tmp_path / 'model.cc'} and {tmp_path / 'model.h'}\n"
    source = (tmp_path / "model.cc").read_text()
    assert "alignas(16) const unsigned char g_model[] = {" in source
    assert f"const unsigned int g_model_len = {size};" in source
    assert '#include "model.h"' in source
    copy = _build_and_read_back(tmp_path, GXX, "main.cc", [tmp_path / "model.cc"], ["-std=c++17"])
    assert copy == model.read_bytes()
    (tmp_path / "check.cc").write_text(DECLARED_ALIGNMENT)
    checked = subprocess.run(
        [GXX, "-std=c++17", "-fsyntax-only", str(tmp_path / "check.cc")], capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(GCC is None, reason="no C compiler (gcc) on PATH")
def test_the_same_source_compiles_as_c11(tmp_path, tflite_files):
    model = tflite_files["int8"]
    assert _export(str(model), "-o", str(tmp_path / "model.c"), "--header", str(tmp_path / "model.h")).exit_code == 0
    copy = _build_and_read_back(tmp_path, GCC, "main.c", [tmp_path / "model.c"], ["-std=c11"])
    assert copy == model.read_bytes()


@needs_gxx
def test_without_a_header_the_source_declares_the_array_itself(tmp_path, tflite_files):
    model = tflite_files["int8"]
    assert _export(str(model), "-o", str(tmp_path / "data.cc"), "--name", "my_model").exit_code == 0
    source = (tmp_path / "data.cc").read_text()
    assert "#include" not in source.split("alignas")[0].replace("#include <stdalign.h>", "")
    assert "extern const unsigned char my_model[];" in source and "my_model_len" in source
    # Linked from another translation unit through its own declaration.
    (tmp_path / "model.h").write_text(
        'extern "C" const unsigned char my_model[];\nextern "C" const unsigned int my_model_len;\n'
        "#define g_model my_model\n#define g_model_len my_model_len\n"
    )
    copy = _build_and_read_back(tmp_path, GXX, "main.cc", [tmp_path / "data.cc"], ["-std=c++17"])
    assert copy == model.read_bytes()


def test_output_is_deterministic(tmp_path, tflite_files):
    model = tflite_files["int8"]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        result = _export(
            str(model), "-o", str(tmp_path / folder / "model.cc"), "--header", str(tmp_path / folder / "model.h")
        )
        assert result.exit_code == 0, result.output
    for name in ("model.cc", "model.h"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.cc", "model.h"]  # no temp files left
    header = (tmp_path / "a" / "model.h").read_text()
    assert "#ifndef MODEL_H_" in header and "extern const unsigned char g_model[];" in header


def test_header_in_a_subfolder_is_included_by_relative_path(tmp_path, tflite_files):
    result = _export(
        str(tflite_files["int8"]),
        "-o",
        str(tmp_path / "model.cc"),
        "--header",
        str(tmp_path / "include" / "model_data.h"),
    )
    assert result.exit_code == 0, result.output
    assert '#include "include/model_data.h"' in (tmp_path / "model.cc").read_text()
    assert "#ifndef MODEL_DATA_H_" in (tmp_path / "include" / "model_data.h").read_text()


@pytest.mark.parametrize(
    "name, message",
    [
        ("9lives", "'9lives' is not a C identifier"),
        ("g-model", "'g-model' is not a C identifier"),
        ("int", "'int' is a C/C++ keyword"),
        ("class", "'class' is a C/C++ keyword"),
        ("__model", "'__model' is reserved for the compiler"),
        ("_Model", "'_Model' is reserved for the compiler"),
    ],
)
def test_bad_names_are_usage_errors(tmp_path, tflite_files, name, message):
    result = _export(str(tflite_files["int8"]), "-o", str(tmp_path / "model.cc"), "--name", name)
    assert result.exit_code == 2
    assert f"Invalid value for '--name': {message}" in result.stderr
    assert not (tmp_path / "model.cc").exists()


def test_the_input_is_never_overwritten(tmp_path, tflite_files):
    model = tmp_path / "model.tflite"
    model.write_bytes(tflite_files["int8"].read_bytes())
    for args in (["-o", str(model)], ["-o", str(tmp_path / "m.cc"), "--header", str(model)]):
        result = _export(str(model), *args)
        assert result.exit_code == 1
        assert f"would overwrite the input {model}" in result.stderr
    result = _export(str(model), "-o", str(tmp_path / "m.cc"), "--header", str(tmp_path / "m.cc"))
    assert result.exit_code == 1 and "is the same file as -o" in result.stderr
    assert model.read_bytes() == tflite_files["int8"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_a_file_that_is_not_tflite_is_refused(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model at all")
    result = _export(str(junk), "-o", str(tmp_path / "model.cc"))
    assert result.exit_code == 1
    assert "is not a .tflite file (no 'TFL3' flatbuffer identifier)" in result.stderr
    assert not (tmp_path / "model.cc").exists()


def test_source_text_wraps_twelve_bytes_a_line():
    from tflite_opt.reporting.c_array import include_guard, source_text

    text = source_text(bytes(range(14)), "g_x", source_name="x.tflite", include="x.h")
    assert "  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,\n  0x0c, 0x0d,\n};" in text
    assert text.endswith("const unsigned int g_x_len = 14;\n")
    assert include_guard("3d-model.h") == "TFLITE_3D_MODEL_H_"
    assert include_guard("__weird__.h") == "WEIRD_H_"
