"""Exports of the tiny models to ONNX, made once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def onnx_exports(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories written by ``export_onnx``: ``ids`` (tiny seed 0, token ids in), ``embeds``
    (seed 0, input embeddings in) and ``small`` (seed 1, token ids in)."""
    pytest.importorskip("onnxruntime")
    from decodekit.backends._export_onnx import export_onnx
    from decodekit.testing import tiny_model

    root = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny, root / "ids")
    export_onnx(tiny, root / "embeds", inputs="inputs_embeds")
    export_onnx(tiny_model(1), root / "small")
    return {name: root / name for name in ("ids", "embeds", "small")}


@pytest.fixture(scope="session")
def ort_tiny(onnx_exports: dict[str, Path]) -> Any:
    """The tiny model (seed 0, token-id graph) on the ``onnxruntime`` backend, one thread."""
    import decodekit

    return decodekit.load(str(onnx_exports["ids"]), backend="onnxruntime", threads=1, cache=False)


@pytest.fixture(scope="session")
def ort_tiny_embeds(onnx_exports: dict[str, Path]) -> Any:
    """The tiny model (seed 0, input-embeddings graph) on the ``onnxruntime`` backend."""
    import decodekit

    return decodekit.load(str(onnx_exports["embeds"]), backend="onnxruntime", threads=1, cache=False)
