"""Grammar-aligned sampling (``sample`` with ``aligned = true``): the EFG trie, convergence to
the model's distribution conditioned on the grammar, persistence, reset and errors."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch

from decodekit.aligned import EFGTrie, reset, store_for
from decodekit.aligned_exact import exact_distribution, kl_divergence
from decodekit.errors import ConfigError, InputError, OptionsError

PROMPT = "The quick brown"
#: a finite language on which plain constrained sampling is far off: the model rarely ends
#: "-4" with "2" and EOS, yet GCD takes "-" whenever the first token is drawn as "-"
NUMBERS = r"start: /(0|1|10|3\.14|-42)/"


def _log(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).log()


def _mask(size: int, allowed: list[int]) -> torch.Tensor:
    out = torch.zeros(size, dtype=torch.bool)
    out[allowed] = True
    return out


def test_efg_update_on_a_hand_computed_example() -> None:
    """Tokens a, b, c, EOS, x (ids 0-4). The language is {a EOS, b EOS}; ``a c`` is a dead end."""
    a, b, c, eos = 0, 1, 2, 3
    trie = EFGTrie()
    root = trie.root
    p_root = _log([0.5, 0.3, 0.1, 0.05, 0.05])
    allowed_root = _mask(5, [a, b])
    scores = trie.scores(root, p_root, allowed_root)
    # first visit: unseen prefixes count as c = 1, so the scores are GCD's masked log-probs
    assert torch.allclose(torch.softmax(scores, -1), torch.tensor([0.5, 0.3, 0, 0, 0], dtype=torch.float64) / 0.8)
    assert root.efg == pytest.approx(0.8)  # c(root) = P(a) + P(b)

    node_a = trie.child(root, a, p_root, allowed_root)
    assert node_a.efg == 1.0 and root.efg == pytest.approx(0.8)  # a new child keeps c = 1
    assert math.exp(root.log_free) == pytest.approx(0.3)  # only b is left unexplored
    p_a = _log([0.1, 0.1, 0.2, 0.6, 0.0])
    allowed_a = _mask(5, [c, eos])
    trie.scores(node_a, p_a, allowed_a)
    assert node_a.efg == pytest.approx(0.8)  # P(c|a) + P(EOS|a)
    assert root.efg == pytest.approx(0.5 * 0.8 + 0.3)

    node_ac = trie.child(node_a, c, p_a, allowed_a)
    trie.settle(node_ac, grammatical=False)  # "a c" cannot be finished
    assert node_a.efg == pytest.approx(0.6)
    assert root.efg == pytest.approx(0.5 * 0.6 + 0.3)
    trie.settle(trie.child(node_a, eos, p_a, allowed_a), grammatical=True)
    assert node_a.efg == pytest.approx(0.6) and root.efg == pytest.approx(0.6)

    node_b = trie.child(root, b, p_root, allowed_root)
    p_b = _log([0.2, 0.2, 0.05, 0.5, 0.05])
    trie.scores(node_b, p_b, _mask(5, [eos]))
    assert node_b.efg == pytest.approx(0.5)
    assert root.efg == pytest.approx(0.5 * 0.6 + 0.3 * 0.5)  # = P(L) = P(a EOS) + P(b EOS)
    assert math.exp(root.log_free) == 0.0
    # the corrected proposal at the root is now exactly P(w | L): 0.30 / 0.45 and 0.15 / 0.45
    probs = torch.softmax(trie.scores(root, p_root, allowed_root), -1)
    assert probs[a] == pytest.approx(2 / 3) and probs[b] == pytest.approx(1 / 3)
    assert trie.nodes == 5 and trie.samples == 2
    assert sorted(tuple(path) for path, _ in trie.walk()) == [(), (a,), (a, c), (a, eos), (b,)]


def _draw(model: Any, grammar: str, n: int, rows: int, options: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for seed in range(n // rows):
        gens = model.generate([PROMPT] * rows, grammar=grammar, strategy="sample", options=options,
                              seed=seed, max_new_tokens=8)
        texts += [g.text for g in gens]
    return texts


def test_kl_to_the_conditioned_distribution_decreases_and_beats_gcd(tiny: Any) -> None:
    reset(tiny)
    exact = exact_distribution(tiny, PROMPT, NUMBERS, max_tokens=8)
    target = exact.probabilities
    assert set(target) == {"0", "1", "10", "3.14", "-42"}
    assert sum(target.values()) == pytest.approx(1.0)

    n, rows = 400, 5
    gcd = _draw(tiny, NUMBERS, n, rows, {})
    asap = _draw(tiny, NUMBERS, n, rows, {"aligned": True})
    assert all(t in target for t in gcd + asap)  # both only ever produce sentences of the grammar

    kl_gcd = kl_divergence(Counter(gcd), target)
    quarters = [kl_divergence(Counter(asap[i:i + n // 4]), target) for i in range(0, n, n // 4)]
    first, second = (kl_divergence(Counter(asap[:n // 2]), target),
                     kl_divergence(Counter(asap[n // 2:]), target))
    overall = kl_divergence(Counter(asap), target)
    assert second < first / 4
    assert quarters[-1] < quarters[0] / 4
    assert overall < kl_gcd / 5
    assert second < 0.1 < kl_gcd
    # the trie has covered the language: c(root) is P(L), which it never undercuts
    trie = next(iter(store_for(tiny)))
    assert trie.samples == n
    assert trie.efg == pytest.approx(exact.mass, rel=1e-3)


def test_first_visit_is_plain_constrained_sampling(tiny: Any, encode: Any) -> None:
    """With an empty trie, the corrected proposal equals GCD's masked distribution."""
    from decodekit.grammars import compile

    logits = torch.randn(len(tiny.tokenizer), generator=torch.Generator().manual_seed(0))
    matcher = compile(NUMBERS, tiny.tokenizer, eos_token_ids=(0,)).matcher()
    allowed = torch.from_numpy(matcher.mask().copy())
    scores = EFGTrie().scores(EFGTrie().root, torch.log_softmax(logits.double(), -1), allowed)
    gcd = torch.softmax(logits.double().masked_fill(~allowed, float("-inf")), -1)
    assert torch.allclose(torch.softmax(scores, -1), gcd)


