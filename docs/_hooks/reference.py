"""mkdocs hook: strategy reference pages generated from the installed strategies' typed options.

For every builtin strategy, the site gets ``strategies/<name>.md``: the hand-written page when
there is one, followed by a generated table of its options (type, default, allowed values,
description), or a generated page when there is none.
Tables come from :func:`decodekit.options.describe_options`, so they cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

#: Page title used for generated pages, by strategy name (others use the class docstring).
TITLES = {"greedy": "Greedy decoding", "sample": "Sampling", "beam": "Beam search"}

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def strategies() -> dict[str, Any]:
    """The builtin strategies (third-party entry points are left out), by name."""
    from decodekit.manager import PluginSystem

    registry = PluginSystem(entry_points=False).registry
    return {name: registry.get("strategy", name) for name in sorted(registry.names("strategy"))}


def _constraints(field: Any) -> str:
    parts = []
    for item in field.metadata:
        for attr, symbol in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace(" | ", " or ").replace("|", "/").replace("\n", " ")


def _rst_to_markdown(text: str) -> str:
    """Docstring text to markdown: Sphinx roles (``:mod:`x```) become code spans."""
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")


def options_table(cls: type) -> str:
    """A markdown table of the options of strategy (or processor) class ``cls``."""
    from decodekit.options import NoOptions, describe_options

    options = getattr(cls, "Options", NoOptions)
    infos = describe_options(options)
    if not infos:
        return "This strategy has no options.\n"
    lines = ["| option | type | default | allowed | description |", "|---|---|---|---|---|"]
    for info in infos:
        default = "required" if info.required else f"`{info.default!r}`"
        allowed = _constraints(options.model_fields[info.name])
        lines.append(f"| `{info.name}` | `{_cell(info.type)}` | {_cell(default)} | {allowed} | "
                     f"{_cell(info.description)} |")
    return "\n".join(lines) + "\n"


def generated_section(name: str, cls: type) -> str:
    """The generated options section appended to a strategy page."""
    return (f"\n## Options reference\n\nGenerated from `{cls.__module__}.{cls.__name__}.Options`; "
            f"set them under `[strategy.options]` in a pipeline file or as "
            f"`options={{...}}` in `decodekit.generate(..., strategy=\"{name}\")`.\n\n"
            + options_table(cls))


def generated_page(name: str, cls: type) -> str:
    """A whole page for a strategy without a hand-written one."""
    doc = _rst_to_markdown(inspect.cleandoc(cls.__doc__ or "").strip())
    title = TITLES.get(name, name)
    return (f"# {title} (`{name}`)\n\n{getattr(cls, 'description', '') or ''}\n\n{doc}\n"
            + generated_section(name, cls))


CLI_MARKER = "<!-- generated: command help -->"


def _parsers(parser: Any, prefix: str) -> list[tuple[str, Any]]:
    import argparse

    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(_parsers(child, f"{prefix} {name}"))
    return found


def cli_help() -> str:
    """``--help`` of ``decodekit`` and of every (sub)command the builtin plugins provide."""
    import os

    from decodekit.cli import build_parser
    from decodekit.manager import PluginSystem

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser(PluginSystem(entry_points=False))
        parts = []
        for name, sub in _parsers(parser, "decodekit"):
            parts.append(f"### `{name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


# -- mkdocs events --------------------------------------------------------------------------------

_FOUND: dict[str, Any] = {}
_GENERATED: set[str] = set()


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    _FOUND.clear()
    _FOUND.update(strategies())
    _GENERATED.clear()
    existing = {f.src_uri for f in files}
    for name, cls in _FOUND.items():
        uri = f"strategies/{name}.md"
        if uri not in existing:
            files.append(File.generated(config, uri, content=generated_page(name, cls)))
            _GENERATED.add(uri)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = page.file.src_uri
    if uri == "cli.md" and CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, cli_help())
    if uri.startswith("strategies/") and uri not in _GENERATED:
        name = uri[len("strategies/"):-len(".md")]
        if name in _FOUND:
            return markdown.rstrip() + "\n" + generated_section(name, _FOUND[name])
    return markdown
