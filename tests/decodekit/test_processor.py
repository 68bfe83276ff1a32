"""Processor chain and per-row processor state that follows the rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import Field

from decodekit.api import Model
from decodekit.errors import OptionsError
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorChain


class Counter(LogitsProcessor):
    """Counts, per row, the tokens it saw (prompt included) and remembers how it was made."""

    name = "counter"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forks = 0

    def init_state(self, prompt_ids: list[int]) -> dict[str, Any]:
        return {"count": len(prompt_ids), "tokens": list(prompt_ids)}

    def fork_state(self, state: dict[str, Any]) -> dict[str, Any]:
        self.forks += 1
        return {"count": state["count"], "tokens": list(state["tokens"])}

    def update(self, rows: Any, tokens: torch.Tensor, active: torch.Tensor) -> None:
        for r, state in enumerate(rows.states[self.state_index]):
            if bool(active[r]):
                state["count"] += 1
                state["tokens"].append(int(tokens[r]))


def test_states_initialised_from_unpadded_prompts(rows_factory: Any) -> None:
    counter = Counter()
    rows = rows_factory([[5, 6, 7], [8]], [counter])
    assert rows.states == [[{"count": 3, "tokens": [5, 6, 7]}, {"count": 1, "tokens": [8]}]]


def test_states_forked_on_repeat_and_follow_rows(rows_factory: Any) -> None:
    counter = Counter()
    rows = rows_factory([[5, 6], [7]], [counter])
    rows.append(torch.tensor([10, 20]))
    before = rows.states[0]
    out = rows.select(torch.tensor([1, 0, 1, 1]))
    states = out.states[0]
    # first occurrences reuse the state object, repeats get forks
    assert states[0] is before[1] and states[1] is before[0]
    assert counter.forks == 2
    assert len({id(s) for s in states}) == 4
    assert [s["tokens"] for s in states] == [[7, 20], [5, 6, 10], [7, 20], [7, 20]]
    out.append(torch.tensor([1, 2, 3, 4]))
    assert [s["tokens"] for s in out.states[0]] == [[7, 20, 1], [5, 6, 10, 2], [7, 20, 3], [7, 20, 4]]
    assert [s["count"] for s in out.states[0]] == [3, 4, 3, 3]
    # states agree with the rows' histories after every change
    for r in range(out.num_rows):
        assert out.states[0][r]["tokens"] == out.history(r)


def test_finished_rows_do_not_update_state(rows_factory: Any) -> None:
    from decodekit.rows import EOS

    counter = Counter()
    rows = rows_factory([[5], [6]], [counter])
    rows.mark_finished(torch.tensor([True, False]), EOS)
    rows.append(torch.tensor([0, 9]))
    assert [s["count"] for s in rows.states[0]] == [1, 2]


def test_fork_forks_every_state(rows_factory: Any) -> None:
    counter = Counter()
    rows = rows_factory([[5], [6]], [counter])
    copy = rows.fork()
    assert counter.forks == 2
    copy.append(torch.tensor([1, 2]))
    assert [s["tokens"] for s in rows.states[0]] == [[5], [6]]
    assert [s["tokens"] for s in copy.states[0]] == [[5, 1], [6, 2]]


def test_stateless_processors_hold_none(rows_factory: Any) -> None:
    from decodekit.plugins.repetition_penalty import RepetitionPenalty

    rows = rows_factory([[5], [6]], [RepetitionPenalty(), Counter()])
    assert rows.states[0] == [None, None]
    out = rows.select(torch.tensor([0, 0]))
    assert out.states[0] == [None, None]


def test_default_fork_state_copies_deeply() -> None:
    proc = Scale()  # a processor that keeps the default fork_state
    nested = {"a": [1, [2]]}
    copy = proc.fork_state(nested)
    assert copy == nested and copy is not nested and copy["a"][1] is not nested["a"][1]
    for immutable in (None, 3, "x", (1, 2)):
        assert proc.fork_state(immutable) is immutable


class AddOptions(Options):
    token: int = Field(description="token to boost")
    amount: float = Field(1.0, description="added to the logit")


class Add(LogitsProcessor):
    name = "add"
    Options = AddOptions

    def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
        logits[:, self.options.token] += self.options.amount
        return logits


class Scale(LogitsProcessor):
    name = "scale"

    def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
        return logits * 2


def test_chain_applies_processors_in_order(rows_factory: Any) -> None:
    rows = rows_factory([[5]])
    logits = torch.zeros(1, 4)
    add_then_scale = ProcessorChain([Add(token=1, amount=1.5), Scale()])
    assert add_then_scale(logits.clone(), rows).tolist() == [[0, 3.0, 0, 0]]
    scale_then_add = ProcessorChain([Scale(), Add(token=1, amount=1.5)])
    assert scale_then_add(logits.clone(), rows).tolist() == [[0, 1.5, 0, 0]]
    assert [p.state_index for p in add_then_scale] == [0, 1]
    assert len(scale_then_add) == 2


def test_options_merge_and_validation() -> None:
    proc = Add({"token": 3}, amount=2.0)
    assert (proc.options.token, proc.options.amount) == (3, 2.0)
    proc = Add(AddOptions(token=1), amount=4.0)
    assert (proc.options.token, proc.options.amount) == (1, 4.0)
    with pytest.raises(OptionsError, match="processor 'add'"):
        Add({"tokn": 3})
    with pytest.raises(OptionsError, match="'token'"):
        Add()


def test_every_examined_logits_pass_through_processors(tiny: Any) -> None:
    calls = []

    class Spy(LogitsProcessor):
        name = "spy"

        def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
            calls.append((logits.shape[0], rows.num_generated))
            return logits

    model = Model(tiny.backend, "tiny")
    model.generate(["The quick", "SELECT"], max_new_tokens=4, processors=[Spy()])
    assert calls == [(2, 0), (2, 1), (2, 2), (2, 3)]
    calls.clear()
    model.generate("The quick", strategy="beam", options={"num_beams": 3}, max_new_tokens=3,
                   processors=[Spy()])
    assert calls == [(3, 0), (3, 1), (3, 2)]


def test_processor_state_follows_beams(tiny: Any) -> None:
    """Under beam search each row's state matches its own history at every step."""
    checks = []

    class Checker(Counter):
        name = "checker"

        def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
            states = rows.states[self.state_index]
            checks.append(all(states[r]["tokens"] == rows.history(r) for r in range(rows.num_rows)))
            checks.append(len({id(s) for s in states}) == rows.num_rows)
            return logits

    model = Model(tiny.backend, "tiny")
    model.generate(["The quick", "0 1 2 3"], strategy="beam", options={"num_beams": 4},
                   max_new_tokens=6, processors=[Checker()])
    assert len(checks) == 12 and all(checks)
