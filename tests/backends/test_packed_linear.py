"""The torch backend's oneDNN-packed linear layers for multi-row decode steps."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import decodekit
from decodekit.backends._packed_linear import PackedLinears, eligible, linear_bytes, onednn_available
from decodekit.backends.pytorch import TorchBackend
from decodekit.errors import OptionsError, UserError
from decodekit.testing import tiny_llama, tiny_tokenizer

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def _backend(linear: str = "auto", seed: int = 3) -> TorchBackend:
    return TorchBackend(tiny_llama(seed), tiny_tokenizer(), model_id="tiny", linear=linear)  # type: ignore[arg-type]


def _step(backend: TorchBackend, rows: int) -> torch.Tensor:
    """Logits of one decode step over ``rows`` rows after a shared prefill."""
    ids = torch.tensor([[1, 5, 9, 13, 17]] * rows)
    _, cache = backend.prefill(ids)
    return backend.decode(cache, torch.arange(20, 20 + rows)).logits


@needs_onednn
def test_auto_packs_float32_cpu_models() -> None:
    backend = _backend("auto")
    assert backend.packed is not None
    assert {id(m) for m in backend.packed.layers} == {id(m) for _, m in eligible(backend.model)}
    assert linear_bytes(backend.model) > 0
    assert _backend("aten").packed is None


@needs_onednn
def test_multi_row_steps_agree_with_torch_kernel_and_leave_the_model_untouched() -> None:
    packed, plain = _backend("onednn"), _backend("aten")
    got, want = _step(packed, 4), _step(plain, 4)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert packed.packed is not None and packed.packed._packed  # really used
    assert not any("forward" in m.__dict__ for m in packed.model.modules())
    # one-row steps keep torch's kernel: bit-identical
    assert torch.equal(_step(packed, 1), _step(plain, 1))


@needs_onednn
def test_in_place_weight_change_repacks() -> None:
    backend = _backend("onednn")
    before = _step(backend, 2)
    with torch.no_grad():
        for _, layer in eligible(backend.model):
            layer.weight.mul_(0.5)
    after = _step(backend, 2)
    reference = _step(_reference_halved(), 2)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, reference, atol=1e-4, rtol=1e-4)


def _reference_halved() -> TorchBackend:
    backend = _backend("aten")
    with torch.no_grad():
        for _, layer in eligible(backend.model):
            layer.weight.mul_(0.5)
    return backend


@needs_onednn
def test_forward_is_restored_when_the_pass_raises() -> None:
    model = tiny_llama(1)
    packs = PackedLinears(model)
    with pytest.raises(RuntimeError, match="boom"):
        with packs.active():
            assert all("forward" in m.__dict__ for m in packs.layers)
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_onednn
def test_layers_wrapped_by_someone_else_are_left_alone() -> None:
    model = tiny_llama(1)
    layer = next(m for _, m in eligible(model))
    marker = layer.forward
    layer.forward = marker  # an instance-level forward, as accelerate's hooks install
    packs = PackedLinears(model)
    with packs.active():
        assert layer.forward is marker
    assert layer.forward is marker


@needs_onednn
def test_contrastive_and_beam_tokens_match_across_kernels() -> None:
    prompts = ["The quick brown fox", "SELECT id FROM"]
    results = {}
    for linear in ("onednn", "aten"):
        model = decodekit.load(tiny_llama(7), tokenizer=tiny_tokenizer(), linear=linear)
        results[linear] = (
            [g.token_ids for g in model.generate(prompts, strategy="contrastive", max_new_tokens=16)],
            [g.token_ids for g in model.generate(prompts, strategy="beam", options={"num_beams": 3},
                                                 max_new_tokens=12)])
    assert results["onednn"] == results["aten"]


def test_onednn_refuses_other_dtypes() -> None:
    model = tiny_llama(2).to(torch.bfloat16)
    with pytest.raises(UserError, match="float32 weights on a CPU.*bfloat16"):
        TorchBackend(model, tiny_tokenizer(), linear="onednn")
    assert TorchBackend(model, tiny_tokenizer(), linear="auto").packed is None


def test_unknown_kernel_is_named() -> None:
    with pytest.raises(OptionsError, match="linear"):
        decodekit.load(tiny_llama(2), tokenizer=tiny_tokenizer(), linear="fast")
    with pytest.raises(UserError, match="valid: 'auto', 'onednn', 'aten'"):
        _backend("fast")


def test_missing_onednn_is_explained(monkeypatch: Any) -> None:
    import decodekit.backends.pytorch as pytorch_backend

    monkeypatch.setattr(pytorch_backend, "onednn_available", lambda: False)
    with pytest.raises(UserError, match="oneDNN"):
        _backend("onednn")
    assert _backend("auto").packed is None


@needs_onednn
def test_early_exit_copy_shares_the_packed_weights() -> None:
    from decodekit.early_exit import early_exit_backend

    backend = _backend("onednn", seed=4)
    small = early_exit_backend(backend, 1)
    assert small.packed is not None and small.packed._packed is backend.packed._packed  # type: ignore[union-attr]
    assert _backend("aten", seed=4).packed is None
    assert early_exit_backend(_backend("aten", seed=4), 1).packed is None


def _projections(model: Any, layer: int = 0) -> tuple[Any, Any]:
    block = model.model.layers[layer]
    return block.self_attn, block.mlp


@needs_onednn
def test_layers_reading_one_input_are_packed_together() -> None:
    model = tiny_llama(5)
    packs = PackedLinears(model)
    with packs.active():
        pass
    groups = {tuple(id(m) for m in g.members) for g in packs._groups or ()}
    for layer in range(len(model.model.layers)):
        attn, mlp = _projections(model, layer)
        assert (id(attn.q_proj), id(attn.k_proj), id(attn.v_proj)) in groups
        assert (id(mlp.gate_proj), id(mlp.up_proj)) in groups
    grouped = {i for g in groups for i in g}
    assert id(model.model.layers[0].self_attn.o_proj) not in grouped  # reads the attention output
    assert id(model.lm_head) not in grouped


@needs_onednn
def test_grouped_outputs_equal_separate_packed_products() -> None:
    backend = _backend("onednn", seed=6)
    ungrouped = _backend("onednn", seed=6)
    assert ungrouped.packed is not None
    ungrouped.packed._groups = []  # each layer packed on its own
    got, want = _step(backend, 3), _step(ungrouped, 3)
    assert backend.packed is not None and backend.packed._groups
    assert torch.equal(got, want)


@needs_onednn
def test_a_group_member_called_with_other_input_computes_its_own() -> None:
    model = tiny_llama(5)
    attn, _ = _projections(model)
    packs = PackedLinears(model)
    x, y = torch.randn(3, 64), torch.randn(3, 64)
    with torch.no_grad(), packs.active():
        q = attn.q_proj(x)
        k_other = attn.k_proj(y)  # not the input the group computed for
        v = attn.v_proj(y)  # served from the product computed for y
        x.mul_(2.0)  # modified in place: the parts computed for it are stale
        k_changed = attn.k_proj(x)
        twice = (attn.q_proj(x), attn.q_proj(x))  # a second call of a member recomputes
    with torch.no_grad():
        torch.testing.assert_close(q, attn.q_proj(x / 2.0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k_other, attn.k_proj(y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, attn.v_proj(y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k_changed, attn.k_proj(x), atol=1e-5, rtol=1e-5)
        for out in twice:
            torch.testing.assert_close(out, attn.q_proj(x), atol=1e-5, rtol=1e-5)
    assert not any(g.holding for g in packs._groups or ())  # nothing kept after the pass


@needs_onednn
def test_a_group_repacks_when_a_member_weight_changes() -> None:
    model = tiny_llama(5)
    attn, _ = _projections(model)
    packs = PackedLinears(model)
    x = torch.randn(2, 64)
    with torch.no_grad():
        with packs.active():
            attn.q_proj(x)
        attn.v_proj.weight.mul_(0.5)
        with packs.active():
            attn.q_proj(x)
            got = attn.v_proj(x)
        torch.testing.assert_close(got, attn.v_proj(x), atol=1e-5, rtol=1e-5)


def test_a_model_that_cannot_run_on_token_ids_gets_no_groups() -> None:
    from decodekit.backends._packed_linear import _same_input_groups

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    assert _same_input_groups(net, [m for _, m in eligible(net)]) == []
    assert not any("forward" in m.__dict__ for m in net)


@needs_onednn
def test_passes_in_several_threads_do_not_mix_group_products() -> None:
    import threading

    model = tiny_llama(5)
    attn, _ = _projections(model)
    packs = PackedLinears(model)
    with packs.active():
        pass  # groups found
    inputs = [torch.randn(3, 64) for _ in range(4)]
    with torch.no_grad():
        want = [(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)) for x in inputs]
    got: dict[int, list[Any]] = {}
    barrier = threading.Barrier(len(inputs))

    def run(i: int) -> None:
        with torch.no_grad():
            barrier.wait()
            got[i] = [(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)) for x in (inputs[i],) * 20]

    with packs.active():
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, results in got.items():
        for q, k, v in results:
            for a, b in zip((q, k, v), want[i]):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(got) == len(inputs)
