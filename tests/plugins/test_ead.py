"""EAD: identities at the threshold extremes, the switching rule, catch-up caches, statistics."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import decodekit
from decodekit.api import Model
from decodekit.backends.pytorch import TorchBackend
from decodekit.early_exit import early_exit_backend
from decodekit.errors import OptionsError, UnknownNameError, UserError
from decodekit.loop import drive, prepare
from decodekit.manager import get_plugin_system
from decodekit.testing import tiny_llama, tiny_model, tiny_tokenizer

INF = float("inf")
PROMPTS = ["The quick brown", "def add(a, b):\n"]
#: switches both ways on the tiny model (its entropies are 0-5 bits)
MIXED = {"layers": 1, "threshold": 2.5, "window": 2, "min_dwell": 1}


@pytest.fixture(scope="module")
def early(tiny: Any) -> Model:
    """The first of the tiny model's two layers, as a model of its own."""
    return Model(early_exit_backend(tiny.backend, 1))


@pytest.fixture(scope="module")
def other_small() -> Model:
    """A separate one-layer tiny model with the same tokenizer."""
    return tiny_model(1, layers=1)


def run(model: Any, prompts: list[str], options: dict[str, Any],
        **kwargs: Any) -> tuple[Any, list[Any], list[Any]]:
    """Generate through prepare/drive; after each step, call ``kwargs['each']`` (if given)."""
    each = kwargs.pop("each", None)
    system = get_plugin_system()
    prepared = prepare(system, model.backend, prompts, strategy="ead", options=options, **kwargs)
    gen = drive(system, prepared)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return prepared.strategy, stop.value, events
        if each is not None:
            each(prepared.strategy)


def ids_of(gens: list[Any]) -> list[list[int]]:
    return [g.token_ids for g in gens]


@pytest.mark.parametrize("which", ["early", "other"])
def test_infinite_threshold_is_plain_small_decoding(tiny: Any, early: Model, other_small: Model,
                                                    which: str) -> None:
    small = early if which == "early" else other_small
    options: dict[str, Any] = {"threshold": INF}
    if which == "early":
        options["layers"] = 1
    else:
        options["small_model"] = other_small
    ref = decodekit.generate(PROMPTS, model=small, strategy="greedy", max_new_tokens=16)
    gens = decodekit.generate(PROMPTS, model=tiny, strategy="ead", options=options, max_new_tokens=16)
    assert ids_of(gens) == ids_of(ref)
    extra = gens[0].stats.extra
    assert extra["forward_passes_large"] == 0 and extra["tokens_large"] == 0
    assert extra["forward_passes_small"] == gens[0].stats.forward_passes == ref[0].stats.forward_passes
    assert extra["estimated_cost"] == pytest.approx(extra["parameters_small"] / extra["parameters_large"],
                                                    abs=1e-4)


def test_infinite_threshold_with_sampling_is_plain_small_sampling(tiny: Any, other_small: Model) -> None:
    sampling = {"temperature": 0.8, "top_p": 0.9}
    ref = decodekit.generate(PROMPTS, model=other_small, strategy="sample", options=sampling,
                             max_new_tokens=16, seed=4)
    gens = decodekit.generate(PROMPTS, model=tiny, strategy="ead", max_new_tokens=16, seed=4,
                              options={"small_model": other_small, "threshold": INF,
                                       "base": "sample", **sampling})
    assert ids_of(gens) == ids_of(ref)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_minus_infinite_threshold_is_the_large_model_after_the_first_window(
        tiny: Any, encode: Any, other_small: Model, window: int) -> None:
    for prompt in PROMPTS:
        g = decodekit.generate(prompt, model=tiny, strategy="ead", max_new_tokens=14,
                               options={"small_model": other_small, "threshold": -INF, "window": window})
        head = decodekit.generate(prompt, model=other_small, strategy="greedy", max_new_tokens=window)
        assert g.token_ids[:window] == head.token_ids
        rest = decodekit.generate(encode(prompt) + head.token_ids, model=tiny, strategy="greedy",
                                  max_new_tokens=14 - window)
        assert g.token_ids[window:] == rest.token_ids
        extra = g.stats.extra
        assert (extra["tokens_small"], extra["tokens_large"]) == (window, 14 - window)
        assert (extra["switches_to_large"], extra["switches_to_small"]) == (1, 0)
        assert extra["catch_up_passes_large"] == 1  # one prefill of the whole history


def fresh_logits(backend: Any, history: list[int]) -> torch.Tensor:
    out, _ = backend.prefill(torch.tensor([history]))
    return out.logits[0]


