"""Momentum decoding: repetition lengths, identities, batching, composition, options."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.errors import OptionsError
from decodekit.plugins.momentum import DEFAULT_RESISTANCE, Momentum, NgramIndex

EXAMPLE = [1, 2, 3, 7, 8, 2, 3, 7, 8, 2, 3]


def brute_force_length(seq: list[int], c: int, max_length: int) -> int:
    """L by definition: rescans the whole sequence."""
    if c not in seq:
        return 0
    best = 1
    for n in range(2, max_length + 1):
        if n - 1 > len(seq):
            break
        gram = seq[len(seq) - (n - 1):] + [c]
        if any(seq[i:i + n] == gram for i in range(len(seq) - n + 1)):
            best = n
    return best


def test_worked_example_from_the_spec() -> None:
    index = NgramIndex(5, EXAMPLE)
    assert index.repetition_lengths([7, 8, 9]) == [5, 1, 0]


def test_lengths_are_capped_by_max_length() -> None:
    assert NgramIndex(3, EXAMPLE).repetition_lengths([7, 8, 9]) == [3, 1, 0]
    assert NgramIndex(1, EXAMPLE).repetition_lengths([7, 8, 9]) == [1, 1, 0]
    assert NgramIndex(5, []).repetition_lengths([7]) == [0]


def test_incremental_index_matches_a_rescan() -> None:
    gen = torch.Generator().manual_seed(0)
    for max_length in (2, 3, 5, 8):
        seq = torch.randint(0, 6, (120,), generator=gen).tolist()  # small alphabet: many repeats
        index = NgramIndex(max_length, seq[:3])
        for t in range(3, len(seq)):
            candidates = list(range(7))
            assert index.repetition_lengths(candidates) == \
                [brute_force_length(seq[:t], c, max_length) for c in candidates]
            index.add(seq[t])


def test_copy_is_independent() -> None:
    index = NgramIndex(5, EXAMPLE)
    other = index.copy()
    other.add(7)
    other.add(8)
    assert index.repetition_lengths([7, 8, 9]) == [5, 1, 0]
    assert other.repetition_lengths([2]) == [5]


def momentum(model: Any, prompts: Any, max_new_tokens: int = 24, **options: Any) -> Any:
    return model.generate(prompts, strategy="momentum", options=options, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("options", [
    {"alpha": 0.0},
    {"top_k": 1},
    {"top_k": 1, "alpha": 5.0},
    {"resistance": {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}},
    {"alpha": 0.0, "resistance": {0: 0.0}},  # unlisted lengths weigh nothing when alpha = 0
])
def test_identities_with_greedy(tiny: Any, prompts: tuple[str, ...], options: dict[str, Any]) -> None:
    batch = list(prompts)
    greedy = [g.token_ids for g in tiny.generate(batch, max_new_tokens=24)]
    assert [g.token_ids for g in momentum(tiny, batch, **options)] == greedy


def test_breaks_greedy_loops(tiny: Any) -> None:
    greedy = tiny.generate("The quick brown", max_new_tokens=40).token_ids
    ours = momentum(tiny, "The quick brown", 40).token_ids
    assert ours != greedy
    assert len(set(ours)) > len(set(greedy))


def test_each_choice_follows_the_rule(tiny: Any, encode: Any) -> None:
    """Replays a generation: at every step the chosen token maximises p - alpha * R(L)."""
    prompt = encode("0 1 2")
    g = momentum(tiny, prompt, 20)
    seq = list(prompt)
    hf = tiny.backend.model
    alpha = 0.2
    for token in g.token_ids:
        with torch.inference_mode():
            logits = hf(torch.tensor([seq])).logits[0, -1]
        p = torch.softmax(logits, dim=-1)
        top_p, top_ids = torch.topk(p, 5)
        scores = [float(pc) - alpha * DEFAULT_RESISTANCE[brute_force_length(seq, int(c), 5)]
                  for pc, c in zip(top_p, top_ids)]
        assert token == int(top_ids[max(range(5), key=lambda i: (scores[i], -i))])
        seq.append(token)


def test_batched_equals_unbatched(eos_model: Any, prompts: tuple[str, ...]) -> None:
    singles = [momentum(eos_model, p, 16) for p in prompts]
    batch = momentum(eos_model, list(prompts), 16)
    assert len({len(g.prompt_token_ids) for g in batch}) > 1
    assert "eos" in {g.finish_reason for g in batch}
    for single, batched in zip(singles, batch):
        assert batched.token_ids == single.token_ids
        assert batched.finish_reason == single.finish_reason


def test_same_forward_passes_as_greedy(tiny: Any) -> None:
    g = momentum(tiny, "SELECT id", 12)
    assert g.stats.forward_passes == 12


def test_infinite_resistance_forbids_lengths(tiny: Any) -> None:
    """Without L = 1..5 in the table, no token of the prompt or output may ever repeat while
    an unseen candidate is among the top k."""
    g = momentum(tiny, "The quick brown", 30, top_k=20, alpha=0.5, resistance={0: 0.0})
    prompt = set(g.prompt_token_ids)
    assert len(set(g.token_ids)) == len(g.token_ids)
    assert not prompt & set(g.token_ids)


def test_composes_with_processors(tiny: Any) -> None:
    plain = momentum(tiny, "To be, or", 30).token_ids
    penalised = tiny.generate("To be, or", strategy="momentum", max_new_tokens=30,
                              processors=[("repetition_penalty", {"penalty": 3.0})])
    assert len(penalised.token_ids) == 30 and penalised.token_ids != plain
    banned = plain[1]
    g = tiny.generate("To be, or", strategy="momentum", max_new_tokens=30,
                      processors=[("bad_words", {"token_ids": [[banned]]})])
    assert banned not in g.token_ids and g.token_ids[0] == plain[0]


def test_index_follows_row_selection(tiny: Any) -> None:
    """The n-gram index is row state: a strategy that reorders or repeats rows keeps it right."""
    from decodekit.loop import drive, prepare
    from decodekit.manager import get_plugin_system

    system = get_plugin_system()
    prepared = prepare(system, tiny.backend, ["0 1 2", "SELECT id"], strategy="momentum",
                       max_new_tokens=6)
    run = drive(system, prepared)
    try:
        for _ in range(3):
            next(run)
        strategy: Momentum = prepared.strategy  # type: ignore[assignment]
        rows = strategy.rows
        assert not bool(rows.finished.any())
        sources = [1, 1, 0]
        picked = rows.select(torch.tensor(sources))
        index = picked.states[strategy.tracker.state_index]
        assert index[0] is not index[1]
        vocab = list(range(tiny.backend.vocab_size))
        histories = [rows.history(s) for s in sources]
        for r, seq in enumerate(histories):
            assert index[r].repetition_lengths(vocab) == [brute_force_length(seq, c, 5) for c in vocab]
        appended = [7, 9, 7]
        picked.append(torch.tensor(appended))
        for r, (seq, token) in enumerate(zip(histories, appended)):
            seq = seq + [token]
            assert index[r].repetition_lengths(vocab) == [brute_force_length(seq, c, 5) for c in vocab]
    finally:
        run.close()


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top_k"), ({"alpha": -1}, "alpha"), ({"max_length": 0}, "max_length"),
    ({"resistance": {-1: 1.0}}, "repetition lengths are >= 0"),
    ({"resistance": {1: -2.0}}, "resistance values must be >= 0"),
    ({"resistance": {1: float("nan")}}, "resistance values"),
    ({"resistance": "high"}, "resistance"),
    ({"beta": 1}, "valid options: top_k"),
])
def test_invalid_options(tiny: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        momentum(tiny, "The", 2, **options)


def test_resistance_table_from_config_keys(tiny: Any) -> None:
    """Tables read from TOML/JSON have string keys; they are accepted as lengths."""
    strategy = Momentum({"resistance": {"0": 0, "1": 2.5, "2": "inf"}})
    assert strategy.options.resistance == {0: 0.0, 1: 2.5, 2: float("inf")}  # type: ignore[attr-defined]
