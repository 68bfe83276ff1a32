"""decodekit strategies as ``custom_generate`` callables of transformers' ``generate``."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, StoppingCriteria, SuppressTokensLogitsProcessor

import decodekit
from decodekit import hf
from decodekit.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


def _hf_generate(model, ids, **kwargs):
    ids = torch.tensor(ids)
    return model.backend.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0,
                                        do_sample=False, **kwargs)


def test_greedy_callable_matches_transformers_greedy(model):
    ours = _hf_generate(model, [[5, 6, 7, 8]], max_new_tokens=10, custom_generate=hf.greedy)
    theirs = _hf_generate(model, [[5, 6, 7, 8]], max_new_tokens=10)
    assert ours.tolist() == theirs.tolist()


def test_contrastive_callable_matches_decodekit(model):
    options = {"top_k": 3, "alpha": 0.6}
    out = _hf_generate(model, [[5, 6, 7, 8]], max_new_tokens=10, custom_generate=hf.contrastive,
                       decodekit_options=options)
    native = decodekit.generate([5, 6, 7, 8], model=model, strategy="contrastive", options=options,
                                max_new_tokens=10)
    assert out[0, 4:].tolist()[:len(native.token_ids)] == native.token_ids
    assert out.shape[1] <= 4 + 10


def test_left_padded_batch_and_return_sequences(model):
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = model.backend.model.generate(ids, attention_mask=mask, pad_token_id=0, max_new_tokens=6,
                                       custom_generate=hf.beam,
                                       decodekit_options={"num_beams": 3, "num_return_sequences": 2})
    assert out.shape[0] == 4  # two sequences per prompt, best first
    native = decodekit.generate([[5, 6], [7, 8, 9, 10]], model=model, strategy="beam",
                                options={"num_beams": 3, "num_return_sequences": 2}, max_new_tokens=6)
    assert out[0, :4].tolist() == [0, 0, 5, 6]
    assert out[0, 4:4 + len(native[0].sequences[0].token_ids)].tolist() == native[0].sequences[0].token_ids
    assert out[3, 4:4 + len(native[1].sequences[1].token_ids)].tolist() == native[1].sequences[1].token_ids


def test_transformers_processors_apply_inside_the_strategy(model):
    plain = _hf_generate(model, [[5, 6, 7]], max_new_tokens=6, custom_generate=hf.contrastive)
    banned = sorted(set(plain[0, 3:].tolist()) - {0})[:2]
    out = _hf_generate(model, [[5, 6, 7]], max_new_tokens=6, custom_generate=hf.contrastive,
                       logits_processor=LogitsProcessorList([SuppressTokensLogitsProcessor(banned)]))
    assert not set(out[0, 3:].tolist()) & set(banned)


def test_every_builtin_strategy_has_a_callable():
    from decodekit.manager import PluginSystem

    names = set(PluginSystem(entry_points=False).registry.names("strategy"))
    assert names <= set(hf.STRATEGY_CALLABLES)
    assert hf.custom_generate("momentum").__name__ == "momentum"


def test_clear_errors(model):
    with pytest.raises(ValueError, match="decodekit_options"):
        _hf_generate(model, [[5, 6]], max_new_tokens=3, num_beams=2, custom_generate=hf.beam)

    class Never(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with pytest.raises(ValueError, match="Never"):
        _hf_generate(model, [[5, 6]], max_new_tokens=3, custom_generate=hf.greedy,
                     stopping_criteria=[Never()])
    with pytest.raises(decodekit.errors.OptionsError, match="valid options"):
        _hf_generate(model, [[5, 6]], max_new_tokens=3, custom_generate=hf.contrastive,
                     decodekit_options={"penalty_alpha": 0.5})
