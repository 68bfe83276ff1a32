"""Streaming: text increments add up to the final text; stop strings never leak."""

from __future__ import annotations

from typing import Any

import pytest

from decodekit.generation import TextDelta
from decodekit.streaming import IncrementalDecoder, Stream

PROMPTS = ["The quick brown", "def add(a, b):\n", "SELECT id", "To be, or"]


def _collect(stream: Stream) -> dict[int, list[TextDelta]]:
    out: dict[int, list[TextDelta]] = {}
    for delta in stream:
        assert isinstance(delta, TextDelta)
        out.setdefault(delta.index, []).append(delta)
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_deltas_add_up_to_text(tiny: Any, prompt: str) -> None:
    stream = tiny.generate(prompt, max_new_tokens=20, stream=True)
    assert isinstance(stream, Stream)
    with pytest.raises(RuntimeError, match="iterate"):
        stream.text  # noqa: B018
    deltas = _collect(stream)[0]
    final = tiny.generate(prompt, max_new_tokens=20)
    assert "".join(d.text for d in deltas) == final.text == stream.text
    assert [t for d in deltas for t in d.token_ids] == final.token_ids
    assert stream.generations is not None and stream.generations[0].token_ids == final.token_ids


def _stop_candidates(text: str) -> list[str]:
    """Substrings of ``text`` without replacement characters, each at its first occurrence,
    of 1, 2 and 4 characters, starting near the beginning and near the middle."""
    found = []
    for size in (1, 3):
        for begin in (1, len(text) // 2):
            for start in range(begin, len(text) - size + 1):
                s = text[start:start + size]
                if "\ufffd" not in s and text.find(s) == start:
                    found.append(s)
                    break
    return found


@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_stop_strings_in_stream(tiny: Any, prompt: str, include: bool) -> None:
    plain = tiny.generate(prompt, max_new_tokens=16).text
    stops = _stop_candidates(plain)
    assert len(stops) >= 2, f"too few usable stop strings in {plain!r}"
    for stop in stops:
        procs = [("stop", {"strings": [stop], "include_stop_string": include})]
        stream = tiny.generate(prompt, max_new_tokens=16, stream=True, processors=procs)
        streamed = "".join(d.text for d in stream)
        final = stream.generations[0]
        cut = plain.find(stop)
        expected = plain[:cut + len(stop)] if include else plain[:cut]
        assert final.text == expected and final.finish_reason == "stop"
        assert streamed == final.text, (stop, include)
        if not include:
            assert stop not in streamed


def test_earliest_of_several_stop_strings(tiny: Any) -> None:
    prompt = "The quick brown"
    plain = tiny.generate(prompt, max_new_tokens=16).text
    stops = _stop_candidates(plain)
    first = min(stops, key=plain.find)
    ordered = sorted(stops, key=plain.find, reverse=True)  # the earliest one listed last
    for include in (False, True):
        procs = [("stop", {"strings": ordered, "include_stop_string": include})]
        stream = tiny.generate(prompt, max_new_tokens=16, stream=True, processors=procs)
        streamed = "".join(d.text for d in stream)
        cut = plain.find(first)
        assert streamed == stream.text == (plain[:cut + len(first)] if include else plain[:cut])


def test_decoder_cuts_at_earliest_stop() -> None:
    tok = _Chars(["xa", "bc", "d"])
    for include, expected in ((False, "x"), (True, "xab")):
        dec = IncrementalDecoder(tok, ("bc", "ab"), include_stop=include)
        text = dec.push([0]) + dec.push([1]) + dec.push([2])
        assert text == expected


def test_batch_deltas_carry_index(tiny: Any) -> None:
    stream = tiny.generate(PROMPTS, max_new_tokens=12, stream=True)
    deltas = _collect(stream)
    finals = tiny.generate(PROMPTS, max_new_tokens=12)
    assert sorted(deltas) == list(range(len(PROMPTS)))
    for i, final in enumerate(finals):
        assert "".join(d.text for d in deltas[i]) == final.text
        assert [t for d in deltas[i] for t in d.token_ids] == final.token_ids
    assert [g.token_ids for g in stream.generations] == [g.token_ids for g in finals]


def test_batch_stream_with_eos(eos_model: Any) -> None:
    prompts = ["SELECT id", "def add(a, b):\n", "The quick brown"]
    finals = eos_model.generate(prompts, max_new_tokens=16)
    assert "eos" in {g.finish_reason for g in finals}
    deltas = _collect(eos_model.generate(prompts, max_new_tokens=16, stream=True))
    for i, final in enumerate(finals):
        assert "".join(d.text for d in deltas[i]) == final.text
        assert [t for d in deltas[i] for t in d.token_ids] == final.token_ids


def test_beam_stream_arrives_at_the_end(tiny: Any) -> None:
    stream = tiny.generate("The quick", strategy="beam", options={"num_beams": 2}, max_new_tokens=6,
                           stream=True)
    deltas = list(stream)
    final = tiny.generate("The quick", strategy="beam", options={"num_beams": 2}, max_new_tokens=6)
    assert "".join(d.text for d in deltas) == final.text


class _Chars:
    """A tokenizer whose token ``i`` decodes to ``chars[i]`` (to drive the decoder by hand)."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.pieces[i] for i in ids)


def test_decoder_holds_back_possible_stop_prefix() -> None:
    tok = _Chars(["ab", "c", "E", "ND", "x"])
    dec = IncrementalDecoder(tok, ("END",))
    assert dec.push([0]) == ""  # the last len("END") - 1 characters are held back
    assert dec.push([1]) == "a"
    assert dec.push([2]) == "b"
    assert dec.push([3]) == "c"
    assert dec.push([4]) == ""  # stopped
    assert dec.emitted == "abc"


def test_decoder_waits_for_complete_characters() -> None:
    tok = _Chars(["a", "\ufffd", "é"])
    dec = IncrementalDecoder(tok)
    assert dec.push([0]) == "a"
    assert dec.push([1]) == ""
    dec.ids = [0]  # the pending byte becomes a full character
    assert dec.push([2]) == "é"
    assert dec.flush("aé!") == "!"
