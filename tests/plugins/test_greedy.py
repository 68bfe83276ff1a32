"""Greedy decoding: token-identical to transformers generate(do_sample=False)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.testing import reference_greedy


@pytest.mark.parametrize("prompt, length", [
    ("The quick brown", 24),
    ("def add(a, b):\n", 16),
    ("SELECT id", 8),
    ("A journey of", 1),
])
def test_parity_with_transformers(tiny: Any, encode: Any, prompt: str, length: int) -> None:
    ids = encode(prompt)
    g = tiny.generate(ids, max_new_tokens=length)
    assert g.token_ids == reference_greedy(tiny, ids, length)
    assert len(g.token_ids) == length and g.finish_reason == "length"


def test_parity_other_seed(encode: Any) -> None:
    from decodekit.testing import tiny_model

    model = tiny_model(3)
    for prompt in ("To be, or", "0 1 2"):
        ids = encode(prompt)
        assert model.generate(ids, max_new_tokens=12).token_ids == reference_greedy(model, ids, 12)


def test_parity_when_eos_ends_the_sequence(eos_model: Any, encode: Any) -> None:
    ended = 0
    for prompt in ("SELECT id", "def add(a, b):\n", "The quick brown"):
        ids = encode(prompt)
        g = eos_model.generate(ids, max_new_tokens=20)
        assert g.token_ids == reference_greedy(eos_model, ids, 20)
        if g.finish_reason == "eos":
            ended += 1
            assert g.token_ids[-1] == 0 and 0 not in g.token_ids[:-1]
            assert len(g.token_ids) < 20
        else:
            assert g.finish_reason == "length" and len(g.token_ids) == 20
    assert ended >= 2


def test_batch_with_padding_equals_unbatched(eos_model: Any, prompts: tuple[str, ...]) -> None:
    singles = [eos_model.generate(p, max_new_tokens=12) for p in prompts]
    batch = eos_model.generate(list(prompts), max_new_tokens=12)
    assert len({len(g.prompt_token_ids) for g in batch}) > 1  # prompts really are padded
    assert {g.finish_reason for g in batch} == {"eos", "length"}
    for single, batched in zip(singles, batch):
        assert batched.token_ids == single.token_ids
        assert batched.finish_reason == single.finish_reason
        assert batched.sequences[0].score == pytest.approx(single.sequences[0].score, rel=1e-4, abs=1e-4)


def test_batch_matches_transformers_batch(tiny: Any, encode: Any) -> None:
    prompts = [encode(p) for p in ("The quick brown", "SELECT id", "def add(a, b):\n")]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ref = tiny.backend.model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                      pad_token_id=0)[:, width:].tolist()
    assert [g.token_ids for g in tiny.generate(prompts, max_new_tokens=10)] == ref


def test_max_new_tokens_honoured(tiny: Any) -> None:
    for n in (1, 2, 7):
        g = tiny.generate("The quick brown", max_new_tokens=n)
        assert len(g.token_ids) == n and g.finish_reason == "length"
        assert g.stats.new_tokens == n and g.stats.forward_passes == n


def test_stop_token_and_eos_off(tiny: Any) -> None:
    plain = tiny.generate("The quick brown", max_new_tokens=10).token_ids
    target = plain[3]
    g = tiny.generate("The quick brown", max_new_tokens=10, processors=[("stop", {"token_ids": [target]})])
    assert g.token_ids == plain[:plain.index(target) + 1] and g.finish_reason == "stop"


def test_eos_can_be_disabled(eos_model: Any) -> None:
    ended = eos_model.generate("SELECT id", max_new_tokens=6)
    assert ended.finish_reason == "eos"
    g = eos_model.generate("SELECT id", max_new_tokens=6, processors=[("stop", {"eos": False})])
    assert g.finish_reason == "length" and len(g.token_ids) == 6
    assert g.token_ids[:len(ended.token_ids)] == ended.token_ids


def test_ties_go_to_lowest_id() -> None:
    from decodekit.plugins.greedy import Greedy

    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    assert Greedy().choose(logits, None).tolist() == [1, 0]  # type: ignore[arg-type]