def test_trie_persists_per_target_and_resets(tiny: Any) -> None:
    reset(tiny)
    grammar = r"start: /(yes|no|maybe)/"
    options = {"aligned": True}
    g = tiny.generate([PROMPT] * 3, grammar=grammar, strategy="sample", options=options, seed=0,
                      max_new_tokens=6)
    store = store_for(tiny)
    assert len(store) == 1
    trie = next(iter(store))
    assert trie.samples == 3
    assert g[0].stats.extra["aligned_efg"] == [pytest.approx(trie.efg)] * 3
    assert g[0].stats.extra["aligned_nodes"] == trie.nodes
    tiny.generate(PROMPT, grammar=grammar, strategy="sample", options=options, seed=1, max_new_tokens=6)
    assert trie.samples == 4 and len(store) == 1  # the same model, grammar and prompt: shared
    # another prompt, grammar, temperature or processor is another target
    tiny.generate("SELECT id", grammar=grammar, strategy="sample", options=options, seed=0, max_new_tokens=6)
    tiny.generate(PROMPT, grammar=NUMBERS, strategy="sample", options=options, seed=0, max_new_tokens=6)
    tiny.generate(PROMPT, grammar=grammar, strategy="sample", options={**options, "temperature": 2.0},
                  seed=0, max_new_tokens=6)
    tiny.generate(PROMPT, grammar=grammar, strategy="sample", options=options, seed=0, max_new_tokens=6,
                  processors=[("repetition_penalty", {"penalty": 1.5})])
    assert len(store) == 5 and trie.samples == 4
    # aligned_reset starts this request's target afresh
    tiny.generate(PROMPT, grammar=grammar, strategy="sample", options={**options, "aligned_reset": True},
                  seed=2, max_new_tokens=6)
    fresh = [t for t in store if t.key == trie.key]
    assert len(fresh) == 1 and fresh[0] is not trie and fresh[0].samples == 1
    reset(tiny)
    assert len(store) == 0


