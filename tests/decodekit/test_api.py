"""The public API: load, generate, Model, result objects."""

from __future__ import annotations

from typing import Any

import pytest

import decodekit
from decodekit import api
from decodekit.api import Model
from decodekit.generation import Generation, Sequence
from decodekit.plugins.sample import Sample
from decodekit.testing import tiny_tokenizer


def test_single_prompt_returns_generation(tiny: Any, encode: Any) -> None:
    g = decodekit.generate("The quick brown", model=tiny, max_new_tokens=5)
    assert isinstance(g, Generation)
    assert len(g.token_ids) == 5 and g.text == tiny.tokenizer.decode(g.token_ids)
    assert g.prompt == "The quick brown" and g.prompt_token_ids == encode("The quick brown")
    assert isinstance(g.sequences[0], Sequence) and g.sequences[0].token_ids == g.token_ids
    assert g.finish_reason == "length"


def test_token_id_prompt_equals_text_prompt(tiny: Any, encode: Any) -> None:
    by_text = tiny.generate("The quick brown", max_new_tokens=6)
    by_ids = tiny.generate(encode("The quick brown"), max_new_tokens=6)
    assert by_text.token_ids == by_ids.token_ids and by_ids.prompt == encode("The quick brown")


def test_batch_returns_list_in_order(tiny: Any) -> None:
    singles = [tiny.generate(p, max_new_tokens=4) for p in ("SELECT id", "The quick brown")]
    batch = tiny.generate(["SELECT id", "The quick brown"], max_new_tokens=4)
    assert isinstance(batch, list) and len(batch) == 2
    assert [g.token_ids for g in batch] == [g.token_ids for g in singles]
    assert tiny.generate(("SELECT id",), max_new_tokens=4)[0].token_ids == singles[0].token_ids


def test_mixed_batch_of_text_and_ids(tiny: Any, encode: Any) -> None:
    batch = tiny.generate(["SELECT id", encode("The quick brown")], max_new_tokens=3)
    assert batch[1].token_ids == tiny.generate("The quick brown", max_new_tokens=3).token_ids


def test_model_generate_is_generate(tiny: Any) -> None:
    assert tiny.generate("0 1 2", max_new_tokens=4).token_ids == \
        decodekit.generate("0 1 2", model=tiny, max_new_tokens=4).token_ids
    assert repr(tiny) == "Model('tiny-llama-0', backend='torch')"
    assert tiny.tokenizer is tiny.backend.tokenizer


def test_strategy_instance(tiny: Any) -> None:
    a = tiny.generate("The", strategy=Sample(seed=5, top_k=4), max_new_tokens=6)
    b = tiny.generate("The", strategy="sample", options={"seed": 5, "top_k": 4}, max_new_tokens=6)
    assert a.token_ids == b.token_ids and a.strategy == "sample"


def test_load_model_object_and_cache(tiny: Any) -> None:
    model = decodekit.load(tiny.backend.model, tokenizer=tiny_tokenizer())
    assert isinstance(model, Model) and model.backend.model is tiny.backend.model
    assert model.backend.vocab_size == 320 and model.backend.eos_token_ids == (0,)
    assert model.generate("The quick", max_new_tokens=5).token_ids == \
        tiny.generate("The quick", max_new_tokens=5).token_ids
    # objects are never cached by reference
    assert decodekit.load(tiny.backend.model, tokenizer=tiny_tokenizer()) is not model


def test_load_from_directory_is_cached(tiny: Any, tmp_path: Any) -> None:
    tiny.backend.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    first = decodekit.load(str(tmp_path))
    assert decodekit.load(str(tmp_path)) is first
    assert decodekit.load(str(tmp_path), cache=False) is not first
    assert decodekit.load(str(tmp_path), dtype="float32") is not first  # options are in the key
    assert first.backend.model_id == str(tmp_path)
    assert first.generate("The quick", max_new_tokens=6).token_ids == \
        tiny.generate("The quick", max_new_tokens=6).token_ids
    # generate(model=path) loads through the same cache
    assert decodekit.generate("The quick", model=str(tmp_path), max_new_tokens=2).token_ids == \
        first.generate("The quick", max_new_tokens=2).token_ids
    assert len(api._CACHE) <= api._CACHE_SIZE


def test_grammar_without_engine(tiny: Any) -> None:
    from decodekit.manager import PluginSystem

    full = PluginSystem(entry_points=False)
    engines = {e.plugin for e in full.registry.entries("grammar_engine")}
    system = PluginSystem(block=engines, entry_points=False)
    assert system.registry.names("grammar_engine") == []
    with pytest.raises(decodekit.OptionsError, match="grammar"):
        Model(tiny.backend, "tiny", system).generate("The", grammar="root ::= 'a'")


def test_scores_are_log_probabilities(tiny: Any) -> None:
    import torch

    g = tiny.generate("The quick", max_new_tokens=3)
    ids = tiny.tokenizer.encode("The quick", add_special_tokens=False)
    with torch.no_grad():
        logits = tiny.backend.model(torch.tensor([ids + g.token_ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = sum(float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(g.token_ids))
    assert g.sequences[0].score == pytest.approx(expected, rel=1e-4)


def test_stats_as_dict(tiny: Any) -> None:
    g = tiny.generate("The quick", max_new_tokens=3)
    d = g.stats.as_dict()
    assert d["new_tokens"] == 3 and d["forward_passes"] == 3 and d["batch_size"] == 1
    assert d["tokens_per_second"] > 0 and "seed" in d
