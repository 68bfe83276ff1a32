"""Repetition penalty: same rule as transformers, padding never counted."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from decodekit.errors import OptionsError
from decodekit.plugins.repetition_penalty import RepetitionPenalty


def _rows(rows_factory: Any, proc: Any, prompts: list[list[int]], generated: list[list[int]]) -> Any:
    rows = rows_factory(prompts, [proc], max_new_tokens=max(len(g) for g in generated) + 1)
    for step in zip(*generated):
        rows.append(torch.tensor(step))
    return rows


@pytest.mark.parametrize("penalty", [1.3, 0.7, 2.0])
def test_matches_transformers(rows_factory: Any, penalty: float) -> None:
    gen = torch.Generator().manual_seed(int(penalty * 10))
    history = torch.randint(0, 40, (4, 12), generator=gen)
    logits = torch.randn(4, 320, generator=gen) * 4
    proc = RepetitionPenalty(penalty=penalty)
    rows = _rows(rows_factory, proc, history[:, :7].tolist(), history[:, 7:].tolist())
    got = proc.process(logits.clone(), rows)
    expected = RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone())
    assert torch.equal(got, expected)
    assert not torch.equal(got, logits)


def test_exclude_prompt(rows_factory: Any) -> None:
    proc = RepetitionPenalty(penalty=2.0, include_prompt=False)
    rows = _rows(rows_factory, proc, [[5, 6]], [[7, 7]])
    logits = torch.ones(1, 10)
    out = proc.process(logits.clone(), rows)
    assert out[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0.5, 1, 1]
    fresh = rows_factory([[5, 6]], [proc])
    assert torch.equal(proc.process(logits.clone(), fresh), logits)  # nothing generated yet


def test_padding_not_counted(rows_factory: Any) -> None:
    proc = RepetitionPenalty(penalty=2.0)
    logits = torch.full((2, 10), 3.0)
    padded = _rows(rows_factory, proc, [[5, 6, 7, 8], [9]], [[1], [2]])
    out = proc.process(logits.clone(), padded)
    # row 1 saw only 9 and 2: pad id 0 is not penalised
    assert out[1].tolist() == [3, 3, 1.5, 3, 3, 3, 3, 3, 3, 1.5]
    alone = _rows(rows_factory, proc, [[9]], [[2]])
    assert torch.equal(out[1], proc.process(logits[:1].clone(), alone)[0])


def test_changes_generation(tiny: Any) -> None:
    plain = tiny.generate("0 1 2", max_new_tokens=12).token_ids
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself
    penalised = tiny.generate("0 1 2", max_new_tokens=12, processors=[("repetition_penalty", {"penalty": 100.0})])
    assert penalised.token_ids != plain
    assert len(set(penalised.token_ids)) > len(set(plain))


def test_parity_with_transformers_generate(tiny: Any, encode: Any) -> None:
    ids = encode("0 1 2")
    ref = tiny.backend.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                      repetition_penalty=1.5, pad_token_id=0)[0, len(ids):].tolist()
    g = tiny.generate(ids, max_new_tokens=12, processors=[("repetition_penalty", {"penalty": 1.5})])
    assert g.token_ids == ref


@pytest.mark.parametrize("penalty", [0, -1.0, "high"])
def test_invalid_penalty(penalty: Any) -> None:
    with pytest.raises(OptionsError, match="'penalty'"):
        RepetitionPenalty(penalty=penalty)
