"""The ``grammar`` processor: every strategy, beams, incomplete runs, errors, registration."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from decodekit.grammars import GrammarDeadEndError, VocabularyMismatchError, compile
from decodekit.processor import ProcessorChain, ProcessorContext
from decodekit.rows import Rows

PROMPT = "The quick brown"


def _valid(compiled: Any, token_ids: list[int]) -> bool:
    m = compiled.matcher()
    return m.accept_tokens(token_ids) == len(token_ids) and m.is_complete()


@pytest.mark.parametrize("strategy, options", [
    ("greedy", {}),
    ("sample", {"seed": 0}),
    ("sample", {"seed": 3, "temperature": 1.5}),
    ("beam", {"num_beams": 3, "num_return_sequences": 3}),
])
def test_json_output_parses(eos_model: Any, strategy: str, options: dict[str, Any]) -> None:
    gen = eos_model.generate(PROMPT, grammar="json", strategy=strategy, options=options, max_new_tokens=64)
    compiled = compile("json", eos_model.tokenizer, eos_token_ids=eos_model.backend.eos_token_ids)
    for seq in gen.sequences:
        assert seq.finish_reason == "eos", seq
        json.loads(seq.text)
        assert _valid(compiled, seq.token_ids)


def test_json_output_without_eos_pressure_is_grammatical(tiny: Any) -> None:
    """On the plain tiny model: every returned sequence is a prefix the grammar allows, and
    the ones that end with EOS are complete documents."""
    compiled = compile("json", tiny.tokenizer, eos_token_ids=tiny.backend.eos_token_ids)
    for strategy, options in [("greedy", {}), ("sample", {"seed": 4}), ("beam", {"num_beams": 2})]:
        gen = tiny.generate('{"a": [', grammar="json", strategy=strategy, options=options, max_new_tokens=40)
        for seq in gen.sequences:
            m = compiled.matcher()
            assert m.accept_tokens(seq.token_ids) == len(seq.token_ids)
            if seq.finish_reason == "eos":
                json.loads(seq.text)


def test_length_mid_structure_is_reported_incomplete(tiny: Any) -> None:
    from decodekit.plugins.grammar import Grammar

    proc = Grammar({"grammar": "json"})
    gen = tiny.generate('{"name": "', processors=[proc], max_new_tokens=3)
    assert (gen.finish_reason, gen.complete) == ("incomplete", False)
    assert not proc.is_complete(gen.token_ids)
    with pytest.raises(json.JSONDecodeError):
        json.loads(gen.text)


def test_other_processors_compose(eos_model: Any) -> None:
    gen = eos_model.generate(PROMPT, grammar="json", processors=[("repetition_penalty", {"penalty": 1.3})],
                             max_new_tokens=64)
    json.loads(gen.text)


def _rows(grammar: str, prompts: list[list[int]], *, eos: tuple[int, ...] = (0,), repeat: int = 1) -> Rows:
    from decodekit.plugins.grammar import Grammar
    from decodekit.testing import tiny_tokenizer

    chain = ProcessorChain([Grammar({"grammar": grammar})])
    chain.setup(ProcessorContext(tiny_tokenizer(), 320, eos, 0, 16))
    return Rows.from_prompts(prompts, pad_token_id=0, max_new_tokens=16, chain=chain, repeat=repeat)


def test_matcher_state_follows_selected_rows(encode: Any) -> None:
    rows = _rows("json", [encode("x")], repeat=2)
    rows.append(torch.tensor([encode("[")[0], encode("{")[0]]))
    # reorder and duplicate: row 0 <- old row 1 (twice), row 2 <- old row 0
    rows = rows.select(torch.tensor([1, 1, 0]))
    states = rows.states[0]
    assert states[0] is not states[1]
    logits = rows.chain(torch.zeros(3, 320), rows)
    quote, bracket = encode('"')[0], encode("]")[0]
    assert logits[0, quote] == 0 and logits[0, bracket] == float("-inf")
    assert logits[2, bracket] == 0
    rows.append(torch.tensor([quote, quote, bracket]))
    assert not rows.finished.any()
    assert states[2].is_complete() and not states[0].is_complete()
    assert states[0].position == states[1].position == 2


def test_rejected_token_finishes_the_row(encode: Any) -> None:
    rows = _rows("json", [encode("x")])
    rows.append(torch.tensor([encode("]")[0]]))
    assert rows.finished.tolist() == [True] and rows.finish_reason == ["invalid"]


def test_dead_end_is_a_clear_error(encode: Any) -> None:
    rows = _rows('start: "a"', [encode("x")], eos=())
    rows.append(torch.tensor([encode("a")[0]]))
    with pytest.raises(GrammarDeadEndError, match="row 0 cannot continue.*after 1 generated tokens"):
        rows.chain(torch.zeros(1, 320), rows)


def test_vocabulary_mismatch_is_detected(tiny: Any) -> None:
    from decodekit.testing import tiny_tokenizer

    other = compile("json", tiny_tokenizer(300))
    with pytest.raises(VocabularyMismatchError, match="another vocabulary"):
        tiny.generate(PROMPT, grammar=other, max_new_tokens=2)


def test_compiled_grammar_is_accepted(eos_model: Any) -> None:
    compiled = compile("json", eos_model.tokenizer)
    gen = eos_model.generate(PROMPT, grammar=compiled, max_new_tokens=64)
    json.loads(gen.text)


def test_registration(system: Any) -> None:
    reg = system.registry
    assert "lark" in reg.names("grammar_engine") and "grammar" in reg.names("processor")
    assert "grammars" in reg.names("command")
    assert reg.get("grammar_engine", "lark").compile("json", [b"", b"1"]).matches("1")


def test_unknown_engine(tiny: Any) -> None:
    from decodekit.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="grammar engine"):
        tiny.generate(PROMPT, processors=[("grammar", {"grammar": "json", "engine": "nope"})], max_new_tokens=2)


def test_grammars_command(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    from decodekit.cli import main

    assert main(["grammars"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["arithmetic", "csv", "json", "sexpr", "sql"]
    assert main(["grammars", "json", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "json"
    assert main(["grammars", "yaml"]) == 2
