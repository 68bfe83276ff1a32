"""Tests that keep the documentation honest: hook signatures, runnable examples, the site build,
generated reference tables, the quickstart commands and the command-line reference."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from decodekit import hookspecs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _hookspecs() -> dict[str, Any]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, marker)}


def signature_text(fn: Any) -> str:
    """``def name(arg: Type, ...) -> Return`` exactly as written in decodekit/hookspecs.py."""
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {fn.__name__}({params}) -> {sig.return_annotation}"


def _blocks(path: Path, language: str = "python") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _hooks_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "_hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- plugins.md ---------------------------------------------------------------------------------


def test_every_hookspec_is_in_plugins_md_with_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    specs = _hookspecs()
    assert len(specs) >= 9
    for name, fn in specs.items():
        assert f"### {name}\n" in text, f"docs/plugins.md has no section for {name}"
        assert signature_text(fn) in text, f"docs/plugins.md lacks the signature {signature_text(fn)}"


def test_every_hookspec_has_a_test_that_calls_it() -> None:
    sources = {p: p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("test_*.py")
               if p.name != "test_docs.py"}
    for name in _hookspecs():
        implemented = [p for p, text in sources.items()
                       if re.search(rf"@hookimpl[^\n]*\n\s*def {name}\(", text)]
        assert implemented, f"no test implements the hook {name}"
    covered = sources[REPO / "tests" / "decodekit" / "test_hookspecs.py"]
    for name in _hookspecs():
        assert f'"{name}"' in covered, f"{name} is not in test_hookspecs.COVERED"


def test_plugin_example_and_testing_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    tested = re.findall(r"<!-- tested:[^>]*-->\n```python\n(.*?)```", text, flags=re.S)
    assert len(tested) == 2, "plugins.md should mark the one-file plugin and the test block"
    plugin_source, test_source = tested
    assert plugin_source.startswith("# my_plugin.py\n")
    (tmp_path / "my_plugin.py").write_text(plugin_source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_plugin", None)
    namespace: dict[str, Any] = {}
    exec(compile(test_source, "plugins.md", "exec"), namespace)
    namespace["test_kth_never_emits_digits"]()
    sys.modules.pop("my_plugin", None)


@pytest.mark.e2e
def test_transformers_page_blocks_run() -> None:
    namespace: dict[str, Any] = {}
    blocks = _blocks(DOCS / "transformers.md")
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        exec(compile(block, f"transformers.md block {i}", "exec"), namespace)


# -- site ----------------------------------------------------------------------------------------


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    site = tmp_path / "site"
    hook = _hooks_module()
    strategies = hook.strategies()
    for name, cls in strategies.items():
        page = (site / "strategies" / name / "index.html").read_text(encoding="utf-8")
        assert "Options reference" in page, name
        for option in cls.Options.model_fields:
            assert f"<code>{option}</code>" in page, (name, option)
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "usage: decodekit run" in cli and "generated: command help" not in cli
    assert 'class="mermaid"' in (site / "concepts" / "index.html").read_text(encoding="utf-8")


def test_nav_lists_every_page() -> None:
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?([\w/.-]+\.md)$", config, flags=re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
             if not str(p.relative_to(DOCS)).startswith(("examples/", "_hooks/"))}
    hook = _hooks_module()
    generated = {f"strategies/{name}.md" for name in hook.strategies()}
    assert pages - nav == set(), "pages missing from the mkdocs nav"
    assert nav - pages - generated == set(), "nav entries without a page"


def test_options_table_is_generated_from_the_typed_options() -> None:
    hook = _hooks_module()
    strategies = hook.strategies()
    assert {"greedy", "sample", "beam", "contrastive"} <= set(strategies)
    table = hook.options_table(strategies["sample"])
    assert "| `temperature` | `float` | `1.0` | > 0.0 |" in table
    assert "| `top_p` | `float` | `1.0` | > 0.0, <= 1.0 |" in table
    assert hook.options_table(strategies["greedy"]) == "This strategy has no options.\n"
    page = hook.generated_page("beam", strategies["beam"])
    assert page.startswith("# Beam search (`beam`)") and "`num_beams`" in page


# -- quickstart and command line ------------------------------------------------------------------


def test_quickstart_has_the_readme_commands() -> None:
    readme = _blocks(REPO / "README.md", "bash")
    quickstart = _blocks(DOCS / "quickstart.md", "bash")
    assert readme[:2] == quickstart[:2]


def test_cli_page_covers_every_command_and_option() -> None:
    from decodekit.cli import build_parser
    from decodekit.manager import PluginSystem

    hook = _hooks_module()
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert hook.CLI_MARKER in text
    parser = build_parser(PluginSystem(entry_points=False))
    for path, sub in hook._parsers(parser, "decodekit"):
        if path.count(" ") == 1:  # top-level commands are described by hand
            assert f"{path} " in text or f"`{path.split()[1]}`" in text, path
        if path in ("decodekit run", "decodekit strategies", "decodekit plugins"):
            for action in sub._actions:
                for option in action.option_strings:
                    if option.startswith("--") and option != "--help":
                        assert option in text, (path, option)
    help_text = hook.cli_help()
    assert "### `decodekit run`" in help_text and "--set KEY=VALUE" in help_text


def test_mkdocs_is_in_the_dev_extra() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    dev = re.search(r"^dev = \[(.*?)\]$", pyproject, flags=re.M | re.S)
    assert dev is not None
    assert "mkdocs" in dev.group(1) and "mkdocs-material" in dev.group(1)