def test_caches_after_catch_up_equal_a_fresh_prefill(tiny: Any, early: Model) -> None:
    checked = {0: 0, 1: 0}
    backends = [early.backend, tiny.backend]

    def check(strategy: Any) -> None:
        rows = strategy.rows
        if bool(rows.finished.all()):
            return
        for m in (0, 1):
            if strategy.caches[m] is None or strategy.synced[m] != rows.length:
                continue
            for r in range(rows.num_rows):
                if rows.finished[r]:
                    continue
                torch.testing.assert_close(strategy.logits[m][r],
                                           fresh_logits(backends[m], rows.history(r)),
                                           rtol=1e-4, atol=1e-4)
                checked[m] += 1

    strategy, gens, _ = run(tiny, PROMPTS, MIXED, max_new_tokens=24, each=check)
    extra = gens[0].stats.extra
    assert extra["catch_up_passes_small"] >= 1 and extra["catch_up_passes_large"] >= 2
    assert checked[0] > 5 and checked[1] > 5


def expected_models(entropies: list[float], threshold: float, window: int, dwell: int) -> list[int]:
    """The switching rule, written out: which model generates each token."""
    models, active, since = [], 0, 0
    for t, _ in enumerate(entropies):
        models.append(active)
        since += 1
        if t + 1 >= window and since >= dwell:
            want = 1 if sum(entropies[t + 1 - window:t + 1]) / window > threshold else 0
            if want != active:
                active, since = want, 0
    return models


@pytest.mark.parametrize("options", [MIXED, {**MIXED, "window": 3, "min_dwell": None},
                                     {**MIXED, "threshold": 2.0, "window": 4, "min_dwell": 6}])
def test_switching_follows_the_rolling_mean_rule(tiny: Any, options: dict[str, Any]) -> None:
    strategy, gens, _ = run(tiny, PROMPTS, options, max_new_tokens=24)
    dwell = options["window"] if options["min_dwell"] is None else options["min_dwell"]
    switches = 0
    for r, trace in enumerate(strategy.trace):
        models = [m for m, _ in trace]
        entropies = [h for _, h in trace]
        assert models == expected_models(entropies, options["threshold"], options["window"], dwell)
        assert len(trace) == len(gens[r].token_ids)
        switches += sum(a != b for a, b in zip(models, models[1:]))
    extra = gens[0].stats.extra
    assert switches == extra["switches_to_large"] + extra["switches_to_small"] > 0


def test_entropy_is_of_the_active_model(tiny: Any, early: Model, encode: Any) -> None:
    strategy, gens, _ = run(tiny, PROMPTS[:1], MIXED, max_new_tokens=12)
    out = gens[0].token_ids
    backends = [early.backend, tiny.backend]
    for t, (m, h) in enumerate(strategy.trace[0]):
        with torch.no_grad():
            p = torch.softmax(fresh_logits(backends[m], encode(PROMPTS[0]) + out[:t]), dim=-1)
        assert h == pytest.approx(float(torch.special.entr(p).sum()) / math.log(2), abs=1e-3)


def test_statistics(tiny: Any) -> None:
    strategy, gens, _ = run(tiny, PROMPTS, MIXED, max_new_tokens=20)
    stats, extra = gens[0].stats, gens[0].stats.extra
    total = sum(len(g.token_ids) for g in gens)
    assert extra["tokens_small"] + extra["tokens_large"] == total
    assert extra["large_token_share"] == pytest.approx(extra["tokens_large"] / total, abs=1e-4)
    assert stats.forward_passes == extra["forward_passes_small"] + extra["forward_passes_large"]
    assert stats.positions == extra["positions_small"] + extra["positions_large"]
    ps, pl = extra["parameters_small"], extra["parameters_large"]
    assert ps == early_exit_backend(tiny.backend, 1).parameter_count() < pl
    assert extra["estimated_cost_tokens"] == pytest.approx(
        (ps * extra["tokens_small"] + pl * extra["tokens_large"]) / (pl * total), abs=1e-4)
    steps = max(len(g.token_ids) for g in gens)
    reference = len(PROMPTS) * (strategy.rows.prompt_width + steps - 1)
    assert extra["estimated_cost"] == pytest.approx(
        (ps * extra["positions_small"] + pl * extra["positions_large"]) / (pl * reference), abs=1e-4)


def test_composes_with_processors(tiny: Any) -> None:
    plain = decodekit.generate(PROMPTS, model=tiny, strategy="ead", options=MIXED, max_new_tokens=16)
    banned = sorted({t for g in plain for t in g.token_ids})[:6]
    gens = decodekit.generate(PROMPTS, model=tiny, strategy="ead", options=MIXED, max_new_tokens=16,
                              processors=[("bad_words", {"token_ids": [[t] for t in banned]}),
                                          ("no_repeat_ngram", {"size": 2})])
    for g in gens:
        assert not set(g.token_ids) & set(banned)
        bigrams = list(zip(g.token_ids, g.token_ids[1:]))
        assert len(bigrams) == len(set(bigrams))
    assert gens[0].stats.extra["tokens_large"] > 0 and gens[0].stats.extra["tokens_small"] > 0


