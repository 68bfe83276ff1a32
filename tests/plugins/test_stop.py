"""Stop: EOS, stop token ids and stop strings (text cut, kept, split across tokens)."""

from __future__ import annotations

from typing import Any

import torch

from decodekit.plugins.stop import Stop
from decodekit.rows import EOS, STOP


def _feed(rows: Any, ids: list[int]) -> list[bool]:
    finished = []
    for t in ids:
        rows.append(torch.tensor([t]))
        finished.append(bool(rows.finished[0]))
    return finished


def test_eos_finishes(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6]], [Stop()])
    rows.append(torch.tensor([0, 7]))
    assert rows.finished.tolist() == [True, False] and rows.finish_reason == [EOS, None]


def test_stop_token_ids(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6]], [Stop(token_ids=[7])])
    rows.append(torch.tensor([8, 7]))
    assert rows.finish_reason == [None, STOP] and rows.generated(1) == [7]


def test_eos_off(rows_factory: Any) -> None:
    rows = rows_factory([[5]], [Stop(eos=False)])
    rows.append(torch.tensor([0]))
    assert not rows.finished.any()


def test_stop_string_split_across_tokens(rows_factory: Any, encode: Any) -> None:
    ids = encode("The quick brown fox jumps")
    assert len(ids) > 6
    text = "k brown f"  # spans several tokens of the sentence
    stop = Stop(strings=[text])
    rows = rows_factory([[5]], [stop], max_new_tokens=len(ids) + 1)
    finished = _feed(rows, ids)
    end = finished.index(True)
    from decodekit.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    assert text in tok.decode(ids[:end + 1]) and text not in tok.decode(ids[:end])
    assert rows.finish_reason == [STOP] and rows.stop_text == [text]
    assert rows.generated(0) == ids[:end + 1]


def test_multibyte_stop_string_split_across_many_tokens(rows_factory: Any, encode: Any) -> None:
    # characters outside the training corpus are one byte-level token per UTF-8 byte
    text = "日本"
    ids = encode("a " + text + " b")
    assert len(encode(text)) > len(text) + 2
    rows = rows_factory([[5]], [Stop(strings=[text])], max_new_tokens=len(ids) + 1)
    finished = _feed(rows, ids)
    assert any(finished) and rows.stop_text == [text]
    from decodekit.testing import tiny_tokenizer

    assert tiny_tokenizer().decode(rows.generated(0)).endswith(text)


def test_stop_string_not_matched_in_prompt(rows_factory: Any, encode: Any) -> None:
    rows = rows_factory([encode("The quick")], [Stop(strings=["quick"])])
    rows.append(torch.tensor(encode(" brown")[:1]))
    assert not rows.finished.any()


def test_stop_strings_in_generation(tiny: Any) -> None:
    plain = tiny.generate("def add(a, b):\n", max_new_tokens=16)
    text = plain.text
    start = next(i for i in range(1, len(text) - 2) if "\ufffd" not in text[i:i + 2]
                 and text.find(text[i:i + 2]) == i)
    stop = text[start:start + 2]
    g = tiny.generate("def add(a, b):\n", max_new_tokens=16, processors=[("stop", {"strings": [stop]})])
    assert g.finish_reason == "stop" and g.text == text[:start]
    assert len(g.token_ids) < len(plain.token_ids)
    assert g.token_ids == plain.token_ids[:len(g.token_ids)]  # the completing token is kept
    assert stop in tiny.tokenizer.decode(g.token_ids)
    kept = tiny.generate("def add(a, b):\n", max_new_tokens=16,
                         processors=[("stop", {"strings": [stop], "include_stop_string": True})])
    assert kept.text == text[:start + 2] and kept.token_ids == g.token_ids
    assert kept.sequences[0].finish_reason == "stop"


def test_first_of_several_stop_strings(tiny: Any) -> None:
    text = tiny.generate("The quick brown", max_new_tokens=16).text
    clean = [(i, text[i:i + 2]) for i in range(1, len(text) - 1)
             if "\ufffd" not in text[i:i + 2] and text.find(text[i:i + 2]) == i]
    assert len(clean) >= 2, text
    (early_at, early), (_, late) = clean[0], clean[-1]
    g = tiny.generate("The quick brown", max_new_tokens=16, processors=[("stop", {"strings": [late, early]})])
    assert g.text == text[:early_at]


def test_eos_and_stop_reasons_in_batch(eos_model: Any) -> None:
    gens = eos_model.generate(["SELECT id", "The quick brown"], max_new_tokens=10)
    assert [g.finish_reason for g in gens] == ["eos", "length"]
    assert gens[0].token_ids[-1] == 0 and gens[0].text == eos_model.tokenizer.decode(gens[0].token_ids[:-1])
    target = gens[1].token_ids[4]
    stopped = eos_model.generate(["SELECT id", "The quick brown"], max_new_tokens=10,
                                 processors=[("stop", {"token_ids": [target]})])
    assert [g.finish_reason for g in stopped] == ["eos", "stop"]
    assert stopped[1].token_ids == gens[1].token_ids[:gens[1].token_ids.index(target) + 1]
