"""Bad words: same masks as transformers, per row, padding-safe."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import NoBadWordsLogitsProcessor

from decodekit.errors import OptionsError
from decodekit.plugins.bad_words import BadWords


def _rows(rows_factory: Any, proc: Any, prompts: list[list[int]], generated: list[list[int]]) -> Any:
    rows = rows_factory(prompts, [proc], max_new_tokens=max(len(g) for g in generated) + 1)
    for step in zip(*generated):
        rows.append(torch.tensor(step))
    return rows


def test_matches_transformers(rows_factory: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(1, 50, (4, 10), generator=gen)
    logits = torch.randn(4, 320, generator=gen)
    bad = [[7], [11], [int(history[0, -1]), 200], [*history[1, -2:].tolist(), 201],
           [*history[2, -3:].tolist(), 202], [3, 4, 203], [int(history[3, -1]), 5, 204]]
    proc = BadWords(token_ids=bad)
    rows = _rows(rows_factory, proc, history[:, :6].tolist(), history[:, 6:].tolist())
    got = proc.process(logits.clone(), rows)
    expected = NoBadWordsLogitsProcessor(bad, eos_token_id=0)(history, logits.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    banned = {(r, c) for r, c in torch.isinf(got).nonzero().tolist()}
    assert {(0, 200), (1, 201), (2, 202)} <= banned
    assert not {(3, 203), (3, 204)} & banned


def test_words_are_tokenised_with_and_without_space(tiny: Any) -> None:
    from decodekit.processor import ProcessorContext

    proc = BadWords(words=["fox", "quick"])
    proc.setup(ProcessorContext(tiny.tokenizer, 320, (0,), 0, 8))
    held = {(t,) for t in proc.single.tolist()} | {(*p.tolist(), last) for p, last in proc.multi}
    expected = {tuple(tiny.tokenizer.encode(v, add_special_tokens=False))
                for w in ("fox", "quick") for v in (w, " " + w)}
    assert held == expected and len(expected) == 4


def test_bans_word_in_generation(tiny: Any) -> None:
    plain = tiny.generate("The quick brown", max_new_tokens=10)
    word = tiny.tokenizer.decode(plain.token_ids[2:4])
    g = tiny.generate("The quick brown", max_new_tokens=10,
                      processors=[("bad_words", {"token_ids": [plain.token_ids[2:4]]})])
    assert g.token_ids[:3] == plain.token_ids[:3]
    assert g.token_ids[3] != plain.token_ids[3]
    ids = g.token_ids
    assert all(ids[i:i + 2] != plain.token_ids[2:4] for i in range(len(ids) - 1)), word


def test_prefix_matching_the_prompt(tiny: Any, encode: Any) -> None:
    prompt = encode("The quick brown")
    first = tiny.generate(prompt, max_new_tokens=1).token_ids[0]
    procs = [("bad_words", {"token_ids": [[prompt[-2], prompt[-1], first]]})]
    g = tiny.generate(prompt, max_new_tokens=4, processors=procs)
    assert g.token_ids[0] != first


def test_batch_with_padding_equals_unbatched(tiny: Any, encode: Any) -> None:
    long = encode("The quick brown")
    short = encode("SELECT id")[:1]
    first = tiny.generate(long, max_new_tokens=1).token_ids[0]
    procs = [("bad_words", {"token_ids": [[long[-2], long[-1], first]]})]
    alone = tiny.generate(long, max_new_tokens=4, processors=procs)
    batch = tiny.generate([long, short], max_new_tokens=4, processors=procs)
    assert batch[0].token_ids == alone.token_ids
    assert batch[1].token_ids == tiny.generate(short, max_new_tokens=4, processors=procs).token_ids


def test_padding_never_matches(rows_factory: Any) -> None:
    proc = BadWords(token_ids=[[0, 7, 9], [5, 6, 8]])  # the pad id is 0
    rows = rows_factory([[4, 5, 6], [7]], [proc])  # row 1 holds "pad pad 7"
    banned = torch.isinf(proc.process(torch.zeros(2, 10), rows))
    assert banned.nonzero().tolist() == [[0, 8]]


def test_invalid(tiny: Any) -> None:
    with pytest.raises(OptionsError, match="outside"):
        tiny.generate("The", processors=[("bad_words", {"token_ids": [[5, 999]]})])
    with pytest.raises(OptionsError, match="empty"):
        tiny.generate("The", processors=[("bad_words", {"token_ids": [[]]})])
    with pytest.raises(OptionsError, match="must not be empty"):
        tiny.generate("The", processors=[("bad_words", {"words": [""]})])
    with pytest.raises(OptionsError, match="'words'"):
        BadWords(words="fox")
