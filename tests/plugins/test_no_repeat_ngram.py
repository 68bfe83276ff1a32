"""No-repeat n-gram: same bans as transformers, padding never part of an n-gram."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor

from decodekit.errors import OptionsError
from decodekit.plugins.no_repeat_ngram import NoRepeatNgram


def _rows(rows_factory: Any, proc: Any, prompts: list[list[int]], generated: list[list[int]]) -> Any:
    rows = rows_factory(prompts, [proc], max_new_tokens=max(len(g) for g in generated) + 1)
    for step in zip(*generated):
        rows.append(torch.tensor(step))
    return rows


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_matches_transformers(rows_factory: Any, size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    history = torch.randint(1, 4, (5, 20), generator=gen)  # small alphabet: many repeats
    logits = torch.randn(5, 320, generator=gen)
    proc = NoRepeatNgram(size=size)
    rows = _rows(rows_factory, proc, history[:, :9].tolist(), history[:, 9:].tolist())
    got = proc.process(logits.clone(), rows)
    expected = NoRepeatNGramLogitsProcessor(size)(history, logits.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.isinf(got).any()
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])


def test_hand_made_case(rows_factory: Any) -> None:
    proc = NoRepeatNgram(size=3)
    rows = _rows(rows_factory, proc, [[1, 2, 3, 1]], [[2]])  # history 1 2 3 1 2: "1 2" was followed by 3
    out = proc.process(torch.zeros(1, 8), rows)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]


def test_padding_not_part_of_ngrams(rows_factory: Any) -> None:
    proc = NoRepeatNgram(size=2)
    # row 1 holds "pad pad 7 0" with pad id 0: counting padding would ban 0 and 7 after 0
    rows = _rows(rows_factory, proc, [[4, 5, 6], [7]], [[3], [0]])
    out = proc.process(torch.zeros(2, 10), rows)
    assert not torch.isinf(out[1]).any()
    alone = _rows(rows_factory, proc, [[7]], [[0]])
    assert torch.equal(out[1], proc.process(torch.zeros(1, 10), alone)[0])
    proc1 = NoRepeatNgram(size=1)
    rows1 = _rows(rows_factory, proc1, [[4, 5, 6], [7]], [[3], [8]])
    banned = torch.isinf(proc1.process(torch.zeros(2, 10), rows1))
    assert banned[1].nonzero().flatten().tolist() == [7, 8]  # not 0 (padding)


def test_exclude_prompt(rows_factory: Any) -> None:
    proc = NoRepeatNgram(size=2, include_prompt=False)
    rows = _rows(rows_factory, proc, [[1, 2, 1]], [[5, 6, 5]])
    banned = torch.isinf(proc.process(torch.zeros(1, 10), rows))[0].nonzero().flatten().tolist()
    assert banned == [6]  # from the generated "5 6"; the prompt's "1 2" does not count


def test_no_repeat_in_generation(tiny: Any) -> None:
    plain = tiny.generate("The quick brown", max_new_tokens=16).token_ids
    g = tiny.generate("The quick brown", max_new_tokens=16, processors=[("no_repeat_ngram", {"size": 2})])
    pairs = list(zip(g.token_ids, g.token_ids[1:]))
    assert len(pairs) == len(set(pairs))
    assert len(set(zip(plain, plain[1:]))) < len(plain) - 1  # without it, bigrams repeat


def test_parity_with_transformers_generate(tiny: Any, encode: Any) -> None:
    ids = encode("The quick brown")
    ref = tiny.backend.model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                      no_repeat_ngram_size=2, pad_token_id=0)[0, len(ids):].tolist()
    g = tiny.generate(ids, max_new_tokens=16, processors=[("no_repeat_ngram", {"size": 2})])
    assert g.token_ids == ref


def test_invalid_size() -> None:
    with pytest.raises(OptionsError, match="'size'"):
        NoRepeatNgram(size=0)
