"""decodekit.hf.GrammarLogitsProcessor inside transformers' generate."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch


def _generate(model: Any, tokenizer: Any, proc: Any, **kwargs: Any) -> Any:
    from transformers import LogitsProcessorList

    ids = torch.tensor([tokenizer.encode("The quick brown", add_special_tokens=False)])
    return model.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=LogitsProcessorList([proc]),
                          pad_token_id=0, eos_token_id=0, **kwargs)[:, ids.shape[1]:]


@pytest.mark.parametrize("kwargs", [{"do_sample": False}, {"num_beams": 3, "do_sample": False},
                                    {"do_sample": True, "top_k": 0}])
def test_generate_follows_the_grammar(eos_model_factory: Any, kwargs: dict[str, Any]) -> None:
    from decodekit.grammars import compile
    from decodekit.hf import GrammarLogitsProcessor

    model = eos_model_factory()
    hf, tok = model.backend.model, model.tokenizer
    proc = GrammarLogitsProcessor("json", tok)
    torch.manual_seed(0)
    out = _generate(hf, tok, proc, max_new_tokens=40, **kwargs)[0].tolist()
    if 0 in out:
        out = out[:out.index(0)]
        json.loads(tok.decode(out))
    m = compile("json", tok).matcher()
    assert m.accept_tokens(out) == len(out)


def test_vocabulary_too_large_for_logits(tiny: Any) -> None:
    from decodekit.grammars import VocabularyMismatchError
    from decodekit.hf import GrammarLogitsProcessor

    proc = GrammarLogitsProcessor("json", tiny.tokenizer)
    with pytest.raises(VocabularyMismatchError):
        proc(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 10))
