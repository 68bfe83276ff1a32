"""Beam search: token-identical to transformers generate(num_beams=...), scores included."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.errors import OptionsError

PROMPTS = ("SELECT id", "def add(a, b):\n", "The quick brown")


def _reference(model: Any, prompts: list[list[int]], *, max_new_tokens: int, num_beams: int,
               num_return_sequences: int, length_penalty: float,
               early_stopping: bool | str) -> tuple[list[list[int]], list[float]]:
    """transformers beam search on left-padded prompts: new tokens (pad-trimmed) and scores."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.backend.model.generate(
        ids, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
        num_return_sequences=num_return_sequences, length_penalty=length_penalty,
        early_stopping=early_stopping, do_sample=False, pad_token_id=0,
        return_dict_in_generate=True, output_scores=True)
    return out.sequences[:, width:].tolist(), out.sequences_scores.tolist()


def _check(model: Any, prompts: list[list[int]], **settings: Any) -> list[str]:
    n = settings["max_new_tokens"]
    options = {k: v for k, v in settings.items() if k != "max_new_tokens"}
    ref_seqs, ref_scores = _reference(model, prompts, **settings)
    gens = model.generate(prompts, strategy="beam", options=options, max_new_tokens=n)
    ours = [s for g in gens for s in g.sequences]
    assert len(ours) == len(ref_seqs) == len(prompts) * settings["num_return_sequences"]
    for ref, ref_score, seq in zip(ref_seqs, ref_scores, ours):
        # transformers pads finished sequences with pad (= EOS = 0 here); decodekit does not
        assert seq.token_ids == ref[:len(seq.token_ids)], (settings, ref, seq.token_ids)
        assert all(t == 0 for t in ref[len(seq.token_ids):])
        assert seq.score == pytest.approx(ref_score, rel=1e-4, abs=1e-6)
    return [s.finish_reason for s in ours]


@pytest.mark.parametrize("settings, eos_returned", [
    (dict(max_new_tokens=10, num_beams=3, num_return_sequences=1, length_penalty=1.0,
          early_stopping=False), True),
    (dict(max_new_tokens=10, num_beams=4, num_return_sequences=2, length_penalty=0.5,
          early_stopping=True), True),
    (dict(max_new_tokens=8, num_beams=2, num_return_sequences=2, length_penalty=2.0,
          early_stopping="never"), False),
    (dict(max_new_tokens=10, num_beams=3, num_return_sequences=3, length_penalty=-0.5,
          early_stopping=False), True),
], ids=["nb3", "nb4-rs2-early", "nb2-never", "nb3-negative-lp"])
def test_parity_with_transformers_padded_batch(eos_model: Any, encode: Any, settings: dict,
                                               eos_returned: bool) -> None:
    reasons = _check(eos_model, [encode(p) for p in PROMPTS], **settings)
    assert ("eos" in reasons) == eos_returned  # finished hypotheses were exercised


def test_parity_on_plain_model_single_prompt(tiny: Any, encode: Any) -> None:
    reasons = _check(tiny, [encode("The quick brown")], max_new_tokens=12, num_beams=4,
                     num_return_sequences=2, length_penalty=1.0, early_stopping=False)
    assert reasons == ["length", "length"]


def test_parity_with_other_eos_model(eos_model_factory: Any, encode: Any) -> None:
    model = eos_model_factory(0, (142, 154, 100, 113), 1.3)
    _check(model, [encode(p) for p in ("0 1 2", "To be, or")], max_new_tokens=10, num_beams=3,
           num_return_sequences=2, length_penalty=1.0, early_stopping=False)


def test_one_beam_equals_greedy(eos_model: Any, prompts: tuple[str, ...]) -> None:
    greedy = eos_model.generate(list(prompts), max_new_tokens=10)
    beam = eos_model.generate(list(prompts), strategy="beam", options={"num_beams": 1}, max_new_tokens=10)
    assert [g.token_ids for g in beam] == [g.token_ids for g in greedy]
    assert {g.finish_reason for g in greedy} == {"eos", "length"}


def test_batch_equals_unbatched(eos_model: Any, prompts: tuple[str, ...]) -> None:
    options = {"num_beams": 3, "num_return_sequences": 2}
    batch = eos_model.generate(list(prompts[:4]), strategy="beam", options=options, max_new_tokens=8)
    for prompt, gen in zip(prompts, batch):
        single = eos_model.generate(prompt, strategy="beam", options=options, max_new_tokens=8)
        assert [s.token_ids for s in gen.sequences] == [s.token_ids for s in single.sequences]


def test_sequences_are_ranked_and_texts_decoded(tiny: Any) -> None:
    g = tiny.generate("The quick", strategy="beam", options={"num_beams": 4, "num_return_sequences": 4},
                      max_new_tokens=6)
    scores = [s.score for s in g.sequences]
    assert scores == sorted(scores, reverse=True) and len(set(map(tuple, (s.token_ids for s in g.sequences)))) == 4
    assert all(s.text == tiny.tokenizer.decode(s.token_ids) for s in g.sequences)
    assert g.token_ids == g.sequences[0].token_ids


def test_beam_with_processors(tiny: Any, encode: Any) -> None:
    """Processors see log-probabilities, as transformers' do."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor

    ids = encode("The quick brown")
    ref = tiny.backend.model.generate(torch.tensor([ids]), max_new_tokens=10, num_beams=3, do_sample=False,
                                      pad_token_id=0, logits_processor=LogitsProcessorList(
                                          [NoRepeatNGramLogitsProcessor(2)]))[0, len(ids):].tolist()
    g = tiny.generate(ids, strategy="beam", options={"num_beams": 3}, max_new_tokens=10,
                      processors=[("no_repeat_ngram", {"size": 2})])
    assert g.token_ids == ref


def test_options_validated(tiny: Any) -> None:
    with pytest.raises(OptionsError, match=r"num_return_sequences \(3\) must be <= num_beams \(2\)"):
        tiny.generate("The", strategy="beam", options={"num_beams": 2, "num_return_sequences": 3})
    with pytest.raises(OptionsError, match="'num_beams'"):
        tiny.generate("The", strategy="beam", options={"num_beams": 0})
    with pytest.raises(OptionsError, match="early_stopping.*'sometimes'"):
        tiny.generate("The", strategy="beam", options={"early_stopping": "sometimes"})
    with pytest.raises(OptionsError, match="unknown option 'beams'.*num_beams"):
        tiny.generate("The", strategy="beam", options={"beams": 2})
