"""Importing decodekit is cheap: no torch, transformers or lark until a model is used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "lark")


def _modules_after(code: str) -> list[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_import_decodekit_does_not_import_heavy_modules() -> None:
    modules = _modules_after("import decodekit")
    assert "decodekit" in modules
    assert _heavy(modules) == []


def test_light_public_names_stay_light() -> None:
    # errors, hookimpl, options and the plugin manager are usable without torch
    modules = _modules_after(
        "import decodekit\n"
        "decodekit.hookimpl; decodekit.UnknownNameError; decodekit.Options\n"
        "from decodekit import hookspecs, registry, errors, options")
    assert _heavy(modules) == []


def test_lazy_attribute_imports_on_demand() -> None:
    modules = _modules_after("import decodekit\ndecodekit.generate")
    assert "decodekit.api" in modules
    assert "torch" in modules


def test_unknown_attribute_is_an_attribute_error() -> None:
    import decodekit

    try:
        decodekit.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_dir_lists_public_api() -> None:
    import decodekit

    names = dir(decodekit)
    for name in ("generate", "load", "Generation", "hookimpl", "PluginError", "Strategy"):
        assert name in names
