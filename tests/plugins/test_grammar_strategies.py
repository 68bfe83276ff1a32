"""The grammar constraint with every strategy: grammatical output, incomplete runs, jump-forward."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from decodekit.grammars import compile

#: nested object, array, enum and integer bounds; short keys keep the tiny model's runs short
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 99},
        "tag": {"enum": ["ab", "cd"]},
        "xs": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 2},
        "o": {"type": "object", "properties": {"k": {"type": "boolean"}}, "required": ["k"],
              "additionalProperties": False},
    },
    "required": ["id", "tag", "xs", "o"],
    "additionalProperties": False,
}
GRAMMARS = {"json": "json", "schema": SCHEMA}
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": {},
    "sample": {"seed": 1},
    "beam": {"num_beams": 3, "num_return_sequences": 3},
    "diverse_beam": {"num_beams": 4, "num_groups": 2, "num_return_sequences": 4},
    "contrastive": {"top_k": 4, "alpha": 0.6},
    "momentum": {"top_k": 5, "alpha": 0.2},
    "cntp": {"seed": 2, "max_trials": 4, "entropy_high": 1.0},
    "superposed": {"k": 3, "ngram": None},
    "ead": {"layers": 1, "threshold": 2.5, "window": 2, "min_dwell": 1},
}
CASES = [(s, g) for s in STRATEGIES for g in GRAMMARS]
PROMPT = "The quick brown"


@pytest.fixture(scope="module")
def compiled(tiny: Any) -> dict[str, Any]:
    """Each grammar compiled once for the tiny tokenizer."""
    eos = tiny.backend.eos_token_ids
    return {name: compile(g, tiny.tokenizer, eos_token_ids=eos) for name, g in GRAMMARS.items()}


def generate(model: Any, grammar: Any, strategy: str, max_new_tokens: int, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # superposed without an n-gram table says so
        return model.generate(PROMPT, strategy=strategy, options=STRATEGIES[strategy], grammar=grammar,
                              max_new_tokens=max_new_tokens, **kwargs)


def parses(text: str, name: str) -> bool:
    """Whether ``text`` is JSON (valid against the schema for ``"schema"``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    if name == "schema":
        try:
            jsonschema.validate(value, SCHEMA)
        except jsonschema.ValidationError:
            return False
    return True


def check(seq: Any, name: str, grammar: Any) -> None:
    """A complete sequence parses; any other is flagged and its text does not parse."""
    if seq.complete:
        assert seq.finish_reason in ("eos", "length", "stop"), seq
        assert parses(seq.text, name), seq.text
        return
    assert seq.complete is False and seq.finish_reason in ("incomplete", "invalid"), seq
    assert not parses(seq.text, name), seq.text
    if seq.finish_reason == "incomplete":  # a prefix the grammar allows, cut short
        assert grammar.matcher().accept_tokens(seq.token_ids) == len(seq.token_ids)


@pytest.mark.parametrize("strategy, name", CASES)
def test_output_is_grammatical(tiny: Any, compiled: dict[str, Any], strategy: str, name: str) -> None:
    gen = generate(tiny, compiled[name], strategy, 64)
    for seq in gen.sequences:
        check(seq, name, compiled[name])
    assert any(seq.complete for seq in gen.sequences), [s.text for s in gen.sequences]


@pytest.mark.parametrize("strategy, name", CASES)
def test_cut_by_max_new_tokens_is_flagged(tiny: Any, compiled: dict[str, Any], strategy: str, name: str) -> None:
    gen = generate(tiny, compiled[name], strategy, 5)
    for seq in gen.sequences:
        check(seq, name, compiled[name])
        assert len(seq.token_ids) <= 5
    if name == "schema":  # no instance of the schema fits in 5 tokens
        assert all(s.complete is False for s in gen.sequences)
        assert gen.finish_reason == "incomplete" and gen.as_dict()["complete"] is False


def test_beams_with_fewer_allowed_tokens_than_candidates(tiny: Any) -> None:
    """Beam search appends -inf candidates when the grammar allows fewer tokens than it keeps;
    those rows end as "invalid", the search still stops at the limit, and only hypotheses that
    ended are reported as such."""
    for grammar, max_new_tokens in (('start: "x" | "y" "z"', 8), ('start: "x"', 8), ('start: "xyzxyz"', 3)):
        gen = tiny.generate(PROMPT, strategy="beam", options={"num_beams": 4, "num_return_sequences": 4},
                            grammar=grammar, max_new_tokens=max_new_tokens)
        assert len(gen.sequences) == 4
        for seq in gen.sequences:
            assert seq.finish_reason in ("eos", "length", "incomplete", "invalid"), seq
            assert len(seq.token_ids) <= max_new_tokens
            assert seq.complete == (seq.finish_reason in ("eos", "length"))
        if max_new_tokens == 8:
            assert gen.complete and gen.finish_reason == "eos"


# -- finish reasons and completeness ------------------------------------------------------------


def test_complete_is_none_without_a_grammar(tiny: Any) -> None:
    gen = tiny.generate(PROMPT, max_new_tokens=3)
    assert gen.complete is None and gen.finish_reason == "length"
    assert gen.as_dict()["complete"] is None and gen.as_dict()["sequences"][0]["complete"] is None


def test_eos_that_does_not_stop_keeps_the_text_complete(tiny: Any) -> None:
    """With ``stop.eos = false`` the row keeps receiving EOS after the grammar ended; that is
    neither a rejected token nor an incomplete text."""
    gen = tiny.generate(PROMPT, grammar='start: "x"', processors=[("stop", {"eos": False})], max_new_tokens=5)
    eos = tiny.backend.eos_token_ids[0]
    assert gen.token_ids[1:] == [eos] * 4
    assert (gen.text, gen.finish_reason, gen.complete) == ("x", "length", True)


def test_stop_string_that_cuts_the_structure_is_incomplete(tiny: Any, compiled: dict[str, Any]) -> None:
    gen = tiny.generate(PROMPT, grammar=compiled["schema"], processors=[("stop", {"strings": ["tag"]})],
                        max_new_tokens=64)
    assert gen.text.endswith('"') and "tag" not in gen.text
    assert (gen.finish_reason, gen.complete) == ("incomplete", False)


def test_pipeline_and_cli_records_carry_completeness(tiny_saved: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from decodekit.cli import main
    from decodekit.pipeline import Pipeline

    path = tmp_path / "json.toml"
    path.write_text(f'model = "{tiny_saved.as_posix()}"\nmax_new_tokens = 4\ngrammar = "json"\n'
                    '[strategy]\nname = "greedy"\n', encoding="utf-8")
    source = tmp_path / "prompts.jsonl"
    source.write_text(json.dumps('{"a": [') + "\n", encoding="utf-8")
    expected = Pipeline.from_file(path).run(['{"a": ['])[0]
    assert expected.complete is not None
    out = tmp_path / "out.jsonl"
    capsys.readouterr()
    assert main(["run", str(path), "--input", str(source), "--output", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["complete"] == expected.complete
    assert record["finish_reason"] == expected.finish_reason
    assert record["sequences"][0]["complete"] == expected.complete
    assert (record["finish_reason"] == "incomplete") == (not record["complete"])


@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved to a directory that a pipeline file can name."""
    from decodekit.testing import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-grammar")
    tiny_llama(0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


# -- jump-forward -------------------------------------------------------------------------------

PROMPTS = ["The quick brown", "def add(a, b):\n", "SELECT id", "To be, or"]


def _greedy(model: Any, prompts: Any, grammar: Any, max_new_tokens: int = 64, processors: Any = (),
            **options: Any) -> Any:
    return model.generate(prompts, processors=[*processors, ("grammar", {"grammar": grammar, **options})],
                          max_new_tokens=max_new_tokens)


def test_jump_forward_keeps_greedy_output_and_saves_passes(tiny: Any, compiled: dict[str, Any]) -> None:
    grammar = compiled["schema"]
    for prompts in (PROMPTS[0], PROMPTS):
        off = _greedy(tiny, prompts, grammar, jump_forward=False)
        on = _greedy(tiny, prompts, grammar)
        off = off if isinstance(off, list) else [off]
        on = on if isinstance(on, list) else [on]
        assert [g.token_ids for g in on] == [g.token_ids for g in off]
        assert [g.finish_reason for g in on] == [g.finish_reason for g in off]
        for a, b in zip(on, off):
            assert a.sequences[0].score == pytest.approx(b.sequences[0].score, abs=1e-3)
            assert a.complete and parses(a.text, "schema")
        extra = on[0].stats.extra
        assert extra["jump_forward_tokens"] > 0 and extra["jump_forward_saved_passes"] > 0
        assert off[0].stats.extra["jump_forward_tokens"] == 0
        assert off[0].stats.forward_passes - on[0].stats.forward_passes == extra["jump_forward_saved_passes"]


def test_jump_forward_stops_at_the_limit_and_at_stop_strings(tiny: Any, compiled: dict[str, Any]) -> None:
    grammar = compiled["schema"]
    for max_new_tokens, processors in ((3, ()), (9, ()), (64, [("stop", {"strings": ["tag"]})])):
        off = _greedy(tiny, PROMPT, grammar, max_new_tokens, processors, jump_forward=False)
        on = _greedy(tiny, PROMPT, grammar, max_new_tokens, processors)
        assert on.token_ids == off.token_ids and on.text == off.text
        assert on.finish_reason == off.finish_reason == "incomplete"
        assert len(on.token_ids) <= max_new_tokens


def test_jump_forward_streams_every_token(tiny: Any, compiled: dict[str, Any]) -> None:
    import decodekit

    stream = decodekit.generate(PROMPT, model=tiny, grammar=compiled["schema"], max_new_tokens=64, stream=True)
    deltas = list(stream)
    gen = stream.generations[0]
    assert gen.stats.extra["jump_forward_saved_passes"] > 0
    assert [t for d in deltas for t in d.token_ids] == gen.token_ids
    assert "".join(d.text for d in deltas) == gen.text


def test_unchecked_jump_forward_emits_the_grammars_split(tiny: Any, compiled: dict[str, Any]) -> None:
    """Without the check the forced text is emitted as the grammar splits it: still grammatical
    and complete; the tokens may differ from greedy's."""
    grammar = compiled["schema"]
    for prompt in PROMPTS:
        free = _greedy(tiny, prompt, grammar, jump_forward_check=False)
        assert free.complete and parses(free.text, "schema")
        assert grammar.matcher().accept_tokens(free.token_ids) == len(free.token_ids)
        assert free.stats.extra["jump_forward_saved_passes"] > 0
        # the first forced run is the grammar's split of '{"id": '
        forced = grammar.matcher().forced_tokens()
        assert free.token_ids[:len(forced)] == forced
