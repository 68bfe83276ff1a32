"""Rows: token history with left padding, row selection and forking, finishing."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.rows import EOS, LENGTH, STOP


def test_from_prompts_left_pads(rows_factory: Any) -> None:
    rows = rows_factory([[5, 6, 7], [8]], max_new_tokens=4)
    assert rows.num_rows == 2 and rows.prompt_width == 3 and rows.length == 3
    assert rows.tokens.shape == (2, 7)
    assert rows.tokens[:, :3].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert rows.prompt_lengths.tolist() == [3, 1]
    assert rows.source.tolist() == [0, 1]
    assert rows.attention_mask().tolist() == [[1, 1, 1], [0, 0, 1]]
    assert rows.num_generated == 0
    assert rows.finished.tolist() == [False, False]
    assert rows.history(1) == [8] and rows.generated(1) == []


def test_repeat_places_copies_adjacent(rows_factory: Any) -> None:
    rows = rows_factory([[5, 6], [7]], repeat=3)
    assert rows.source.tolist() == [0, 0, 0, 1, 1, 1]
    assert [rows.history(r) for r in range(6)] == [[5, 6]] * 3 + [[7]] * 3


def test_append_generated_and_history(rows_factory: Any) -> None:
    rows = rows_factory([[5, 6, 7], [8]], max_new_tokens=4)
    newly = rows.append(torch.tensor([10, 11]))
    assert newly.tolist() == [False, False]
    rows.append(torch.tensor([12, 13]))
    assert rows.num_generated == 2 and rows.length == 5
    assert rows.generated(0) == [10, 12] and rows.generated(1) == [11, 13]
    assert rows.history(0) == [5, 6, 7, 10, 12] and rows.history(1) == [8, 11, 13]


def test_append_finishes_at_max_new_tokens(rows_factory: Any) -> None:
    rows = rows_factory([[5]], max_new_tokens=2)
    rows.append(torch.tensor([1]))
    assert not rows.finished.any()
    assert rows.append(torch.tensor([2])).tolist() == [True]
    assert rows.finish_reason == [LENGTH] and rows.finish_len == [2]
    with pytest.raises(RuntimeError, match="capacity"):
        rows.append(torch.tensor([3]))


def test_mark_finished_keeps_first_reason(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6], [7]])
    rows.mark_finished(torch.tensor([True, False, False]), EOS)
    rows.mark_finished(torch.tensor([True, True, False]), STOP, stop_text="xy")
    assert rows.finished.tolist() == [True, True, False]
    assert rows.finish_reason == [EOS, STOP, None]
    assert rows.stop_text == [None, "xy", None]
    rows.mark_finished(torch.tensor([False, False, False]), EOS)
    assert rows.finish_reason == [EOS, STOP, None]


def test_finished_rows_keep_their_tokens_only(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6]], max_new_tokens=5)
    rows.append(torch.tensor([10, 20]))
    rows.mark_finished(torch.tensor([True, False]), EOS)  # e.g. a strategy ends a row itself
    assert rows.finish_len == [1, 0]
    newly = rows.append(torch.tensor([0, 21]))  # finished rows get padding, not a new finish
    assert newly.tolist() == [False, False]
    rows.append(torch.tensor([0, 22]))
    assert rows.generated(0) == [10] and rows.history(0) == [5, 10]
    assert rows.generated(1) == [20, 21, 22]


def test_finish_len_recorded_through_processors(rows_factory: Any) -> None:
    from decodekit.plugins.stop import Stop

    rows = rows_factory([[5], [6]], [Stop()], max_new_tokens=5)
    rows.append(torch.tensor([10, 20]))
    newly = rows.append(torch.tensor([0, 21]))  # EOS for row 0
    assert newly.tolist() == [True, False]
    assert rows.finish_reason == [EOS, None] and rows.finish_len == [2, 0]
    rows.append(torch.tensor([0, 22]))  # padding after EOS
    assert rows.generated(0) == [10, 0]
    assert rows.generated(1) == [20, 21, 22]
    assert rows.history(0) == [5, 10, 0]


def test_select_reorders_expands_and_copies(rows_factory: Any) -> None:
    rows = rows_factory([[5, 6], [7]], max_new_tokens=4)
    rows.append(torch.tensor([10, 11]))
    rows.mark_finished(torch.tensor([False, True]), STOP, stop_text="s")
    out = rows.select(torch.tensor([1, 0, 0]))
    assert out.num_rows == 3 and out.length == rows.length
    assert [out.history(r) for r in range(3)] == [[7, 11], [5, 6, 10], [5, 6, 10]]
    assert out.source.tolist() == [1, 0, 0]
    assert out.prompt_lengths.tolist() == [1, 2, 2]
    assert out.finished.tolist() == [True, False, False]
    assert out.finish_reason == [STOP, None, None] and out.stop_text == ["s", None, None]
    # the new rows own their token storage
    out.append(torch.tensor([1, 2, 3]))
    assert rows.length == 3 and out.generated(1) == [10, 2] and out.generated(2) == [10, 3]


def test_select_can_drop_rows(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6], [7]])
    out = rows.select(torch.tensor([2]))
    assert out.num_rows == 1 and out.history(0) == [7] and out.source.tolist() == [2]


def test_fork_is_independent(rows_factory: Any) -> None:
    rows = rows_factory([[5], [6]], max_new_tokens=4)
    rows.append(torch.tensor([1, 2]))
    copy = rows.fork()
    copy.append(torch.tensor([3, 4]))
    copy.mark_finished(torch.tensor([True, True]), EOS)
    assert rows.length == 2 and not rows.finished.any()
    assert rows.finish_reason == [None, None]
    assert rows.generated(0) == [1] and copy.generated(0) == [1, 3] and copy.finish_len == [2, 2]
    assert rows.tokens[:, :rows.length].tolist() == [[5, 1], [6, 2]]
