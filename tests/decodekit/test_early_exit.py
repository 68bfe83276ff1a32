"""Early-exit models: same computation as the full model's first layers, shared weights, cached."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.early_exit import early_exit_backend, early_exit_model, num_layers
from decodekit.errors import OptionsError, UserError
from decodekit.testing import tiny_llama


def test_logits_equal_the_full_model_cut_after_n_layers() -> None:
    full = tiny_llama(3, layers=3)
    ids = torch.tensor([[5, 9, 17, 33, 2, 8]])
    with torch.no_grad():
        hidden = full(ids, output_hidden_states=True).hidden_states
        for n in (1, 2):
            small = early_exit_model(full, n)
            expected = full.lm_head(full.model.norm(hidden[n]))
            torch.testing.assert_close(small(ids).logits, expected)
            assert num_layers(small) == n and small.config.num_hidden_layers == n
    assert num_layers(full) == 3 and full.config.num_hidden_layers == 3  # untouched


def test_weights_are_shared_not_copied() -> None:
    full = tiny_llama(3, layers=3)
    small = early_exit_model(full, 2)
    full_ptrs = {p.data_ptr() for p in full.parameters()}
    assert all(p.data_ptr() in full_ptrs for p in small.parameters())
    assert small.model.layers[1] is full.model.layers[1]
    assert small.lm_head is full.lm_head and small.model.embed_tokens is full.model.embed_tokens


def test_backend_is_cached_per_model(tiny: Any) -> None:
    a = early_exit_backend(tiny.backend, 1)
    assert early_exit_backend(tiny.backend, 1) is a
    assert a.tokenizer is tiny.backend.tokenizer and a.vocab_size == tiny.backend.vocab_size
    assert a.eos_token_ids == tiny.backend.eos_token_ids
    assert 0 < a.parameter_count() < tiny.backend.parameter_count()
    assert "[:1 layers]" in a.model_id


@pytest.mark.parametrize("layers", [0, 2, 5, True])
def test_layers_out_of_range(tiny: Any, layers: Any) -> None:
    with pytest.raises(OptionsError, match="from 1 to 1"):
        early_exit_backend(tiny.backend, layers)


def test_needs_a_torch_backend() -> None:
    class Other:
        name = "onnx"

    with pytest.raises(UserError, match="needs the 'torch' backend"):
        early_exit_backend(Other(), 2)


def test_unsupported_architecture() -> None:
    class NoLayers(torch.nn.Module):
        base_model_prefix = "model"

        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Linear(2, 2)

    with pytest.raises(UserError, match="no 'layers' list"):
        early_exit_model(NoLayers(), 1)
