"""The torch backend's candidate passes: candidates as positions of their row (tree attention)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.backend import Backend
from decodekit.backends.pytorch import TorchBackend, TorchCache
from decodekit.testing import tiny_llama, tiny_tokenizer

ATOL = 1e-5


def _backend(attention: str = "sdpa", linear: str = "aten") -> TorchBackend:
    model = tiny_llama(7)
    model.set_attn_implementation(attention)
    return TorchBackend(model, tiny_tokenizer(), model_id="tiny", linear=linear)  # type: ignore[arg-type]


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Two left-padded rows (the first one padded)."""
    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    return ids, mask


CANDIDATES = torch.tensor([[40, 41, 42], [50, 51, 52]])


def _expanded(backend: TorchBackend, with_logits: bool) -> tuple[Any, torch.Tensor, TorchCache]:
    """The backend-independent way: rows expanded ``k`` times (the base class)."""
    _, cache = backend.prefill(*_prompts())
    logits, hidden = Backend.decode_candidates(backend, cache, CANDIDATES, with_logits=with_logits)
    return logits, hidden, cache


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("with_logits", [True, False])
def test_tree_pass_matches_expanded_rows(attention: str, with_logits: bool) -> None:
    backend = _backend(attention)
    _, cache = backend.prefill(*_prompts())
    assert backend._tree_ready(cache)
    logits, hidden = backend.decode_candidates(cache, CANDIDATES, with_logits=with_logits)
    assert cache.batch_size == 2 and cache.pending == 3  # not expanded: candidates are positions
    ref_logits, ref_hidden, _ = _expanded(backend, with_logits)
    assert hidden.shape == (2, 3, 64)
    torch.testing.assert_close(hidden, ref_hidden, atol=ATOL, rtol=ATOL)
    if with_logits:
        assert logits is not None and logits.dtype == torch.float32
        torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=ATOL)
    else:
        assert logits is None and ref_logits is None


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_kept_candidate_leaves_the_cache_decode_would(attention: str) -> None:
    backend = _backend(attention)
    chosen = torch.tensor([2, 0])
    _, tree = backend.prefill(*_prompts())
    backend.decode_candidates(tree, CANDIDATES, with_logits=False)
    backend.keep_candidates(tree, chosen)
    _, plain = backend.prefill(*_prompts())
    backend.decode(plain, CANDIDATES.gather(1, chosen[:, None]).squeeze(1))
    assert tree.pending == 0 and tree.batch_size == 2 and tree.length == plain.length == 6
    assert torch.equal(tree.next_pos, plain.next_pos)
    assert tree.mask is not None and plain.mask is not None and torch.equal(tree.mask, plain.mask)
    for mine, theirs in zip(tree.past.layers, plain.past.layers):
        torch.testing.assert_close(mine.keys, theirs.keys, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(mine.values, theirs.values, atol=ATOL, rtol=ATOL)
    # the next steps agree, also a second candidate pass after the first
    nxt = torch.tensor([60, 61])
    torch.testing.assert_close(backend.decode(tree.fork(), nxt).logits, backend.decode(plain.fork(), nxt).logits,
                               atol=ATOL, rtol=ATOL)
    _, again = backend.decode_candidates(tree, CANDIDATES, with_logits=False)
    _, want, _ = _expanded_after(backend, chosen)
    torch.testing.assert_close(again, want, atol=ATOL, rtol=ATOL)


def _expanded_after(backend: TorchBackend, chosen: torch.Tensor) -> tuple[Any, torch.Tensor, Any]:
    _, cache = backend.prefill(*_prompts())
    backend.decode(cache, CANDIDATES.gather(1, chosen[:, None]).squeeze(1))
    logits, hidden = Backend.decode_candidates(backend, cache, CANDIDATES, with_logits=False)
    return logits, hidden, cache


def test_unpadded_rows_and_packed_kernel() -> None:
    backend = _backend(linear="auto")
    ids = torch.tensor([[3, 4, 5, 6]])
    _, tree = backend.prefill(ids)
    assert tree.mask is None
    _, hidden = backend.decode_candidates(tree, torch.tensor([[7, 8, 9, 10]]), with_logits=False)
    _, plain = backend.prefill(ids)
    _, want = Backend.decode_candidates(backend, plain, torch.tensor([[7, 8, 9, 10]]), with_logits=False)
    torch.testing.assert_close(hidden, want, atol=1e-4, rtol=1e-4)
    backend.keep_candidates(tree, torch.tensor([1]))
    assert tree.mask is None and tree.length == 5 and int(tree.next_pos[0]) == 5


def test_other_caches_fall_back_to_expanded_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend()
    monkeypatch.setattr(backend, "_tree_ready", lambda cache: False)
    _, cache = backend.prefill(*_prompts())
    _, hidden = backend.decode_candidates(cache, CANDIDATES, with_logits=False)
    assert cache.batch_size == 6 and cache.pending == 0
    backend.keep_candidates(cache, torch.tensor([1, 2]))
    assert cache.batch_size == 2 and cache.length == 6
    _, want, _ = _expanded(backend, False)
    torch.testing.assert_close(hidden, want)


def test_a_cache_holding_candidates_is_not_fed_candidates_again() -> None:
    backend = _backend()
    _, cache = backend.prefill(*_prompts())
    backend.decode_candidates(cache, CANDIDATES)
    assert not backend._tree_ready(cache)


@pytest.mark.parametrize("chosen", [0, 2])
def test_one_row_keeps_the_chosen_candidate(chosen: int) -> None:
    backend = _backend()
    ids = torch.tensor([[3, 4, 5, 6]])
    _, tree = backend.prefill(ids)
    backend.decode_candidates(tree, torch.tensor([[7, 8, 9]]), with_logits=False)
    backend.keep_candidates(tree, torch.tensor([chosen]))
    _, plain = backend.prefill(ids)
    backend.decode(plain, torch.tensor([7 + chosen]))
    for mine, theirs in zip(tree.past.layers, plain.past.layers):
        torch.testing.assert_close(mine.keys, theirs.keys, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(mine.values, theirs.values, atol=ATOL, rtol=ATOL)
    nxt = torch.tensor([12])
    torch.testing.assert_close(backend.decode(tree, nxt).logits, backend.decode(plain, nxt).logits,
                               atol=ATOL, rtol=ATOL)


def test_a_fork_taken_between_candidates_and_keep_keeps_its_own_choice() -> None:
    backend = _backend()
    _, cache = backend.prefill(*_prompts())
    backend.decode_candidates(cache, CANDIDATES, with_logits=False)
    other = cache.fork()
    assert other.pending == 3
    backend.keep_candidates(cache, torch.tensor([0, 0]))
    backend.keep_candidates(other, torch.tensor([2, 1]))
    assert cache.length == other.length == 6
    _, plain = backend.prefill(*_prompts())
    backend.decode(plain, torch.tensor([42, 51]))
    nxt = torch.tensor([60, 61])
    torch.testing.assert_close(backend.decode(other, nxt).logits, backend.decode(plain, nxt).logits,
                               atol=ATOL, rtol=ATOL)
