"""Tests of the ``diverse_beam`` strategy: transformers parity, identities, options, composition."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import decodekit
from decodekit.errors import OptionsError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "diverse_beam"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
NO_EOS = [("stop", {"eos": False})]


def close(a: float, b: float) -> bool:
    """Scores agree up to float32 rounding of the accumulated log-probabilities."""
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def assert_same(got: list[Any], expected: list[tuple[list[int], float]]) -> None:
    """``got`` (decodekit sequences) equals ``expected`` (token ids, score), in order."""
    assert [s.token_ids for s in got] == [e[0] for e in expected]
    for s, (_, score) in zip(got, expected):
        assert close(s.score, score), (s.score, score)


def run(model: Any, prompt: Any, n: int = 16, processors: Any = None, **options: Any) -> Any:
    return decodekit.generate(prompt, model=model, strategy="diverse_beam", options=options,
                              max_new_tokens=n, processors=processors)


@pytest.fixture(scope="module")
def ref_model() -> Any:
    """The fixture model the reference outputs were produced with."""
    return decodekit.load(str(FIXTURES / "model"))


# -- parity with transformers <= 4.55 group beam search ---------------------------------------

def test_fixture_model_loads_like_the_reference(ref_model: Any) -> None:
    first = REFERENCE["first_step"]
    ids = torch.tensor([first["prompt"]])
    with torch.no_grad():
        logits = ref_model.backend.model(ids).logits[0, -1]
    top = torch.topk(torch.log_softmax(logits, dim=-1), len(first["top_ids"]))
    assert top.indices.tolist() == first["top_ids"]
    assert torch.allclose(top.values, torch.tensor(first["top_logprobs"]), atol=1e-5)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=[c["name"] for c in REFERENCE["cases"]])
def test_matches_transformers_group_beam_search(ref_model: Any, case: dict[str, Any]) -> None:
    options = dict(case["settings"])
    n = options.pop("max_new_tokens")
    processors = []
    if "repetition_penalty" in options:
        processors.append(("repetition_penalty", {"penalty": options.pop("repetition_penalty")}))
    if "no_repeat_ngram_size" in options:
        processors.append(("no_repeat_ngram", {"size": options.pop("no_repeat_ngram_size")}))
    if case["batched"]:
        gens = run(ref_model, case["prompts"], n, processors, **options)
    else:
        gens = [run(ref_model, p, n, processors, **options) for p in case["prompts"]]
    for gen, expected in zip(gens, case["outputs"], strict=True):
        assert_same(gen.sequences, [(e["token_ids"], e["score"]) for e in expected])


def test_fixtures_cover_eos_and_length_endings() -> None:
    endings = {s["token_ids"][-1] == 0 for c in REFERENCE["cases"] for o in c["outputs"] for s in o}
    assert endings == {True, False}
    assert any(c["batched"] for c in REFERENCE["cases"])


# -- identities -------------------------------------------------------------------------------

@pytest.mark.parametrize(("num_beams", "length_penalty", "early_stopping"),
                         [(2, 1.0, False), (4, 1.0, False), (3, 2.0, True), (4, -1.0, "never")])
def test_one_group_is_beam_search(eos_model: Any, prompts: tuple[str, ...], num_beams: int,
                                  length_penalty: float, early_stopping: Any) -> None:
    options = {"num_beams": num_beams, "length_penalty": length_penalty,
               "early_stopping": early_stopping, "num_return_sequences": num_beams}
    for prompt in prompts[:4]:
        beam = decodekit.generate(prompt, model=eos_model, strategy="beam", options=options,
                                  max_new_tokens=16)
        diverse = run(eos_model, prompt, 16, num_groups=1, diversity_penalty=0.7, **options)
        assert_same(diverse.sequences, [(s.token_ids, s.score) for s in beam.sequences])


def test_groups_of_one_without_penalty_are_greedy(eos_model: Any, prompts: tuple[str, ...]) -> None:
    for prompt in prompts:
        greedy = decodekit.generate(prompt, model=eos_model, max_new_tokens=16)
        out = run(eos_model, prompt, 16, num_beams=3, num_groups=3, diversity_penalty=0.0,
                  num_return_sequences=3)
        for seq in out.sequences:
            assert seq.token_ids == greedy.token_ids
            # finished score = sum of log-probs / length (length_penalty 1)
            assert close(seq.score, greedy.sequences[0].score / len(greedy.token_ids))
    assert any(len(decodekit.generate(p, model=eos_model, max_new_tokens=16).token_ids) < 16
               for p in prompts), "no prompt ends with EOS: the EOS path is not exercised"


@pytest.mark.parametrize(("groups", "group_size"), [(2, 2), (3, 2), (2, 3)])
def test_zero_penalty_gives_copies_of_a_narrower_beam_search(
        eos_model: Any, prompts: tuple[str, ...], groups: int, group_size: int) -> None:
    for prompt in prompts[:4]:
        beam = decodekit.generate(prompt, model=eos_model, strategy="beam", max_new_tokens=16,
                                  options={"num_beams": group_size,
                                           "num_return_sequences": group_size})
        out = run(eos_model, prompt, 16, num_beams=groups * group_size, num_groups=groups,
                  diversity_penalty=0.0, num_return_sequences=groups * group_size)
        assert_same(out.sequences, [(s.token_ids, s.score) for s in beam.sequences
                                    for _ in range(groups)])


def test_huge_penalty_makes_every_group_choose_a_new_token(tiny: Any, prompts: tuple[str, ...]) -> None:
    for prompt in prompts[:3]:
        plain = run(tiny, prompt, 12, NO_EOS, num_beams=4, num_groups=4, diversity_penalty=0.0,
                    num_return_sequences=4)
        assert len({tuple(s.token_ids) for s in plain.sequences}) == 1  # all greedy
        out = run(tiny, prompt, 12, NO_EOS, num_beams=4, num_groups=4, diversity_penalty=1.0e4,
                  num_return_sequences=4)
        columns = list(zip(*(s.token_ids for s in out.sequences)))
        assert len(columns) == 12
        for column in columns:
            assert len(set(column)) == 4, column


def test_penalty_spreads_the_returned_beams(tiny: Any, prompts: tuple[str, ...]) -> None:
    def distinct_first_tokens(penalty: float) -> int:
        total = 0
        for prompt in prompts:
            out = run(tiny, prompt, 8, NO_EOS, num_beams=4, num_groups=4,
                      diversity_penalty=penalty, num_return_sequences=4)
            total += len({s.token_ids[0] for s in out.sequences})
        return total

    assert distinct_first_tokens(0.0) == len(prompts)
    assert distinct_first_tokens(2.0) > len(prompts)


# -- batching, cost, composition --------------------------------------------------------------

def test_batched_equals_unbatched(eos_model: Any, prompts: tuple[str, ...]) -> None:
    options = {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.6, "num_return_sequences": 2}
    batch = run(eos_model, list(prompts[:4]), 16, **options)
    for prompt, gen in zip(prompts[:4], batch):
        single = run(eos_model, prompt, 16, **options)
        assert_same(gen.sequences, [(s.token_ids, s.score) for s in single.sequences])


def test_one_forward_pass_per_step(tiny: Any) -> None:
    out = run(tiny, "The quick brown", 10, NO_EOS, num_beams=6, num_groups=3)
    assert out.stats.forward_passes == 10  # prefill + 9 decodes; the last step needs no logits
    assert len(out.token_ids) == 10
    assert out.sequences[0].finish_reason == "length"


def test_processor_state_follows_the_beams(tiny: Any, prompts: tuple[str, ...]) -> None:
    for prompt in prompts[:3]:
        out = run(tiny, prompt, 24, [("no_repeat_ngram", {"size": 2}), ("stop", {"eos": False})],
                  num_beams=6, num_groups=3, diversity_penalty=0.5, num_return_sequences=6)
        for seq in out.sequences:
            ids = tiny.tokenizer.encode(prompt, add_special_tokens=False) + seq.token_ids
            bigrams = list(zip(ids, ids[1:]))
            assert len(bigrams) == len(set(bigrams)), seq.token_ids


def test_stop_tokens_end_hypotheses(tiny: Any) -> None:
    plain = run(tiny, "The quick brown", 12, NO_EOS, num_beams=4, num_groups=2,
                num_return_sequences=4)
    stop_id = plain.sequences[0].token_ids[3]
    out = run(tiny, "The quick brown", 12, [("stop", {"eos": False, "token_ids": [stop_id]})],
              num_beams=4, num_groups=2, num_return_sequences=4)
    for seq in out.sequences:
        if seq.finish_reason == "stop":
            assert seq.token_ids[-1] == stop_id and stop_id not in seq.token_ids[:-1]
        else:
            assert seq.finish_reason == "length" and stop_id not in seq.token_ids
    assert any(seq.finish_reason == "stop" for seq in out.sequences)


# -- options ----------------------------------------------------------------------------------

def test_registered_with_options(system: Any) -> None:
    cls = system.registry.get("strategy", "diverse_beam")
    fields = set(cls.Options.model_fields)
    assert fields == {"num_beams", "num_groups", "diversity_penalty", "length_penalty",
                      "early_stopping", "num_return_sequences"}


@pytest.mark.parametrize(("options", "message"), [
    ({"num_beams": 4, "num_groups": 3}, "num_groups (3) must divide num_beams (4)"),
    ({"num_beams": 2, "num_groups": 4}, "must divide num_beams"),
    ({"num_beams": 4, "num_groups": 2, "num_return_sequences": 5}, "num_return_sequences (5)"),
    ({"diversity_penalty": -1.0}, "diversity_penalty"),
    ({"num_groups": 0}, "num_groups"),
    ({"early_stopping": "sometimes"}, "early_stopping"),
    ({"groups": 2}, "groups"),
])
def test_bad_options_are_clear_errors(tiny: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(tiny, "The quick brown", 4, **options)