def test_pipeline_options(tiny: Any) -> None:
    from decodekit.pipeline import Pipeline

    reset(tiny)
    pipe = Pipeline.from_dict({"grammar": NUMBERS, "max_new_tokens": 8, "seed": 3,
                               "strategy": {"name": "sample", "options": {"aligned": True}}})
    kwargs = pipe.generate_kwargs()
    for _ in range(2):
        tiny.generate([PROMPT] * 2, **kwargs)
    assert next(iter(store_for(tiny))).samples == 4
    again = pipe.with_overrides(["strategy.options.aligned_reset=true"]).generate_kwargs()
    tiny.generate([PROMPT] * 2, **again)
    assert next(iter(store_for(tiny))).samples == 2
    with pytest.raises(ConfigError, match="aligned"):
        Pipeline.from_dict({"grammar": NUMBERS, "strategy": {"name": "cntp", "options": {"aligned": True}}})


def test_aligned_json_output_is_grammatical(tiny: Any) -> None:
    from decodekit.grammars import compile

    compiled = compile("json", tiny.tokenizer, eos_token_ids=tiny.backend.eos_token_ids)
    gens = tiny.generate(['{"a": [', "[1, "], grammar="json", strategy="sample",
                         options={"aligned": True, "aligned_reset": True, "temperature": 1.5},
                         seed=0, max_new_tokens=16)
    for g in gens:
        m = compiled.matcher()
        assert m.accept_tokens(g.token_ids) == len(g.token_ids)
        assert 0.0 < g.stats.extra["aligned_efg"][0] <= 1.0


def test_truncation_that_leaves_no_allowed_token_falls_back(tiny: Any) -> None:
    """top_k = 1 keeps the model's favourite token, which the grammar forbids here: the target
    gives the grammar no mass, so the step draws from the constrained distribution."""
    g = tiny.generate(PROMPT, grammar=NUMBERS, strategy="sample",
                      options={"aligned": True, "aligned_reset": True, "top_k": 1}, seed=0, max_new_tokens=8)
    assert g.stats.extra["aligned_fallbacks"] >= 1
    assert g.text in {"0", "1", "10", "3.14", "-42"}
    assert g.stats.extra["aligned_efg"] == [0.0]


def test_errors(tiny: Any) -> None:
    with pytest.raises(OptionsError, match="needs a grammar"):
        tiny.generate(PROMPT, strategy="sample", options={"aligned": True}, max_new_tokens=2)
    for strategy in ("greedy", "beam", "cntp", "ead"):  # an option of 'sample' only
        with pytest.raises(OptionsError, match="unknown option 'aligned'"):
            tiny.generate(PROMPT, grammar=NUMBERS, strategy=strategy, options={"aligned": True},
                          max_new_tokens=2)
    with pytest.raises(OptionsError, match="set aligned = true"):
        tiny.generate(PROMPT, grammar=NUMBERS, strategy="sample", options={"aligned_reset": True},
                      max_new_tokens=2)
    with pytest.raises(InputError, match="longer than max_tokens"):
        exact_distribution(tiny, PROMPT, "start: /[0-9]+/", max_tokens=3)
    with pytest.raises(InputError, match="no samples"):
        kl_divergence({}, {"a": 1.0})
    assert kl_divergence({"a": 1, "b": 1}, {"a": 1.0}) == math.inf
    assert kl_divergence({"a": 3, "b": 1}, {"a": 0.75, "b": 0.25}) == pytest.approx(0.0)
