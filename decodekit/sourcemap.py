"""Where each key and value of a TOML or YAML document is, so errors can name line and column.

:func:`toml_positions` scans TOML source that :mod:`tomllib` already accepted (so the scan
can assume well-formed input) and :func:`yaml_positions` walks the node tree that
``yaml.compose`` builds. Both return a :class:`SourceMap` from key paths to positions; a key
path is a tuple of table keys and array indices, e.g. ``("processors", 0, "options", "size")``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import tomllib

from decodekit.errors import ConfigError

KeyPath = tuple[Hashable, ...]


@dataclass(frozen=True)
class Position:
    """1-based line and column of a key and of its value (equal for array items and tables)."""

    key_line: int
    key_column: int
    value_line: int
    value_column: int


class SourceMap:
    """Positions of the keys and values of one document.

    Parameters
    ----------
    path
        The file the document came from (``None`` for data built in memory).
    positions
        Key path to position.
    """

    def __init__(self, path: str | None = None, positions: dict[KeyPath, Position] | None = None) -> None:
        self.path = path
        self.positions = positions or {}

    def find(self, key_path: KeyPath) -> tuple[KeyPath, Position | None]:
        """The position of ``key_path``, or of its nearest ancestor that has one."""
        key_path = tuple(key_path)
        while key_path:
            if key_path in self.positions:
                return key_path, self.positions[key_path]
            key_path = key_path[:-1]
        return (), self.positions.get(())

    def error(self, message: str, key_path: KeyPath, *, at: str = "value") -> ConfigError:
        """A :class:`ConfigError` located at the key (``at="key"``) or value of ``key_path``.

        A path without a recorded position (e.g. a key that is missing) falls back to its
        nearest ancestor. The message is prefixed with the dotted key path, so it stays
        useful without a file.
        """
        dotted = dotted_path(key_path)
        text = f"{dotted}: {message}" if dotted else message
        _, pos = self.find(key_path)
        if pos is None:
            return ConfigError(text, self.path, 1 if self.path else None, 1 if self.path else None)
        line, column = ((pos.key_line, pos.key_column) if at == "key"
                        else (pos.value_line, pos.value_column))
        return ConfigError(text, self.path, line, column)


def dotted_path(key_path: KeyPath) -> str:
    """``("processors", 0, "name")`` -> ``"processors.0.name"``."""
    return ".".join(str(part) for part in key_path)


# -- TOML ---------------------------------------------------------------------------------------

_TOML_WHERE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: str) -> ConfigError:
    """Turn a :mod:`tomllib` error into a :class:`ConfigError` with its line and column."""
    message = str(exc)
    match = _TOML_WHERE.search(message)
    if match is None:
        return ConfigError(f"invalid TOML: {message}", path, 1, 1)
    if match.group(1):
        line, column = int(match.group(1)), int(match.group(2))
    else:  # end of document
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return ConfigError(f"invalid TOML: {message[:match.start()]}", path, line, column)


class _TomlScanner:
    """Records key and value positions of well-formed TOML source."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.positions: dict[KeyPath, Position] = {}
        self.aot_counts: dict[KeyPath, int] = {}

    def where(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, index)
        return line, index - self.line_starts[line - 1] + 1

    def record(self, key_path: KeyPath, key_index: int, value_index: int) -> None:
        if key_path not in self.positions:
            self.positions[key_path] = Position(*self.where(key_index), *self.where(value_index))

    def skip(self, newlines: bool) -> None:
        s, n = self.s, self.n
        while self.i < n:
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end
            else:
                return

    def scan(self) -> dict[KeyPath, Position]:
        self.record((), 0, 0)
        prefix: KeyPath = ()
        while True:
            self.skip(newlines=True)
            if self.i >= self.n:
                return self.positions
            if self.s.startswith("[[", self.i):
                prefix = self.header(array=True)
            elif self.s[self.i] == "[":
                prefix = self.header(array=False)
            else:
                self.key_value(prefix)

    def header(self, array: bool) -> KeyPath:
        self.i += 2 if array else 1
        keys = self.keys()
        self.i += 2 if array else 1
        resolved: KeyPath = ()
        for number, (key, index) in enumerate(keys):
            resolved += (key,)
            last = number == len(keys) - 1
            if last and array:
                self.record(resolved, index, index)
                count = self.aot_counts.get(resolved, 0)
                self.aot_counts[resolved] = count + 1
                resolved += (count,)
            elif resolved in self.aot_counts:
                resolved += (self.aot_counts[resolved] - 1,)
            self.record(resolved, index, index)
        return resolved

    def keys(self) -> list[tuple[str, int]]:
        parts = []
        while True:
            self.skip(newlines=False)
            start = self.i
            c = self.s[self.i]
            if c == '"':
                end = self.string_end(self.i)
                key = tomllib.loads("k = " + self.s[start:end])["k"]
                self.i = end
            elif c == "'":
                end = self.s.index("'", self.i + 1) + 1
                key = self.s[start + 1:end - 1]
                self.i = end
            else:
                match = _BARE_KEY.match(self.s, self.i)
                if match is None:  # pragma: no cover - tomllib accepted the document
                    raise ValueError(f"unexpected character at offset {self.i}")
                key = match.group(0)
                self.i = match.end()
            parts.append((key, start))
            self.skip(newlines=False)
            if self.i < self.n and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts

    def key_value(self, prefix: KeyPath) -> None:
        keys = self.keys()
        path = prefix
        for key, index in keys[:-1]:
            path += (key,)
            self.record(path, index, index)
        self.i += 1  # "="
        self.skip(newlines=False)
        self.value(path + (keys[-1][0],), keys[-1][1])

    def value(self, key_path: KeyPath, key_index: int) -> None:
        self.record(key_path, key_index, self.i)
        c = self.s[self.i]
        if c in "\"'":
            self.i = self.string_end(self.i)
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.s[self.i] == "]":
                    self.i += 1
                    return
                self.value(key_path + (index,), self.i)
                index += 1
                self.skip(newlines=True)
                if self.s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip(newlines=False)
                if self.s[self.i] == "}":
                    self.i += 1
                    return
                self.key_value(key_path)
                self.skip(newlines=False)
                if self.s[self.i] == ",":
                    self.i += 1
        else:  # number, boolean, date/time: runs up to a delimiter
            while self.i < self.n and self.s[self.i] not in ",]}#\r\n":
                self.i += 1

    def string_end(self, start: int) -> int:
        s = self.s
        quote = s[start]
        triple = quote * 3
        if s.startswith(triple, start):
            i = start + 3
            while True:
                if quote == '"' and s[i] == "\\":
                    i += 2
                    continue
                if s.startswith(triple, i):
                    end = i + 3
                    while end < self.n and s[end] == quote and end - i < 5:
                        end += 1
                    return end
                i += 1
        i = start + 1
        while s[i] != quote:
            i += 2 if (quote == '"' and s[i] == "\\") else 1
        return i + 1


