"""The global flags: accepted before or after the subcommand; --strict makes warnings errors; a mistyped command
gets a suggestion."""

from __future__ import annotations

from click.testing import CliRunner

from tflite_opt.cli import cli


def test_strict_turns_a_data_warning_into_exit_1(tflite_files):
    args = ["evaluate", str(tflite_files["fp32"]), "--data", "random", "--runs", "0"]
    warned = CliRunner().invoke(cli, args)
    assert warned.exit_code == 0 and "warning: using random data" in warned.stderr
    strict = CliRunner().invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1
    assert "using random data" in strict.stderr and "--strict makes warnings errors" in strict.stderr


def test_quiet_after_the_subcommand_and_a_suggestion_for_a_typo(tflite_files):
    loud = CliRunner().invoke(cli, ["evaluate", str(tflite_files["fp32"]), "--data", "random", "--runs", "0", "-q"])
    assert loud.exit_code == 0 and loud.stderr.startswith("warning: using random data")
    typo = CliRunner().invoke(cli, ["convrt"])
    assert typo.exit_code == 2 and "No such command 'convrt'. Did you mean 'convert'?" in typo.stderr
