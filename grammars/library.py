"""The grammar library, and turning whatever a user passes as a grammar into lark text.

Builtin grammars are ``.lark`` files shipped with the package: ``json`` (RFC 8259), ``sql`` (a
SELECT / INSERT / UPDATE / DELETE / CREATE TABLE subset), ``arithmetic``, ``csv`` (RFC 4180) and
``sexpr``. :func:`resolve` accepts one of those names, lark text, a path to a ``.lark`` file, a
JSON Schema (a dict or JSON text) or a pydantic model class.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from decodekit.grammars.errors import GrammarError


@dataclass(frozen=True)
class LibraryGrammar:
    """A builtin grammar.

    Attributes
    ----------
    name
        The name to pass as ``grammar``.
    description
        The first comment line of its file.
    text
        The lark text.
    """

    name: str
    description: str
    text: str


def _grammar_dir() -> Any:
    return resources.files("decodekit.grammars")


def names() -> list[str]:
    """Names of the builtin grammars, sorted."""
    return sorted(p.name[:-5] for p in _grammar_dir().iterdir() if p.name.endswith(".lark"))


def get(name: str) -> LibraryGrammar:
    """The builtin grammar ``name``.

    Raises
    ------
    GrammarError
        If there is no such grammar (the message lists the valid names).
    """
    path = _grammar_dir() / f"{name}.lark"
    if not name or "/" in name or not path.is_file():
        raise GrammarError(f"unknown builtin grammar {name!r}; builtin grammars: {', '.join(names())}")
    text = path.read_text(encoding="utf-8")
    first = text.lstrip().split("\n", 1)[0]
    description = first.lstrip("/ ").strip() if first.startswith("//") else ""
    return LibraryGrammar(name, description, text)


def library() -> list[LibraryGrammar]:
    """All builtin grammars."""
    return [get(n) for n in names()]


@dataclass(frozen=True)
class Resolved:
    """A grammar as lark text, with where it came from (for messages)."""

    text: str
    origin: str


def _is_pydantic_model(obj: Any) -> bool:
    import sys

    pydantic = sys.modules.get("pydantic")  # a model class implies pydantic was imported
    return pydantic is not None and isinstance(obj, type) and issubclass(obj, pydantic.BaseModel)


def _schema_text(schema: dict[str, Any], options: dict[str, Any]) -> str:
    try:
        from decodekit.grammars.jsonschema import schema_to_lark
    except ImportError as exc:
        raise GrammarError("a JSON Schema was given as grammar, but JSON Schema support "
                           f"(decodekit.grammars.jsonschema) cannot be imported: {exc}") from exc
    return schema_to_lark(schema, **options)


def resolve(grammar: Any, *, schema_options: dict[str, Any] | None = None) -> Resolved:
    """Turn a user's grammar into lark text.

    Parameters
    ----------
    grammar
        A builtin grammar name, lark text, a :class:`pathlib.Path` or path string of a
        ``.lark`` file, a JSON Schema as a dict or as JSON text, or a pydantic model class.
    schema_options
        Keyword options for the JSON Schema converter.

    Raises
    ------
    GrammarError
        If ``grammar`` is none of these.
    """
    opts = dict(schema_options or {})
    if _is_pydantic_model(grammar):
        return Resolved(_schema_text(grammar.model_json_schema(), opts), f"pydantic model {grammar.__name__}")
    if isinstance(grammar, dict):
        return Resolved(_schema_text(grammar, opts), "JSON Schema")
    if isinstance(grammar, Path):
        return _read_file(grammar)
    if isinstance(grammar, str):
        stripped = grammar.strip()
        if not stripped:
            raise GrammarError("the grammar is empty; give lark text, a builtin grammar name "
                               f"({', '.join(names())}), a .lark file or a JSON Schema")
        if "\n" not in stripped and stripped in names():
            return Resolved(get(stripped).text, f"builtin grammar {stripped!r}")
        if stripped.startswith("{"):
            try:
                schema = json.loads(stripped)
            except json.JSONDecodeError:
                schema = None
            if isinstance(schema, dict):
                return Resolved(_schema_text(schema, opts), "JSON Schema")
        if "\n" not in stripped and stripped.endswith(".lark"):
            return _read_file(Path(stripped))
        if "\n" not in stripped and ":" not in stripped:
            raise GrammarError(f"{stripped!r} is neither a builtin grammar ({', '.join(names())}) "
                               "nor lark grammar text (which defines rules as 'name: ...')")
        return Resolved(grammar, "lark text")
    raise GrammarError(f"cannot use a {type(grammar).__name__} as a grammar; give lark text, a "
                       f"builtin grammar name ({', '.join(names())}), a .lark file path, a JSON "
                       "Schema (dict or JSON text) or a pydantic model class")


def _read_file(path: Path) -> Resolved:
    try:
        return Resolved(path.read_text(encoding="utf-8"), f"file {os.fspath(path)}")
    except FileNotFoundError:
        raise GrammarError(f"grammar file {os.fspath(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GrammarError(f"cannot read grammar file {os.fspath(path)!r}: {exc}") from None