def toml_positions(text: str, path: str | None = None) -> SourceMap:
    """Positions of every key and value of TOML ``text`` (which must parse with tomllib)."""
    return SourceMap(path, _TomlScanner(text).scan())


# -- YAML ---------------------------------------------------------------------------------------


def yaml_syntax_error(exc: Exception, path: str) -> ConfigError:
    """Turn a PyYAML error into a :class:`ConfigError` with its line and column."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ConfigError(message, path, 1, 1)
    return ConfigError(message, path, mark.line + 1, mark.column + 1)


def yaml_positions(text: str, path: str | None = None) -> SourceMap:
    """Positions of every key and value of YAML ``text``.

    Raises
    ------
    ConfigError
        On a syntax error or a key given twice in one mapping.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(exc, path or "<yaml>") from None
    positions: dict[KeyPath, Position] = {(): Position(1, 1, 1, 1)}
    smap = SourceMap(path, positions)

    def mark(node: Any) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def walk(node: Any, key_path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    first = mark(seen[key])[0]
                    raise ConfigError(f"{dotted_path(key_path + (key,))}: duplicate key {key!r} "
                                      f"(first given on line {first})", path, *mark(key_node))
                seen[key] = key_node
                positions[key_path + (key,)] = Position(*mark(key_node), *mark(value_node))
                walk(value_node, key_path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                positions[key_path + (index,)] = Position(*mark(item), *mark(item))
                walk(item, key_path + (index,))

    if root is not None:
        walk(root, ())
    return smap
