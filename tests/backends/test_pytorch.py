"""The torch backend: prefill/decode, cache row operations, hidden states, input embeddings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from decodekit.backend import Capability, KVCache, StepOutput
from decodekit.backends.pytorch import TorchBackend, TorchCache

ATOL = 1e-4


@pytest.fixture(scope="module")
def backend(tiny: Any) -> TorchBackend:
    return tiny.backend


@pytest.fixture(scope="module")
def ids(encode: Any) -> list[list[int]]:
    return [encode("The quick brown"), encode("SELECT id"), encode("def add(a, b):\n")]


def _padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    tokens = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return tokens, mask


def _reference_logits(backend: TorchBackend, ids: list[int]) -> torch.Tensor:
    """Logits of every position of ``ids`` from one plain forward pass of the transformers model."""
    with torch.no_grad():
        return backend.model(torch.tensor([ids])).logits[0].float()


def test_attributes(backend: TorchBackend) -> None:
    assert backend.name == "torch" and backend.capabilities == Capability.ALL
    assert backend.vocab_size == 320 and backend.eos_token_ids == (0,) and backend.pad_token_id == 0
    assert backend.max_context == 512 and backend.bos_token_id == 1
    assert backend.parameter_count() == sum(p.numel() for p in backend.model.parameters())
    assert backend.describe() == {"backend": "torch", "model": "tiny-llama-0", "vocab_size": 320}
    assert backend.input_embeddings().shape == (320, 64)


def test_prefill_matches_plain_forward(backend: TorchBackend, ids: list[list[int]]) -> None:
    out, cache = backend.prefill(torch.tensor([ids[0]]))
    assert isinstance(out, StepOutput) and isinstance(cache, KVCache) and out.hidden is None
    assert out.logits.shape == (1, 320) and out.logits.dtype == torch.float32
    assert torch.allclose(out.logits[0], _reference_logits(backend, ids[0])[-1], atol=ATOL)
    assert cache.batch_size == 1 and cache.length == len(ids[0])


def test_left_padded_prefill_equals_unpadded(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    out, cache = backend.prefill(tokens, mask)
    assert cache.length == tokens.shape[1] and cache.batch_size == 3
    for r, prompt in enumerate(ids):
        alone, _ = backend.prefill(torch.tensor([prompt]))
        assert torch.allclose(out.logits[r], alone.logits[0], atol=ATOL)
    # and decoding on from the padded cache still matches
    nxt = out.logits.argmax(-1)
    step = backend.decode(cache, nxt)
    for r, prompt in enumerate(ids):
        ref = _reference_logits(backend, prompt + [int(nxt[r])])[-1]
        assert torch.allclose(step.logits[r], ref, atol=ATOL)


def test_all_ones_mask_is_no_padding(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens = torch.tensor([ids[0]])
    out, cache = backend.prefill(tokens, torch.ones_like(tokens))
    assert isinstance(cache, TorchCache) and cache.mask is None


def test_multi_token_decode_equals_step_by_step(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids[:2])
    extra = torch.tensor([[5, 17, 42, 9], [8, 8, 100, 3]])
    _, cache_a = backend.prefill(tokens, mask)
    many = backend.decode(cache_a, extra, all_positions=True)
    assert many.logits.shape == (2, 4, 320)
    _, cache_b = backend.prefill(tokens, mask)
    for j in range(extra.shape[1]):
        one = backend.decode(cache_b, extra[:, j])
        assert torch.allclose(many.logits[:, j], one.logits, atol=ATOL)
    assert cache_a.length == cache_b.length == tokens.shape[1] + 4
    last_only = backend.decode(backend.prefill(tokens, mask)[1], extra)
    assert last_only.logits.shape == (2, 320)
    assert torch.allclose(last_only.logits, many.logits[:, -1], atol=ATOL)


def test_crop_then_redecode_gives_same_logits(backend: TorchBackend, ids: list[list[int]]) -> None:
    for prompts in (ids[:1], ids):  # without and with padding
        tokens, mask = _padded(prompts)
        _, cache = backend.prefill(tokens, mask)
        width = cache.length
        seq = torch.tensor([[11, 12, 13]] * len(prompts))
        first = backend.decode(cache, seq, all_positions=True).logits
        cache.crop(width + 1)
        assert cache.length == width + 1
        again = backend.decode(cache, seq[:, 1:], all_positions=True).logits
        assert torch.allclose(again, first[:, 1:], atol=ATOL)
        cache.crop(width)
        changed = backend.decode(cache, torch.tensor([[40]] * len(prompts))).logits
        _, fresh = backend.prefill(tokens, mask)
        assert torch.allclose(changed, backend.decode(fresh, torch.tensor([40] * len(prompts))).logits,
                              atol=ATOL)


def test_crop_bounds(backend: TorchBackend, ids: list[list[int]]) -> None:
    _, cache = backend.prefill(torch.tensor([ids[0]]))
    cache.crop(cache.length)  # no-op
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(cache.length + 1)
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(-1)


def test_fork_is_independent(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    _, cache = backend.prefill(tokens, mask)
    other = cache.fork()
    a = backend.decode(cache, torch.tensor([5, 6, 7])).logits
    b = backend.decode(other, torch.tensor([50, 60, 70])).logits  # diverge
    assert cache.length == other.length
    a2 = backend.decode(cache, torch.tensor([1, 1, 1])).logits
    _, ref = backend.prefill(tokens, mask)
    backend.decode(ref, torch.tensor([5, 6, 7]))
    assert torch.allclose(a2, backend.decode(ref, torch.tensor([1, 1, 1])).logits, atol=ATOL)
    assert not torch.allclose(a, b)


def test_select_reorders_and_expands(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    _, cache = backend.prefill(tokens, mask)
    cache.select(torch.tensor([2, 0, 0, 1]))
    assert cache.batch_size == 4
    out = backend.decode(cache, torch.tensor([9, 9, 9, 9])).logits
    assert torch.allclose(out[1], out[2], atol=ATOL)
    for r, source in enumerate([2, 0, 0, 1]):
        ref = _reference_logits(backend, ids[source] + [9])[-1]
        assert torch.allclose(out[r], ref, atol=ATOL)
    # expanded rows diverge independently
    out = backend.decode(cache, torch.tensor([1, 2, 3, 4])).logits
    assert torch.allclose(out[1], _reference_logits(backend, ids[0] + [9, 2])[-1], atol=ATOL)
    assert torch.allclose(out[2], _reference_logits(backend, ids[0] + [9, 3])[-1], atol=ATOL)


def test_return_hidden(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    out, cache = backend.prefill(tokens, mask, return_hidden=True)
    assert out.hidden is not None and out.hidden.shape == (3, 64)
    head = backend.model.lm_head
    assert torch.allclose(head(out.hidden), out.logits, atol=ATOL)  # the LM-head input
    step = backend.decode(cache, torch.tensor([[1, 2], [3, 4], [5, 6]]), return_hidden=True,
                          all_positions=True)
    assert step.hidden.shape == (3, 2, 64) and step.logits.shape == (3, 2, 320)
    assert torch.allclose(head(step.hidden), step.logits, atol=ATOL)
    last = backend.decode(cache, torch.tensor([7, 8, 9]), return_hidden=True)
    assert last.hidden.shape == (3, 64)
    assert backend.decode(cache, torch.tensor([7, 8, 9])).hidden is None


def test_prefill_hidden_for_every_position(backend: TorchBackend, ids: list[list[int]]) -> None:
    out, _ = backend.prefill(torch.tensor([ids[0]]), return_hidden="all")
    assert out.hidden.shape == (1, len(ids[0]), 64)
    assert torch.allclose(backend.model.lm_head(out.hidden[0]), _reference_logits(backend, ids[0]),
                          atol=ATOL)


def test_decode_embeds_equals_decode(backend: TorchBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    nxt = torch.tensor([[5, 6], [7, 8], [9, 10]])
    _, by_ids = backend.prefill(tokens, mask)
    a = backend.decode(by_ids, nxt, all_positions=True, return_hidden=True)
    _, by_embeds = backend.prefill(tokens, mask)
    embeds = backend.input_embeddings()[nxt]
    b = backend.decode_embeds(by_embeds, embeds, all_positions=True, return_hidden=True)
    assert torch.allclose(a.logits, b.logits, atol=ATOL) and torch.allclose(a.hidden, b.hidden, atol=ATOL)
    # the caches agree afterwards
    assert torch.allclose(backend.decode(by_ids, torch.tensor([1, 1, 1])).logits,
                          backend.decode(by_embeds, torch.tensor([1, 1, 1])).logits, atol=ATOL)
    # a mixture of embeddings (superposition) runs too
    mix = 0.5 * (backend.input_embeddings()[5] + backend.input_embeddings()[6])
    out = backend.decode_embeds(by_ids, mix.expand(3, 1, -1))
    assert out.logits.shape == (3, 320) and torch.isfinite(out.logits).all()


def test_load_directory_with_options(tiny: Any, tmp_path: Any) -> None:
    from decodekit.backends.pytorch import TorchOptions

    tiny.backend.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = TorchBackend.load(tmp_path, TorchOptions(dtype="bfloat16", attn_implementation="eager"))
    assert loaded.model.dtype == torch.bfloat16 and loaded.model_id == str(tmp_path)
    out, _ = loaded.prefill(torch.tensor([[5, 6, 7]]))
    assert out.logits.dtype == torch.float32  # logits are always float32
    assert loaded.vocab_size == 320


def test_hidden_only_passes_skip_the_output_layer(backend: TorchBackend, ids: list[list[int]]) -> None:
    """Passes that only need hidden states never run the output layer, and a step that needs the
    last position's logits runs it on that position only (transformers wraps ``forward`` in
    decorators, so ``logits_to_keep`` must be found through them)."""
    assert backend._logits_to_keep
    tokens, mask = _padded(ids)
    _, warm = backend.prefill(tokens, mask)
    backend.decode(warm, torch.tensor([1, 2, 3]))  # one-time set-up passes (packed layers) run here
    rows_seen: list[int] = []
    hook = backend.model.lm_head.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[:-1].numel()))
    try:
        _, cache = backend.prefill(tokens, mask)
        assert rows_seen == [3]  # the last position of each row
        backend.decode_hidden(cache.fork(), torch.tensor([7, 8, 9]))
        backend.decode_candidates(cache.fork(), torch.tensor([[1, 2], [3, 4], [5, 6]]), with_logits=False)
        assert sum(rows_seen) == 3  # an empty slice at most
        backend.decode(cache, torch.tensor([[1, 2], [3, 4], [5, 6]]))
        assert sum(rows_seen) == 6
    finally:
        hook.remove()
