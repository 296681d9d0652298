"""TOML with line numbers: ``tomllib`` parses, this finds the line of each key so errors can name it.

``tomllib`` gives no positions, so the text is scanned once for table headers (``[a.b]``, ``[[a]]``) and
``key = value`` lines; every key gets a path such as ``("variant", 2, "mode")`` (arrays of tables are indexed
from 0). Keys inside inline tables and multi-line arrays are reported at the line of the key that holds them.

:class:`TableReader` then reads typed values with one-line errors: ``pipeline.toml, line 14: unknown key 'mdoe'
in [[variant]] 'int8'; did you mean 'mode'?``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tflite_opt.errors import TfliteOptError

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY_PART = rf"(?:{_BARE}|{_QUOTED})"
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_PART_RE = re.compile(_KEY_PART)

Path_ = tuple[Any, ...]


class PipelineError(TfliteOptError):
    """The pipeline file is invalid: the message names the file, the line and the key."""


def _parts(dotted: str) -> list[str]:
    return [p[1:-1] if p[0] in "\"'" else p for p in _PART_RE.findall(dotted)]


def key_lines(text: str) -> dict[Path_, int]:
    """Map every table and key path in ``text`` to its 1-based line (the first line it appears on)."""
    lines: dict[Path_, int] = {}
    array_index: dict[tuple[str, ...], int] = {}
    table: Path_ = ()
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if raw.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER_RE.match(raw)
        if header:
            names = _parts(header.group(2))
            resolved: list[Any] = []
            for depth, name in enumerate(names):
                resolved.append(name)
                prefix = tuple(names[: depth + 1])
                last = depth == len(names) - 1
                if header.group(1) == "[[" and last:
                    array_index[prefix] = array_index.get(prefix, -1) + 1
                    # A new element starts its own sub-arrays afresh.
                    for other in [k for k in array_index if len(k) > len(prefix) and k[: len(prefix)] == prefix]:
                        del array_index[other]
                if prefix in array_index:
                    resolved.append(array_index[prefix])
            table = tuple(resolved)
            lines.setdefault(table, number)
            continue
        key = _KEY_RE.match(raw)
        if key:
            lines.setdefault(table + tuple(_parts(key.group(1))), number)
            rest = raw[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return lines


class TableReader:
    """Typed access to a parsed TOML document, with errors that name the file, the line and the key."""

    def __init__(self, path: str | Path, text: str) -> None:
        self.path = Path(path)
        self.text = text
        try:
            self.document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{self.path.name} is not valid TOML: {exc}") from exc
        self.lines = key_lines(text)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of the nearest enclosing key/table that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: Path_, message: str) -> PipelineError:
        line = self.line(path)
        where = f"{self.path.name}, line {line}" if line else self.path.name
        return PipelineError(f"{where}: {message}")

    def check_keys(self, table: Mapping[str, Any], path: Path_, allowed: Iterable[str], label: str) -> None:
        """Refuse a key that is not in ``allowed`` (suggesting the closest one)."""
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed keys: {', '.join(allowed)}"
                raise self.error(tuple(path) + (key,), f"unknown key '{key}' in {label}{hint}")

    def table(self, parent: Mapping[str, Any], key: str, path: Path_, label: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.error(tuple(path) + (key,), f"'{key}' must be a table ({label}), got {_describe(value)}")
        return value

    def tables(self, parent: Mapping[str, Any], key: str, path: Path_, label: str) -> list[dict[str, Any]]:
        """An array of tables (``[[key]]``); a single table (``[key]``) counts as one."""
        value = parent.get(key, [])
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(tuple(path) + (key,), f"'{key}' must be {label}, got {_describe(value)}")
        return value

    def value(
        self,
        table: Mapping[str, Any],
        key: str,
        path: Path_,
        kind: str,
        *,
        label: str,
        default: Any = None,
        required: bool = False,
        choices: Sequence[str] = (),
        minimum: float | None = None,
        maximum: float | None = None,
        open_minimum: bool = False,
    ) -> Any:
        """Read ``table[key]`` as ``kind`` (str, bool, int, float, str_list, choice, any), range-checked."""
        where = tuple(path) + (key,)
        if key not in table:
            if required:
                raise self.error(tuple(path), f"{label} needs the key '{key}'")
            return default
        value = table[key]
        checked = _check_type(value, kind, choices)
        if checked is None:
            wanted = {
                "str": "a string",
                "bool": "true or false",
                "int": "a whole number",
                "float": "a number",
                "str_list": "a list of strings",
                "choice": f"one of {', '.join(map(repr, choices))}",
                "any": "a string, number or boolean",
            }[kind]
            raise self.error(where, f"'{key}' in {label} must be {wanted}, got {_describe(value)}")
        if minimum is not None and (checked < minimum or (open_minimum and checked == minimum)):
            raise self.error(
                where, f"'{key}' in {label} must be {'>' if open_minimum else '>='} {minimum:g}, got {checked}"
            )
        if maximum is not None and checked > maximum:
            raise self.error(where, f"'{key}' in {label} must be <= {maximum:g}, got {checked}")
        return checked


def _check_type(value: Any, kind: str, choices: Sequence[str]) -> Any:
    """``value`` as ``kind``, or ``None`` when it is of the wrong type."""
    if kind == "str":
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "str_list":
        if isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
    if kind == "choice":
        return value if isinstance(value, str) and value in choices else None
    if kind == "any":
        return value if isinstance(value, str | int | float | bool) else None
    raise ValueError(f"unknown kind {kind!r}")  # pragma: no cover


def _describe(value: Any) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        list: "a list",
        dict: "a table",
    }
    return f"{value!r} ({names.get(type(value), type(value).__name__)})"
