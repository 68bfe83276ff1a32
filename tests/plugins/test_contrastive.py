"""Contrastive search: parity with transformers 4.55 fixtures, identities, composition, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import decodekit
from decodekit.api import Model
from decodekit.backend import Capability
from decodekit.backends.pytorch import TorchBackend
from decodekit.errors import CapabilityError, OptionsError
from decodekit.plugins.contrastive import ContextStates, normalize
from decodekit.processor import LogitsProcessor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contrastive"
REFS = json.loads((FIXTURES / "references.json").read_text())
SINGLE = [c for c in REFS["cases"] if len(c["prompts"]) == 1]
SETTINGS = sorted({(c["alpha"], c["top_k"]) for c in SINGLE})


def expected(tokens: list[int]) -> list[int]:
    """transformers pads after EOS; decodekit stops at it (inclusive)."""
    eos = REFS["eos_token_id"]
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


def reference(alpha: float, k: int, prompt: int) -> list[int]:
    for case in SINGLE:
        if (case["alpha"], case["top_k"], case["prompts"][0]) == (alpha, k, prompt):
            return expected(case["outputs"][0])
    raise KeyError((alpha, k, prompt))


def contrastive(model: Any, prompts: Any, alpha: float = 0.6, k: int = 4, **kwargs: Any) -> Any:
    kwargs.setdefault("max_new_tokens", REFS["max_new_tokens"])
    return model.generate(prompts, strategy="contrastive", options={"alpha": alpha, "top_k": k}, **kwargs)


@pytest.fixture(scope="module")
def saved() -> Any:
    """The fixture model, loaded from its folder (float32)."""
    return decodekit.load(str(FIXTURES / "model"), cache=False)


@pytest.fixture(scope="module")
def padded_model() -> Any:
    """The fixture model with the non-zero padding embedding the batched references used."""
    model = decodekit.load(str(FIXTURES / "model"), cache=False)
    hf = model.backend.model
    with torch.no_grad():
        hf.get_input_embeddings().weight[REFS["pad_token_id"]] = torch.tensor(REFS["pad_embedding"])
    return model


def test_fixtures_describe_what_they_test() -> None:
    assert REFS["transformers"].startswith("4.") and int(REFS["transformers"].split(".")[1]) <= 55
    assert REFS["dtype"] == "float32" and REFS["max_new_tokens"] >= 32
    assert len(SETTINGS) >= 3 and len(REFS["prompt_ids"]) >= 3
    assert len({len(p) for p in REFS["prompt_ids"]}) > 1  # the batch really pads
    assert (FIXTURES / "model" / "model.safetensors").stat().st_size < 1_000_000


@pytest.mark.parametrize("alpha, k", SETTINGS)
def test_parity_with_transformers(saved: Any, alpha: float, k: int) -> None:
    for i, prompt in enumerate(REFS["prompt_ids"]):
        g = contrastive(saved, prompt, alpha, k)
        assert g.token_ids == reference(alpha, k, i), f"prompt {i}"


@pytest.mark.parametrize("case", [c for c in REFS["cases"] if c["model"] == "pad_embedding"],
                         ids=lambda c: f"alpha={c['alpha']},k={c['top_k']}")
def test_left_padded_batch_parity(padded_model: Any, case: dict[str, Any]) -> None:
    prompts = [REFS["prompt_ids"][i] for i in case["prompts"]]
    got = contrastive(padded_model, prompts, case["alpha"], case["top_k"])
    assert [g.token_ids for g in got] == [expected(o) for o in case["outputs"]]


def test_zero_padding_states_do_not_enter_the_max(saved: Any) -> None:
    """The saved model's padding embedding is zero, so its hidden states at padding are zero
    vectors; transformers turns them into NaN cosines and its padded rows fall back to greedy.
    decodekit masks them: its batch equals the unbatched references."""
    prompts = REFS["prompt_ids"]
    width = max(map(len, prompts))
    greedy = [g.token_ids for g in saved.generate(prompts, max_new_tokens=REFS["max_new_tokens"])]
    for case in (c for c in REFS["cases"] if c["model"] == "saved" and len(c["prompts"]) > 1):
        got = [g.token_ids for g in contrastive(saved, prompts, case["alpha"], case["top_k"])]
        for i, (ours, theirs) in enumerate(zip(got, case["outputs"])):
            assert ours == reference(case["alpha"], case["top_k"], i)
            if len(prompts[i]) == width:
                assert ours == expected(theirs)  # no padding: same as transformers' batch
            else:
                assert expected(theirs) == greedy[i] != ours


def test_batched_equals_unbatched(eos_model: Any, prompts: tuple[str, ...]) -> None:
    singles = [contrastive(eos_model, p, max_new_tokens=16) for p in prompts]
    batch = contrastive(eos_model, list(prompts), max_new_tokens=16)
    assert len({len(g.prompt_token_ids) for g in batch}) > 1
    assert "eos" in {g.finish_reason for g in batch}
    for single, batched in zip(singles, batch):
        assert batched.token_ids == single.token_ids
        assert batched.finish_reason == single.finish_reason
        assert batched.sequences[0].score == pytest.approx(single.sequences[0].score, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("options", [{"alpha": 0.0, "top_k": 4}, {"alpha": 0.0, "top_k": 9},
                                     {"alpha": 0.6, "top_k": 1}, {"alpha": 1.0, "top_k": 1}])
def test_identities_with_greedy(tiny: Any, prompts: tuple[str, ...], options: dict[str, Any]) -> None:
    batch = list(prompts)
    greedy = [g.token_ids for g in tiny.generate(batch, max_new_tokens=24)]
    got = [g.token_ids for g in tiny.generate(batch, strategy="contrastive", options=options,
                                              max_new_tokens=24)]
    assert got == greedy


def test_differs_from_greedy_and_avoids_its_loop(tiny: Any) -> None:
    greedy = tiny.generate("The quick brown", max_new_tokens=30).token_ids
    ours = contrastive(tiny, "The quick brown", max_new_tokens=30).token_ids
    assert ours != greedy
    assert len(set(ours)) > len(set(greedy))  # the tiny model's greedy output loops


def test_cost_is_one_k_row_forward_per_token(tiny: Any, encode: Any) -> None:
    ids = encode("SELECT id")
    g = contrastive(tiny, ids, k=5, max_new_tokens=12)
    assert g.stats.forward_passes == 1 + 12
    assert g.stats.positions == len(ids) + 12 * 5


def test_composes_with_repetition_penalty(tiny: Any) -> None:
    plain = contrastive(tiny, "To be, or", max_new_tokens=30).token_ids
    penalised = contrastive(tiny, "To be, or", max_new_tokens=30,
                            processors=[("repetition_penalty", {"penalty": 3.0})])
    assert len(penalised.token_ids) == 30 and penalised.token_ids != plain
    # the penalty only ever lowers the rank of seen tokens: fewer repeats than without it
    repeats = [len(t) - len(set(t)) for t in (plain, penalised.token_ids)]
    assert repeats[1] <= repeats[0]


class OnlyTokens(LogitsProcessor):
    """Allow only a fixed set of token ids."""

    name = "only-tokens"

    def __init__(self, allowed: list[int]) -> None:
        super().__init__()
        self.allowed = torch.tensor(allowed)

    def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
        keep = torch.full_like(logits, float("-inf"))
        keep[:, self.allowed] = 0.0
        return logits + keep


def test_forbidden_candidates_are_never_chosen(tiny: Any) -> None:
    """With fewer allowed tokens than candidates, the zero-probability candidates (whose
    hidden states may be unlike the context) must still lose."""
    allowed = [40, 41]
    for alpha in (0.6, 0.95):
        g = contrastive(tiny, ["The quick brown", "SELECT id"], alpha, 6, max_new_tokens=20,
                        processors=[OnlyTokens(allowed)])
        for gen in g:
            assert set(gen.token_ids) <= set(allowed) and len(gen.token_ids) == 20


def test_bad_words_processor_applies(tiny: Any) -> None:
    plain = contrastive(tiny, "The quick brown", max_new_tokens=20).token_ids
    banned = plain[2]
    g = contrastive(tiny, "The quick brown", max_new_tokens=20,
                    processors=[("bad_words", {"token_ids": [[banned]]})])
    assert banned not in g.token_ids and g.token_ids[:2] == plain[:2]


class NoHidden(TorchBackend):
    name = "no-hidden"
    capabilities = Capability.ALL - {Capability.HIDDEN_STATES}


def test_backend_without_hidden_states(tiny: Any) -> None:
    model = Model(NoHidden(tiny.backend.model, tiny.tokenizer, "no-hidden-model"), "no-hidden")
    with pytest.raises(CapabilityError) as info:
        contrastive(model, "The quick brown", max_new_tokens=4)
    assert info.value.missing == ["hidden_states"]
    assert "'contrastive'" in str(info.value) and "'no-hidden'" in str(info.value)


class ScaledHead(TorchBackend):
    """A backend whose separate output layer disagrees with its forward pass."""

    name = "scaled-head"

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor | None:
        logits = super().lm_head(hidden)
        return None if logits is None else logits * 2.0


class NoHead(TorchBackend):
    name = "no-head"

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor | None:
        return None


def run_strategy(backend: Any, prompts: list[str], max_new_tokens: int) -> tuple[Any, list[Any]]:
    """Run ``contrastive`` through the core loop; returns the strategy object and generations."""
    from decodekit.loop import drive, prepare
    from decodekit.manager import get_plugin_system

    system = get_plugin_system()
    prepared = prepare(system, backend, prompts, strategy="contrastive", max_new_tokens=max_new_tokens)
    run = drive(system, prepared)
    while True:
        try:
            next(run)
        except StopIteration as stop:
            return prepared.strategy, stop.value


def test_separate_output_layer_only_when_it_reproduces_the_logits(tiny: Any, prompts: tuple[str, ...]) -> None:
    hf, tok = tiny.backend.model, tiny.tokenizer
    batch = list(prompts[:4])
    results = {}
    for cls in (TorchBackend, ScaledHead, NoHead):
        strategy, gens = run_strategy(cls(hf, tok, cls.name), batch, 20)
        results[cls.name] = (strategy.split, [g.token_ids for g in gens], gens[0].stats.forward_passes)
    assert results["torch"][0] is True
    assert results["scaled-head"][0] is False and results["no-head"][0] is False
    assert results["torch"][1] == results["scaled-head"][1] == results["no-head"][1]
    assert results["torch"][2] == results["no-head"][2] == 21


def test_decode_hidden_and_lm_head_match_decode(tiny: Any, encode: Any) -> None:
    backend = tiny.backend
    ids = torch.tensor([encode("The quick brown")])
    with torch.inference_mode():
        _, full = backend.prefill(ids)
        split = full.fork()
        step = torch.tensor([41])
        out = backend.decode(full, step, return_hidden=True)
        hidden = backend.decode_hidden(split, step)
        assert split.length == full.length
        torch.testing.assert_close(hidden, out.hidden)
        torch.testing.assert_close(backend.lm_head(hidden), out.logits)
        # the caches advanced alike: the next step agrees too
        torch.testing.assert_close(backend.decode(split, step).logits, backend.decode(full, step).logits)


@pytest.mark.parametrize("options, message", [
    ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"top_k": 0}, "top_k"),
    ({"penalty_alpha": 0.6}, "valid options: top_k"),
])
def test_invalid_options(tiny: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        tiny.generate("The", strategy="contrastive", options=options, max_new_tokens=2)


def test_top_k_larger_than_vocabulary(tiny: Any) -> None:
    g = tiny.generate("The", strategy="contrastive", options={"top_k": 10_000}, max_new_tokens=3)
    assert len(g.token_ids) == 3


def test_prefill_returns_every_prompt_hidden_state(tiny: Any, encode: Any) -> None:
    backend = tiny.backend
    ids = [encode("The quick brown"), encode("SELECT id")]
    width = max(map(len, ids))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    with torch.inference_mode():
        out, _ = backend.prefill(input_ids, mask, return_hidden="all")
        last, _ = backend.prefill(input_ids, mask, return_hidden=True)
        alone, _ = backend.prefill(torch.tensor([ids[1]]), return_hidden="all")
    assert out.hidden.shape == (2, width, backend.model.config.hidden_size)
    assert out.logits.shape == (2, backend.vocab_size)
    assert torch.equal(out.hidden[:, -1], last.hidden)
    torch.testing.assert_close(out.hidden[1, width - len(ids[1]):], alone.hidden[0])
    with pytest.raises(ValueError, match="return_hidden"):
        backend.prefill(input_ids, mask, return_hidden="last")


def test_context_states_grow_and_mask_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randn(2, 3, 8, generator=gen)
    prompt[0, 0] = 0.0  # a padding position with a zero state: masked, never NaN
    valid = torch.tensor([[False, True, True], [True, True, True]])
    states = ContextStates(prompt, valid, room=1)
    appended = [torch.randn(2, 8, generator=gen) for _ in range(5)]
    for h in appended:
        states.append(normalize(h))
    assert states.length == 8 and states.buffer.shape[1] >= 8
    full = normalize(torch.cat([prompt, torch.stack(appended, dim=1)], dim=1))
    cand = normalize(torch.randn(2, 4, 8, generator=gen))
    cos = cand @ full.transpose(1, 2)
    cos[0, :, 0] = float("-inf")
    torch.testing.assert_close(states.penalty(cand), cos.max(dim=-1).values)
    assert not torch.isnan(states.penalty(cand)).any()
