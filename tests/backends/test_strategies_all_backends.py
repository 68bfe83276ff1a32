"""Every builtin strategy gives the same tokens on the ``torch`` and ``onnxruntime`` backends.

The tiny model runs once through PyTorch and once through its ONNX export (the input-embeddings
graph, which has every capability); strategies must not know which backend they run on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import decodekit

pytest.importorskip("onnxruntime")

PROMPTS = ["The quick brown", "SELECT id", "def add(a, b):\n"]

#: strategy -> (options, seed); ``small_model`` of ``ead`` is filled in per backend. A builtin
#: strategy missing here runs with its default options and seed 0.
CASES: dict[str, tuple[dict[str, Any], int | None]] = {
    "greedy": ({}, None),
    "sample": ({"temperature": 0.8, "top_k": 20}, 7),
    "beam": ({"num_beams": 3}, None),
    "diverse_beam": ({"num_beams": 4, "num_groups": 2}, None),
    "contrastive": ({"top_k": 4, "alpha": 0.6}, None),
    "momentum": ({"top_k": 4}, None),
    "cntp": ({"max_trials": 4}, 3),
    "superposed": ({"k": 2, "ngram": None, "alpha": 0.0}, None),
    "ead": ({"threshold": 1.0, "window": 2}, None),
}


def _builtin_strategies() -> list[str]:
    from decodekit.manager import PluginSystem

    return sorted(e.name for e in PluginSystem(entry_points=False).registry.entries("strategy")
                  if e.plugin.startswith("decodekit."))


def test_cases_name_builtin_strategies() -> None:
    assert set(CASES) <= set(_builtin_strategies())


@pytest.fixture(scope="module")
def models(tiny: Any, ort_tiny_embeds: Any, onnx_exports: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """backend name -> (model, small model for ``ead``)."""
    from decodekit.testing import tiny_model

    small_ort = decodekit.load(str(onnx_exports["small"]), backend="onnxruntime", threads=1, cache=False)
    return {"torch": (tiny, tiny_model(1)), "onnxruntime": (ort_tiny_embeds, small_ort)}


@pytest.mark.parametrize("strategy", _builtin_strategies())
def test_strategy_matches_torch_on_onnxruntime(strategy: str, models: dict[str, tuple[Any, Any]]) -> None:
    from decodekit.errors import UserError

    options, seed = CASES.get(strategy, ({}, 0))
    results = {}
    for name, (model, small) in models.items():
        opts = dict(options, small_model=small) if strategy == "ead" else options
        try:
            gens = decodekit.generate(PROMPTS, model=model, strategy=strategy, options=opts,
                                      max_new_tokens=12, seed=seed)
        except UserError as exc:
            if strategy in CASES or name != "torch":
                raise
            pytest.skip(f"strategy {strategy!r} does not run with default options ({exc}); "
                        "add its options to CASES")
        results[name] = [[list(s.token_ids) for s in g.sequences] for g in gens]
    assert results["onnxruntime"] == results["torch"]
    assert any(len(seqs[0]) > 0 for seqs in results["torch"])
