"""Sampling: reproducible per seed, independent of global RNG, correct truncation masks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from decodekit.errors import OptionsError
from decodekit.plugins.sample import SampleOptions, warp

NEG = float("-inf")


def _sample(model: Any, seed: int, **options: Any) -> list[int]:
    return model.generate("The quick brown", strategy="sample", options=options, seed=seed,
                          max_new_tokens=12).token_ids


def test_same_seed_same_output(tiny: Any) -> None:
    assert _sample(tiny, 1) == _sample(tiny, 1)
    batch = tiny.generate(["The quick brown", "SELECT id"], strategy="sample", seed=4, max_new_tokens=8)
    again = tiny.generate(["The quick brown", "SELECT id"], strategy="sample", seed=4, max_new_tokens=8)
    assert [g.token_ids for g in batch] == [g.token_ids for g in again]


def test_different_seeds_differ(tiny: Any) -> None:
    outputs = {tuple(_sample(tiny, seed)) for seed in range(4)}
    assert len(outputs) >= 3


def test_option_seed_and_argument_seed(tiny: Any) -> None:
    by_option = tiny.generate("The quick brown", strategy="sample", options={"seed": 9},
                              max_new_tokens=12).token_ids
    assert by_option == _sample(tiny, 9)
    overridden = tiny.generate("The quick brown", strategy="sample", options={"seed": 9}, seed=1,
                               max_new_tokens=12).token_ids
    assert overridden == _sample(tiny, 1)
    g = tiny.generate("The quick brown", strategy="sample", seed=9, max_new_tokens=2)
    assert g.stats.extra["seed"] == 9


def test_independent_of_global_rng(tiny: Any) -> None:
    torch.manual_seed(0)
    first = _sample(tiny, 2)
    torch.manual_seed(12345)
    torch.rand(100)
    second = _sample(tiny, 2)
    assert first == second
    state = torch.random.get_rng_state()
    _sample(tiny, 2)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is untouched


def test_top_k_one_equals_greedy(tiny: Any) -> None:
    greedy = tiny.generate("The quick brown", max_new_tokens=12).token_ids
    for seed in (0, 1):
        assert _sample(tiny, seed, top_k=1) == greedy
    assert _sample(tiny, 3, temperature=1e-4) == greedy


def test_min_p_one_and_tiny_top_p_equal_greedy(tiny: Any) -> None:
    greedy = tiny.generate("SELECT id", max_new_tokens=8).token_ids
    for options in ({"min_p": 1.0}, {"top_p": 1e-6}):
        g = tiny.generate("SELECT id", strategy="sample", options=options, seed=5, max_new_tokens=8)
        assert g.token_ids == greedy


def test_samples_follow_the_distribution(tiny: Any) -> None:
    """First-token frequencies over many seeds match the model's probabilities (batch draw)."""
    ids = tiny.tokenizer.encode("SELECT id", add_special_tokens=False)
    n = 400
    gens = tiny.generate([ids] * n, strategy="sample", seed=0, max_new_tokens=1)
    with torch.no_grad():
        probs = torch.softmax(tiny.backend.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    counts = torch.bincount(torch.tensor([g.token_ids[0] for g in gens]), minlength=probs.numel())
    top = int(probs.argmax())
    p = float(probs[top])
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(counts[top] / n - p) < 5 * sd + 1e-3
    assert len({g.token_ids[0] for g in gens}) > 1


def _opts(**kw: Any) -> SampleOptions:
    return SampleOptions(**kw)


def test_warp_temperature() -> None:
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert warp(logits.clone(), _opts(temperature=2.0)).tolist() == [[0.5, 1.0, 2.0]]
    assert warp(logits.clone(), _opts()).tolist() == logits.tolist()


def test_warp_top_k() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [0.0, -1.0, -2.0, 9.0]])
    out = warp(logits.clone(), _opts(top_k=2))
    assert out.tolist() == [[NEG, 5.0, NEG, 4.0], [0.0, NEG, NEG, 9.0]]
    assert warp(logits.clone(), _opts(top_k=10)).tolist() == logits.tolist()  # k >= vocab: no-op
    tie = torch.tensor([[2.0, 2.0, 1.0]])
    assert warp(tie, _opts(top_k=1)).tolist() == [[2.0, 2.0, NEG]]  # ties at the k-th value stay


def test_warp_top_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    keep = lambda p: torch.isfinite(warp(logits.clone(), _opts(top_p=p)))[0].tolist()  # noqa: E731
    assert keep(0.5) == [True, False, False, False]
    assert keep(0.6) == [True, True, False, False]
    assert keep(0.8) == [True, True, False, False]
    assert keep(0.81) == [True, True, True, False]
    assert keep(0.99) == [True, True, True, True]
    assert keep(0.01) == [True, False, False, False]  # the most likely token always stays
    shuffled = probs[:, [2, 0, 3, 1]].log()
    assert torch.isfinite(warp(shuffled, _opts(top_p=0.6)))[0].tolist() == [False, True, False, True]


def test_warp_min_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    keep = lambda p: torch.isfinite(warp(probs.log(), _opts(min_p=p)))[0].tolist()  # noqa: E731
    assert keep(0.2) == [True, True, True, False]  # limit 0.1
    assert keep(0.5) == [True, True, False, False]  # limit 0.25
    assert keep(1.0) == [True, False, False, False]


def test_warp_values_untouched_inside_the_set() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.5]])
    out = warp(logits.clone(), _opts(top_k=3, top_p=0.9))
    finite = torch.isfinite(out)
    assert torch.equal(out[finite], logits[finite])


@pytest.mark.parametrize("name, hf_name, value", [
    ("temperature", "TemperatureLogitsWarper", 0.7),
    ("top_k", "TopKLogitsWarper", 5),
    ("top_p", "TopPLogitsWarper", 0.8),
    ("min_p", "MinPLogitsWarper", 0.1),
])
def test_warp_matches_transformers(name: str, hf_name: str, value: float) -> None:
    import transformers

    hf = getattr(transformers, hf_name)(value)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen) * 3
    expected = hf(torch.zeros(6, 1, dtype=torch.long), logits.clone())
    got = warp(logits.clone(), _opts(**{name: value}))
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert torch.allclose(got[torch.isfinite(got)], expected[torch.isfinite(expected)])


@pytest.mark.parametrize("options", [
    {"temperature": 0}, {"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5},
    {"min_p": -0.1}, {"min_p": 2}, {"seed": "x"}, {"top_k": 1.5},
])
def test_invalid_options_rejected(tiny: Any, options: dict) -> None:
    key = next(iter(options))
    with pytest.raises(OptionsError, match=f"option '{key}'"):
        tiny.generate("The", strategy="sample", options=options, max_new_tokens=1)


@pytest.mark.parametrize("strategy", ["cntp", "ead"])
def test_aligned_sampling_is_an_option_of_sample_only(tiny: Any, strategy: str) -> None:
    from decodekit.manager import get_plugin_system

    options = get_plugin_system().registry.get("strategy", strategy).Options
    assert "temperature" in options.model_fields and "aligned" not in options.model_fields
    assert "aligned" in SampleOptions.model_fields
    with pytest.raises(OptionsError, match="aligned"):
        tiny.generate("The", strategy=strategy, options={"aligned": True}, max_new_tokens=2)
