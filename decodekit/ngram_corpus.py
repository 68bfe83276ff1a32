"""Corpora and named n-gram tables: the ``python-stdlib`` table, corpus files, tokenizers.

:mod:`decodekit.ngram` counts n-grams and reads table files; this module finds the text to
count and the tables to use: the source of standard-library modules (a code corpus that every
Python installation ships), corpus files and directories for ``decodekit ngram build``, a
model's tokenizer by reference, and the resolution of a strategy's ``ngram`` option (a builtin
name, built on first use and cached per tokenizer, or a file).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from decodekit.errors import InputError, UserError
from decodekit.ngram import FORMAT_VERSION, NGramTable, build_table, check_tokenizer, tokenizer_fingerprint

#: Standard-library modules whose source makes up the ``python-stdlib`` table (about 1.5 MB of
#: Python with docstrings and comments); modules a Python version lacks are skipped.
STDLIB_MODULES = (
    "argparse", "ast", "collections", "contextlib", "csv", "dataclasses", "difflib", "enum",
    "functools", "heapq", "inspect", "json.decoder", "json.encoder", "logging", "os", "pathlib",
    "pprint", "queue", "random", "shutil", "string", "subprocess", "tempfile", "textwrap",
    "threading", "typing", "unittest.case", "urllib.parse", "warnings", "traceback",
)
BUILTIN_TABLES = {"python-stdlib": "source of common Python standard-library modules"}
_OPENED: dict[tuple[str, float], NGramTable] = {}


def stdlib_sources(modules: Sequence[str] = STDLIB_MODULES) -> list[tuple[str, str]]:
    """``(module, source text)`` of the standard-library modules found in this Python."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for name in modules:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                found.append((name, candidate.read_text(encoding="utf-8", errors="replace")))
                break
    return found


def read_corpus(paths: Sequence[str | Path], patterns: Sequence[str] = ("*.txt", "*.md", "*.rst", "*.py"),
                ) -> list[tuple[str, str]]:
    """``(path, text)`` of corpus files: named files, and files under named directories whose
    names match one of ``patterns`` (recursively, sorted). Text must be UTF-8.

    Raises
    ------
    InputError
        If a path does not exist, a named file is not UTF-8, or nothing was found.
    """
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted({f for pattern in patterns for f in path.rglob(pattern) if f.is_file()})
            for f in files:
                try:
                    out.append((str(f), f.read_text(encoding="utf-8")))
                except UnicodeDecodeError:
                    continue  # binary or legacy-encoded files inside a directory are skipped
        elif path.is_file():
            try:
                out.append((str(path), path.read_text(encoding="utf-8")))
            except UnicodeDecodeError as exc:
                raise InputError(f"corpus file {path} is not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})") from None
        else:
            raise InputError(f"corpus path not found: {path}")
    if not out:
        raise InputError(f"no corpus text found in {', '.join(map(str, paths))} (directories are "
                         f"searched for {', '.join(patterns)})")
    return out


def builtin_table(name: str, tokenizer: Any, *, modules: Sequence[str] | None = None,
                  verbose: bool = True) -> NGramTable:
    """A named table for ``tokenizer``, built on first use and cached on disk.

    The cache file lives under ``decodekit.default_model.cache_root() / "ngram"``, keyed by the
    tokenizer's fingerprint and a hash of the corpus text, so a new Python version (other
    module sources) or another tokenizer gets its own table.

    Parameters
    ----------
    name
        One of :data:`BUILTIN_TABLES`.
    tokenizer
        The model's tokenizer.
    modules
        Override the module list (``python-stdlib``).
    verbose
        Report a first-use build on standard error.
    """
    if name not in BUILTIN_TABLES:
        raise InputError(f"unknown builtin n-gram table {name!r}; builtin tables: "
                         f"{', '.join(BUILTIN_TABLES)}")
    from decodekit.default_model import cache_root

    sources = stdlib_sources(modules if modules is not None else STDLIB_MODULES)
    if not sources:
        raise UserError("none of the standard-library modules of the python-stdlib table were "
                        "found as source files in this Python installation")
    key = hashlib.sha256()
    key.update(f"{FORMAT_VERSION}|{tokenizer_fingerprint(tokenizer)}|".encode())
    for module, text in sources:
        key.update(module.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    path = cache_root() / "ngram" / f"{name}-{key.hexdigest()[:20]}.dkng"
    if path.is_file():
        return open_table(path)
    if verbose:
        progress(f"building the {name} n-gram table for this tokenizer (first use only)")
    start = time.perf_counter()
    table = build_table([text for _, text in sources], tokenizer, name=name,
                        corpus={"builtin": name, "modules": [m for m, _ in sources],
                                "python": sys.version.split()[0]})
    table.save(path)
    if verbose:
        progress(f"built {table!r} from {table.meta['tokens']} tokens in "
                 f"{time.perf_counter() - start:.1f} s; cached at {path}")
    return open_table(path)


def open_table(path: str | Path) -> NGramTable:
    """:meth:`NGramTable.open`, reusing a table already opened in this process."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"n-gram table file not found: {path}")
    key = (str(path), path.stat().st_mtime)
    table = _OPENED.get(key)
    if table is None:
        table = NGramTable.open(path)
        _OPENED[key] = table
    return table


def resolve_table(spec: str | Path | NGramTable, tokenizer: Any) -> NGramTable:
    """A table for ``tokenizer`` from a builtin name, a file path or a table object.

    Raises
    ------
    InputError
        If ``spec`` is neither a builtin name nor an existing file.
    UserError
        If the table was built with another tokenizer.
    """
    if isinstance(spec, NGramTable):
        table = spec
    elif isinstance(spec, str) and spec in BUILTIN_TABLES:
        return builtin_table(spec, tokenizer)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(f"n-gram table {str(spec)!r} is neither a builtin table "
                             f"({', '.join(BUILTIN_TABLES)}) nor an existing file")
        table = open_table(path)
    check_tokenizer(table, tokenizer)
    return table


def load_tokenizer(reference: str) -> Any:
    """The tokenizer of a model reference: ``"default"``, a model directory, a ``.gguf`` file or a
    Hub id (when cached or online)."""
    from transformers import AutoTokenizer

    if reference == "default":
        from decodekit import default_model

        return AutoTokenizer.from_pretrained(default_model.ensure_converted())
    path = Path(reference).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if path.is_dir() or path.exists():
        return AutoTokenizer.from_pretrained(path)
    try:
        return AutoTokenizer.from_pretrained(reference)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {reference!r}: not 'default', a model "
                        f"directory, a .gguf file or an available Hub id ({str(exc).splitlines()[0]})") from None


def progress(message: str) -> None:
    """Print a progress line on standard error."""
    print(f"decodekit: {message}", file=sys.stderr, flush=True)
