"""The opt-in export cache (``TFLITE_OPT_EXPORT_CACHE``): one export per file's bytes, complete entries only."""

from __future__ import annotations

import shutil

import pytest

from tflite_opt.models import export_cache


def _fake_export(calls):
    def export(target):
        calls.append(target)
        target.mkdir()
        (target / "saved_model.pb").write_bytes(b"pb")

    return export


def test_off_when_unset(monkeypatch, tmp_path):
    monkeypatch.delenv(export_cache.ENV, raising=False)
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    assert export_cache.cached_export(source, "keras3", _fake_export([])) is None


def test_a_hit_reuses_the_entry_and_other_bytes_miss(monkeypatch, tmp_path):
    monkeypatch.setenv(export_cache.ENV, str(tmp_path / "cache"))
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    calls = []
    first = export_cache.cached_export(source, "keras3", _fake_export(calls))
    again = export_cache.cached_export(source, "keras3", _fake_export(calls))
    assert first == again and (first / "saved_model.pb").read_bytes() == b"pb" and len(calls) == 1
    assert export_cache.cached_export(source, "tf_keras", _fake_export(calls)) != first  # the kind is in the key
    source.write_bytes(b"model, retrained")
    assert export_cache.cached_export(source, "keras3", _fake_export(calls)) != first
    assert len(calls) == 3


def test_a_failed_export_leaves_no_entry(monkeypatch, tmp_path):
    monkeypatch.setenv(export_cache.ENV, str(tmp_path / "cache"))
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")

    def broken(target):
        target.mkdir()
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        export_cache.cached_export(source, "keras3", broken)
    assert list((tmp_path / "cache").iterdir()) == []
    calls = []
    assert export_cache.cached_export(source, "keras3", _fake_export(calls)) is not None and len(calls) == 1


def test_a_race_lost_to_a_complete_entry_uses_it(monkeypatch, tmp_path):
    monkeypatch.setenv(export_cache.ENV, str(tmp_path / "cache"))
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    winner = export_cache.cached_export(source, "keras3", _fake_export([]))
    # Another process finished first while this one was exporting: its rename fails, the winner's entry is used.
    shutil.rmtree(winner.parent / "model")
    (winner.parent / "complete").unlink()
    (winner.parent / "other").write_text("")

    def export_then_lose(target):
        _fake_export([])(target)
        (winner.parent / "model").mkdir()
        (winner.parent / "complete").write_text("")

    assert export_cache.cached_export(source, "keras3", export_then_lose) == winner
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [winner.parent.name]


def test_an_unwritable_cache_falls_back_to_no_cache(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(export_cache.ENV, str(blocker / "cache"))
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    assert export_cache.cached_export(source, "keras3", _fake_export([])) is None


def test_convert_twice_exports_once(keras3_cnn_path, tmp_path, monkeypatch):
    """The real path: a Keras file converted twice with the cache on is exported once, and the files agree."""
    from click.testing import CliRunner

    import tflite_opt.models.loading as loading
    from tflite_opt.cli import cli

    monkeypatch.setenv(export_cache.ENV, str(tmp_path / "cache"))
    calls = []
    original = loading._export_to
    monkeypatch.setattr(loading, "_export_to", lambda *a: calls.append(a) or original(*a))
    outputs = []
    for name in ("a.tflite", "b.tflite"):
        result = CliRunner().invoke(cli, ["-q", "convert", str(keras3_cnn_path), "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name).read_bytes())
    assert len(calls) == 1
    assert outputs[0] == outputs[1]
