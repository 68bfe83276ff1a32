"""CNTP: trial schedule, punctuation, identity with sampling, minimum-perplexity trials, chunks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import decodekit
from decodekit.errors import OptionsError
from decodekit.loop import drive, prepare
from decodekit.manager import get_plugin_system
from decodekit.plugins.cntp import PUNCTUATION, CNTPOptions, punctuation_mask, trial_count
from decodekit.plugins.sample import warp

#: Trials on almost every step of the tiny model (its warped entropies are a few nats).
BRANCHY = {"max_trials": 4, "entropy_low": 0.5, "entropy_high": 4.0, "temperature": 0.8}


def run(model: Any, prompts: list[str], options: dict[str, Any],
        **kwargs: Any) -> tuple[Any, list[Any], list[Any]]:
    """Generate through prepare/drive; returns the strategy, the generations and the events."""
    system = get_plugin_system()
    prepared = prepare(system, model.backend, prompts, strategy="cntp", options=options, **kwargs)
    events = []
    gen = drive(system, prepared)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return prepared.strategy, stop.value, events


def test_trial_count_formulas() -> None:
    code = CNTPOptions(max_trials=10, entropy_low=0.0, entropy_high=1.0)
    paper = CNTPOptions(max_trials=10, entropy_low=0.0, entropy_high=1.0, trial_formula="paper")
    assert [trial_count(h, code) for h in (-1.0, 0.0, 0.05, 0.5, 0.95, 1.0, 3.0)] == [1, 1, 1, 5, 9, 10, 10]
    assert [trial_count(h, paper) for h in (-1.0, 0.0, 0.05, 0.5, 0.95, 1.0, 3.0)] == [1, 1, 1, 5, 9, 10, 10]
    # where they differ: code rounds 1 + 9x down, the paper 10x
    assert trial_count(0.15, code) == 2 and trial_count(0.15, paper) == 1
    assert trial_count(0.25, code) == 3 and trial_count(0.25, paper) == 2


@pytest.mark.parametrize("bad", [{"entropy_low": 2.0, "entropy_high": 1.0}, {"max_trials": 0},
                                 {"trial_formula": "fast"}, {"trails": 3}])
def test_bad_options_are_clear(tiny: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(OptionsError, match="cntp"):
        decodekit.generate("The quick", model=tiny, strategy="cntp", options=bad, max_new_tokens=2)


def test_punctuation_from_decoded_text(tiny: Any) -> None:
    tok = tiny.tokenizer
    mask = punctuation_mask(tok, tiny.backend.vocab_size)
    assert mask is punctuation_mask(tok, tiny.backend.vocab_size)  # computed once per tokenizer
    expected = [i not in tok.all_special_ids and any(c in tok.decode([i]) for c in PUNCTUATION)
                for i in range(len(tok))]
    assert mask.tolist() == expected
    for text in (".", ",", ";", ")"):
        (tid,) = tok.encode(text, add_special_tokens=False)
        assert mask[tid]
    assert not mask[tok.encode(" quick", add_special_tokens=False)].any()
    assert not mask[tok.eos_token_id]
    # merged tokens (e.g. a period with a newline or more text) count as punctuation too
    assert any(mask[i] and len(tok.decode([i]).strip()) > 1 for i in range(len(tok)))


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_p": 0.9},
                                     {"top_k": 20, "min_p": 0.05, "temperature": 1.3}])
def test_one_trial_is_exactly_sample(tiny: Any, options: dict[str, Any]) -> None:
    prompts = ["The quick brown", "def add(a, b):\n", "SELECT id"]
    for seed in (0, 7):
        ref = decodekit.generate(prompts, model=tiny, strategy="sample", options=options,
                                 max_new_tokens=16, seed=seed)
        got = decodekit.generate(prompts, model=tiny, strategy="cntp",
                                 options={**options, "max_trials": 1}, max_new_tokens=16, seed=seed)
        assert [g.token_ids for g in got] == [r.token_ids for r in ref]
        assert [g.sequences[0].score for g in got] == pytest.approx([r.sequences[0].score for r in ref],
                                                                     abs=1e-4)
        assert got[0].stats.extra["branching_steps"] == 0


def test_one_trial_matches_sample_with_early_eos(eos_model: Any, prompts: tuple[str, ...]) -> None:
    ref = decodekit.generate(list(prompts), model=eos_model, strategy="sample", max_new_tokens=12, seed=3)
    got = decodekit.generate(list(prompts), model=eos_model, strategy="cntp",
                             options={"max_trials": 1}, max_new_tokens=12, seed=3)
    assert [g.token_ids for g in got] == [r.token_ids for r in ref]
    assert [g.sequences[0].finish_reason for g in got] == [r.sequences[0].finish_reason for r in ref]


def perplexity(tiny: Any, history: list[int], trial: list[int], options: CNTPOptions) -> float:
    """exp(-mean log q) of ``trial`` after ``history``, from one fresh forward pass."""
    ids = torch.tensor([history + trial])
    with torch.no_grad():
        logits = tiny.backend.model(ids).logits[0, len(history) - 1:-1]
    logq = torch.log_softmax(warp(logits.clone(), options), dim=-1)
    return math.exp(-float(logq.gather(1, torch.tensor(trial)[:, None]).mean()))


def test_kept_trial_has_minimum_perplexity(tiny: Any, encode: Any) -> None:
    prompts = ["The quick brown", "To be, or"]
    strategy, gens, _ = run(tiny, prompts, {**BRANCHY, "top_p": 0.95}, max_new_tokens=20, seed=11)
    assert len(strategy.branches) >= 4
    for branch in strategy.branches:
        assert len(branch.trials) >= 2
        out = gens[branch.prompt].token_ids
        history = encode(prompts[branch.prompt]) + out[:branch.position]
        ppl = [perplexity(tiny, history, t, strategy.options) for t in branch.trials]
        assert branch.perplexities == pytest.approx(ppl, rel=1e-4)
        assert branch.kept == min(range(len(ppl)), key=lambda i: (branch.perplexities[i], i))
        kept = branch.trials[branch.kept]
        assert out[branch.position:branch.position + len(kept)] == kept


def test_chunks_end_at_punctuation_eos_or_limit(eos_model: Any, prompts: tuple[str, ...]) -> None:
    limit = 10
    strategy, gens, _ = run(eos_model, list(prompts), BRANCHY, max_new_tokens=limit, seed=5)
    ends = punctuation_mask(eos_model.tokenizer, eos_model.backend.vocab_size).clone()
    ends[0] = True  # EOS
    reasons = set()
    for branch in strategy.branches:
        for trial in branch.trials:
            assert not ends[trial[:-1]].any(), "a trial continued past a chunk end"
            at_limit = branch.position + len(trial) == limit
            assert bool(ends[trial[-1]]) or at_limit
            reasons.add("eos" if trial[-1] == 0 else "punct" if ends[trial[-1]] else "limit")
    assert reasons == {"eos", "punct", "limit"}
    for g in gens:
        assert len(g.token_ids) <= limit
        assert g.sequences[0].finish_reason in ("eos", "length")
        if g.sequences[0].finish_reason == "eos":
            assert g.token_ids[-1] == 0 and 0 not in g.token_ids[:-1]


def test_cache_after_each_step_equals_fresh_prefill(tiny: Any) -> None:
    system = get_plugin_system()
    prepared = prepare(system, tiny.backend, ["The quick brown", "SELECT id"], strategy="cntp",
                       options=BRANCHY, max_new_tokens=18, seed=2)
    strategy = prepared.strategy
    gen = drive(system, prepared)
    checked = 0
    for _ in gen:
        for state in strategy.prompts:
            if state.done:
                continue
            history = state.rows.history(0)
            assert state.cache.length == len(history)
            fresh, _ = tiny.backend.prefill(torch.tensor([history]))
            torch.testing.assert_close(state.logits, fresh.logits, rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked > 5
    # a kept trial shorter than its longest sibling had padding cropped from its cache
    assert any(len(b.trials[b.kept]) < max(map(len, b.trials)) for b in strategy.branches)


def test_statistics_and_one_pass_per_trial_step(tiny: Any) -> None:
    strategy, gens, _ = run(tiny, ["The quick brown"], BRANCHY, max_new_tokens=20, seed=4)
    stats = gens[0].stats
    extra = stats.extra
    branches = strategy.branches
    kept = [len(b.trials[b.kept]) for b in branches]
    assert extra["branching_steps"] == len(branches) > 0
    assert extra["trials_run"] == sum(len(b.trials) for b in branches)
    assert extra["accepted_per_branch"] == pytest.approx(sum(kept) / len(kept), abs=1e-3)
    # the trials of a branch share forward passes: about the longest trial's length, not the sum
    longest = sum(max(map(len, b.trials)) for b in branches)
    assert longest - len(branches) <= extra["trial_forward_passes"] <= longest
    assert extra["trial_forward_passes"] < sum(len(t) for b in branches for t in b.trials)
    singles = stats.new_tokens - sum(kept)
    passes = 1 + extra["trial_forward_passes"] + singles
    assert stats.forward_passes in (passes, passes - 1)  # the very last token is never fed


def test_composes_with_processors(tiny: Any, encode: Any) -> None:
    plain = decodekit.generate("The quick brown", model=tiny, strategy="cntp", options=BRANCHY,
                               max_new_tokens=16, seed=1)
    banned = sorted(set(plain.token_ids))[:4]
    strategy, gens, _ = run(tiny, ["The quick brown"], BRANCHY, max_new_tokens=16, seed=1,
                            processors=[("bad_words", {"token_ids": [[t] for t in banned]}),
                                        ("no_repeat_ngram", {"size": 2, "include_prompt": False})])
    out = gens[0].token_ids
    assert not set(out) & set(banned)
    assert all(not set(t) & set(banned) for b in strategy.branches for t in b.trials)
    bigrams = list(zip(out, out[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_stop_string_inside_a_chunk(tiny: Any) -> None:
    plain = decodekit.generate("The quick brown", model=tiny, strategy="cntp", options=BRANCHY,
                               max_new_tokens=16, seed=1)
    stop = plain.text[3:6]
    g = decodekit.generate("The quick brown", model=tiny, strategy="cntp", options=BRANCHY,
                           max_new_tokens=16, seed=1, processors=[("stop", {"strings": [stop]})])
    assert g.sequences[0].finish_reason == "stop"
    assert stop not in g.text and plain.text.startswith(g.text)


def test_registered_and_described() -> None:
    system = get_plugin_system()
    cls = system.registry.get("strategy", "cntp")
    assert cls.name == "cntp" and "temperature" in cls.Options.model_fields


@pytest.mark.e2e
def test_default_model_chunks_end_in_punctuation() -> None:
    model = decodekit.load("default")
    strategy, gens, _ = run(model, ["Q: What is 12 + 30? A:"], {"temperature": 0.9, "top_p": 0.9},
                            max_new_tokens=24, seed=0)
    text_of = model.tokenizer.decode
    for branch in strategy.branches:
        kept = branch.trials[branch.kept]
        if branch.position + len(kept) < 24 and kept[-1] not in model.backend.eos_token_ids:
            assert any(c in text_of([kept[-1]]) for c in PUNCTUATION)
    ref = decodekit.generate("Q: What is 12 + 30? A:", model=model, strategy="sample",
                             options={"temperature": 0.9, "top_p": 0.9}, max_new_tokens=24, seed=0)
    one = decodekit.generate("Q: What is 12 + 30? A:", model=model, strategy="cntp",
                             options={"temperature": 0.9, "top_p": 0.9, "max_trials": 1},
                             max_new_tokens=24, seed=0)
    assert one.token_ids == ref.token_ids
