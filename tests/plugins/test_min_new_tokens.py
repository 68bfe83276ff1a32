"""Min new tokens: no EOS before the minimum, as transformers' MinNewTokensLengthLogitsProcessor."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import MinNewTokensLengthLogitsProcessor

from decodekit.errors import OptionsError
from decodekit.plugins.min_new_tokens import MinNewTokens


@pytest.mark.parametrize("generated", [0, 2, 3, 5])
def test_matches_transformers(rows_factory: Any, generated: int) -> None:
    gen = torch.Generator().manual_seed(generated)
    history = torch.randint(1, 50, (3, 6 + generated), generator=gen)
    logits = torch.randn(3, 320, generator=gen)
    proc = MinNewTokens(count=3)
    rows = rows_factory(history[:, :6].tolist(), [proc], max_new_tokens=8)
    for step in history[:, 6:].T:
        rows.append(step)
    got = proc.process(logits.clone(), rows)
    expected = MinNewTokensLengthLogitsProcessor(6, 3, eos_token_id=0)(history, logits.clone())
    assert torch.equal(got, expected)
    assert bool(torch.isinf(got[:, 0]).all()) == (generated < 3)


def test_extra_token_ids(rows_factory: Any) -> None:
    proc = MinNewTokens(count=1, token_ids=[5, 9])
    rows = rows_factory([[1, 2]], [proc])
    assert torch.isinf(proc.process(torch.zeros(1, 10), rows))[0].nonzero().flatten().tolist() == [0, 5, 9]


def test_delays_eos_in_generation(eos_model: Any) -> None:
    plain = eos_model.generate("SELECT id", max_new_tokens=12)
    assert plain.finish_reason == "eos"
    count = len(plain.token_ids) + 2
    g = eos_model.generate("SELECT id", max_new_tokens=12, processors=[("min_new_tokens", {"count": count})])
    assert 0 not in g.token_ids[:count]
    assert len(g.token_ids) >= count


def test_parity_with_transformers_generate(eos_model: Any, encode: Any) -> None:
    ids = encode("SELECT id")
    ref = eos_model.backend.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                           min_new_tokens=4, pad_token_id=0)[0, len(ids):].tolist()
    g = eos_model.generate(ids, max_new_tokens=12, processors=[("min_new_tokens", {"count": 4})])
    assert g.token_ids == ref[:len(g.token_ids)] and all(t == 0 for t in ref[len(g.token_ids):])


def test_invalid_count() -> None:
    with pytest.raises(OptionsError, match="'count'"):
        MinNewTokens(count=-1)
