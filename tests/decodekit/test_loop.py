"""The core loop: resolving a request (prepare) and running it (drive)."""

from __future__ import annotations

from typing import Any

import pytest

from decodekit.errors import OptionsError
from decodekit.generation import StepEvent
from decodekit.loop import build_processors, build_strategy, decode_text, drive, prepare
from decodekit.manager import PluginSystem
from decodekit.plugins.bad_words import BadWords
from decodekit.plugins.beam import Beam
from decodekit.plugins.sample import Sample


def _run(system: PluginSystem, prepared: Any) -> tuple[list[StepEvent], Any]:
    events = []
    gen = drive(system, prepared)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_build_strategy_by_name_and_instance(system: PluginSystem) -> None:
    strat = build_strategy(system, "beam", {"num_beams": 2})
    assert isinstance(strat, Beam) and strat.options.num_beams == 2
    given = Sample(top_k=3)
    fresh = build_strategy(system, given, None)
    assert isinstance(fresh, Sample) and fresh is not given and fresh.options.top_k == 3
    with pytest.raises(OptionsError, match="cannot be combined"):
        build_strategy(system, given, {"top_k": 4})
    with pytest.raises(OptionsError, match="name or a Strategy instance"):
        build_strategy(system, 3, None)  # type: ignore[arg-type]


def test_build_processors_spec_forms(system: PluginSystem) -> None:
    inst = BadWords(words=["fox"])
    procs = build_processors(system, [
        "repetition_penalty",
        ("no_repeat_ngram", {"size": 2}),
        {"min_new_tokens": {"count": 3}, "bad_words": {"token_ids": [[5]]}},
        inst,
    ])
    assert [p.name for p in procs] == ["repetition_penalty", "no_repeat_ngram", "min_new_tokens",
                                       "bad_words", "bad_words"]
    assert procs[1].options.size == 2 and procs[2].options.count == 3
    assert procs[-1] is inst
    with pytest.raises(OptionsError, match="cannot make a processor from 42"):
        build_processors(system, [42])
    assert build_processors(system, None) == []


def test_prepare_adds_stop_once(system: PluginSystem, tiny: Any) -> None:
    prepared = prepare(system, tiny.backend, ["The"], processors=["repetition_penalty"])
    assert [p.name for p in prepared.request.processors] == ["repetition_penalty", "stop"]
    prepared = prepare(system, tiny.backend, ["The"],
                       processors=[("stop", {"strings": ["x"], "include_stop_string": True})])
    assert [p.name for p in prepared.request.processors] == ["stop"]
    assert prepared.stop_keep is True
    assert list(prepared.chain) == prepared.request.processors


def test_prepare_seeds(system: PluginSystem, tiny: Any) -> None:
    assert prepare(system, tiny.backend, ["The"], seed=7).request.seed == 7
    sampled = prepare(system, tiny.backend, ["The"], strategy="sample", options={"seed": 11})
    assert sampled.request.seed == 11
    override = prepare(system, tiny.backend, ["The"], strategy="sample", options={"seed": 11}, seed=3)
    assert override.request.seed == 3
    assert isinstance(prepare(system, tiny.backend, ["The"]).request.seed, int)


def test_prepare_chat_template(system: PluginSystem, tiny: Any) -> None:
    tok = tiny.tokenizer
    prepared = prepare(system, tiny.backend, ["hi"], chat=True, system_prompt="be brief")
    expected = tok.encode("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                          "<|im_start|>assistant\n", add_special_tokens=False)
    assert prepared.request.prompt_token_ids == [expected]
    assert prepared.request.prompt_token_ids[0][0] == 1  # <|im_start|>


def test_drive_events_and_stats(system: PluginSystem, tiny: Any) -> None:
    prepared = prepare(system, tiny.backend, ["The quick brown", [5, 6]], max_new_tokens=4)
    events, gens = _run(system, prepared)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert len(gens) == 2
    for i, gen in enumerate(gens):
        assert [t for e in events for t in e.tokens[i]] == gen.token_ids
        assert gen.stats.forward_passes == 4 and gen.stats.batch_size == 2
        assert gen.stats.new_tokens == 4 and gen.stats.seconds > 0
        assert gen.stats.extra["seed"] == prepared.request.seed
        assert gen.strategy == "greedy" and gen.finish_reason == "length"
    assert gens[0].stats.prompt_tokens == len(prepared.request.prompt_token_ids[0])
    assert gens[1].prompt == [5, 6] and gens[1].prompt_token_ids == [5, 6]
    width = len(prepared.request.prompt_token_ids[0])
    assert gens[0].stats.positions == 2 * width + 3 * 2  # padded prefill, then 2 rows x 3 decodes
    record = gens[0].as_dict()
    assert record["token_ids"] == gens[0].token_ids and record["stats"]["new_tokens"] == 4
    assert record["sequences"][0]["finish_reason"] == "length"


def test_decode_text_cuts_stop_string(tiny: Any) -> None:
    ids = tiny.tokenizer.encode("The quick brown fox jumps", add_special_tokens=False)
    backend = tiny.backend
    assert decode_text(backend, ids, None, False) == "The quick brown fox jumps"
    assert decode_text(backend, ids, "brown", False) == "The quick "
    assert decode_text(backend, ids, "brown", True) == "The quick brown"
    assert decode_text(backend, ids + [0], None, False) == "The quick brown fox jumps"  # EOS skipped