def test_early_eos_rows_in_a_batch(eos_model_factory: Any, prompts: tuple[str, ...], encode: Any) -> None:
    model = eos_model_factory()
    gens = decodekit.generate(list(prompts), model=model, strategy="ead", max_new_tokens=12,
                              options={"layers": 1, "threshold": -INF, "window": 1})
    assert any(g.sequences[0].finish_reason == "eos" for g in gens)
    for prompt, g in zip(prompts, gens):
        if g.sequences[0].finish_reason == "eos":
            assert g.token_ids[-1] == 0 and 0 not in g.token_ids[:-1]
        rest = decodekit.generate(encode(prompt) + g.token_ids[:1], model=model, max_new_tokens=11)
        assert g.token_ids[1:] == rest.token_ids
    assert gens[0].stats.extra["tokens_large"] == sum(len(g.token_ids) - 1 for g in gens)
    ref_small = decodekit.generate(list(prompts), model=Model(early_exit_backend(model.backend, 1)),
                                   strategy="greedy", max_new_tokens=12)
    inf = decodekit.generate(list(prompts), model=model, strategy="ead",
                             options={"layers": 1, "threshold": INF}, max_new_tokens=12)
    assert ids_of(inf) == ids_of(ref_small)


def test_small_model_by_reference(tiny: Any, other_small: Model, tmp_path: Any) -> None:
    other_small.backend.model.save_pretrained(tmp_path)
    other_small.tokenizer.save_pretrained(tmp_path)
    by_ref = decodekit.generate(PROMPTS[0], model=tiny, strategy="ead", max_new_tokens=10,
                                options={"small_model": str(tmp_path), "threshold": 2.5})
    by_obj = decodekit.generate(PROMPTS[0], model=tiny, strategy="ead", max_new_tokens=10,
                                options={"small_model": other_small, "threshold": 2.5})
    assert by_ref.token_ids == by_obj.token_ids
    assert by_ref.stats.extra["small_model"] == str(tmp_path)


def test_vocabularies_must_match(tiny: Any) -> None:
    wider = TorchBackend(tiny_llama(2, vocab_size=400), tiny_tokenizer(), model_id="wide")
    with pytest.raises(UserError, match="share a vocabulary.*400 and 320"):
        decodekit.generate("The quick", model=tiny, strategy="ead", options={"small_model": wider})
    other_tok = TorchBackend(tiny_llama(2), tiny_tokenizer(300), model_id="other-tokenizer")
    with pytest.raises(UserError, match="tokenizers map tokens to different ids"):
        decodekit.generate("The quick", model=tiny, strategy="ead", options={"small_model": other_tok})


@pytest.mark.parametrize(("options", "match"), [
    ({"layers": 2}, "layers must be an integer from 1 to 1"),
    ({"small_model": "x", "layers": 3}, "layers applies only to the default"),
    ({"temperature": 0.5}, "temperature applies only with base='sample'"),
    ({"base": "sample", "base_options": {"top_k": 3}}, "not in base_options"),
    ({"base": "beam"}, "not a token-by-token strategy"),
    ({"small_model": 3.5}, "small_model must be"),
    ({"window": 0}, "window"),
])
def test_bad_options_are_clear(tiny: Any, options: dict[str, Any], match: str) -> None:
    with pytest.raises((OptionsError, UserError), match=match):
        decodekit.generate("The quick", model=tiny, strategy="ead", options=options, max_new_tokens=2)


def test_unknown_base(tiny: Any) -> None:
    with pytest.raises(UnknownNameError, match="greedy"):
        decodekit.generate("The quick", model=tiny, strategy="ead", options={"base": "nope"},
                           max_new_tokens=2)


@pytest.mark.e2e
def test_default_model_early_exit_identities() -> None:
    model = decodekit.load("default")
    prompt = "The capital of France is"
    small = Model(early_exit_backend(model.backend, 8))
    inf = decodekit.generate(prompt, model=model, strategy="ead", options={"threshold": INF},
                             max_new_tokens=12)
    assert inf.token_ids == decodekit.generate(prompt, model=small, max_new_tokens=12).token_ids
    minf = decodekit.generate(prompt, model=model, strategy="ead", options={"threshold": -INF},
                              max_new_tokens=12)
    ids = model.tokenizer.encode(prompt, add_special_tokens=False) + minf.token_ids[:5]
    assert minf.token_ids[5:] == decodekit.generate(ids, model=model, max_new_tokens=7).token_ids
