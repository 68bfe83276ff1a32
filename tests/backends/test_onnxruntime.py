"""The onnxruntime backend: export, sidecar, graph checks, forward passes against PyTorch, cache
row operations, options and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import decodekit
from decodekit.backend import Capability
from decodekit.errors import UserError

pytest.importorskip("onnxruntime")

from decodekit.backends._export_onnx import SIDECAR, export_onnx, io_spec
from decodekit.backends.onnxruntime import (
    OnnxBackend,
    OnnxOptions,
    TensorCache,
    resolve_providers,
)

ATOL = 1e-4
PROMPTS = ["The quick brown", "SELECT id", "def add(a, b):\n"]


@pytest.fixture(scope="module")
def ort(ort_tiny: Any) -> OnnxBackend:
    return ort_tiny.backend


@pytest.fixture(scope="module")
def ids(encode: Any) -> list[list[int]]:
    return [encode(p) for p in PROMPTS]


def _padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    tokens = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return tokens, mask


def test_sidecar_describes_the_graph(onnx_exports: dict[str, Path], tiny: Any) -> None:
    meta = json.loads((onnx_exports["ids"] / SIDECAR).read_text())
    assert meta["num_layers"] == 2 and meta["num_key_value_heads"] == 2 and meta["head_dim"] == 16
    assert meta["num_attention_heads"] == 4 and meta["vocab_size"] == 320 and meta["dtype"] == "float32"
    assert meta["input_kind"] == "input_ids" and meta["hidden_output"] is True
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "position_ids",
                                                   "past.0.key", "past.0.value", "past.1.key", "past.1.value"]
    assert [o["name"] for o in meta["outputs"]][:3] == ["logits", "hidden", "present.0.key"]
    assert meta["inputs"][3]["shape"] == ["batch", 2, "past", 16]
    assert 0 <= meta["check"]["max_abs_diff"] < meta["check"]["tolerance"] == 1e-2
    assert (onnx_exports["ids"] / "tokenizer.json").is_file()
    assert meta["eos_token_ids"] == [0] and meta["pad_token_id"] == 0
    embeds = json.loads((onnx_exports["embeds"] / SIDECAR).read_text())
    assert embeds["inputs"][0] == {"name": "inputs_embeds", "dtype": "float32", "shape": ["batch", "seq", 64]}
    assert (onnx_exports["embeds"] / embeds["embeddings"]).is_file()


def test_io_spec_without_hidden() -> None:
    meta = {"input_kind": "input_ids", "dtype": "float16", "num_layers": 1, "num_key_value_heads": 3,
            "head_dim": 8, "hidden_size": 24, "vocab_size": 10, "hidden_output": False}
    inputs, outputs = io_spec(meta)
    assert [o["name"] for o in outputs] == ["logits", "present.0.key", "present.0.value"]
    assert outputs[1] == {"name": "present.0.key", "dtype": "float16", "shape": ["batch", 3, "total", 8]}
    assert inputs[0]["dtype"] == "int64"


def test_capabilities_follow_the_export(ort: OnnxBackend, ort_tiny_embeds: Any) -> None:
    assert ort.name == "onnxruntime"
    assert ort.capabilities == {Capability.HIDDEN_STATES, Capability.MULTI_TOKEN, Capability.CACHE_OPS}
    assert ort_tiny_embeds.backend.capabilities == Capability.ALL
    assert ort.vocab_size == 320 and ort.eos_token_ids == (0,) and ort.pad_token_id == 0
    assert ort.max_context == 512 and ort.bos_token_id == 1
    assert ort.describe()["providers"] == ["CPUExecutionProvider"]
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        ort.input_embeddings()


def test_prefill_and_decode_match_torch(ort: OnnxBackend, tiny: Any, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    ours, cache = ort.prefill(tokens, mask, return_hidden=True)
    ref, ref_cache = tiny.backend.prefill(tokens, mask, return_hidden=True)
    assert isinstance(cache, TensorCache) and cache.length == tokens.shape[1] and cache.batch_size == 3
    assert ours.logits.dtype == torch.float32 and ours.logits.shape == (3, 320)
    assert torch.allclose(ours.logits, ref.logits, atol=ATOL)
    assert torch.allclose(ours.hidden, ref.hidden, atol=ATOL)
    for _ in range(3):
        nxt = ours.logits.argmax(-1)
        ours, ref = ort.decode(cache, nxt), tiny.backend.decode(ref_cache, nxt)
        assert ours.hidden is None and torch.allclose(ours.logits, ref.logits, atol=ATOL)
    all_hidden, _ = ort.prefill(tokens, mask, return_hidden="all")
    assert all_hidden.hidden.shape == (3, tokens.shape[1], 64)


def test_multi_token_decode_equals_step_by_step(ort: OnnxBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids[:2])
    extra = torch.tensor([[5, 17, 42, 9], [8, 8, 100, 3]])
    _, cache_a = ort.prefill(tokens, mask)
    many = ort.decode(cache_a, extra, all_positions=True, return_hidden=True)
    assert many.logits.shape == (2, 4, 320) and many.hidden.shape == (2, 4, 64)
    _, cache_b = ort.prefill(tokens, mask)
    for j in range(extra.shape[1]):
        assert torch.allclose(many.logits[:, j], ort.decode(cache_b, extra[:, j]).logits, atol=ATOL)
    assert cache_a.length == cache_b.length == tokens.shape[1] + 4


def test_crop_then_redecode(ort: OnnxBackend, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    _, cache = ort.prefill(tokens, mask)
    width = cache.length
    seq = torch.tensor([[11, 12, 13]] * 3)
    first = ort.decode(cache, seq, all_positions=True).logits
    cache.crop(width + 1)
    assert cache.length == width + 1
    again = ort.decode(cache, seq[:, 1:], all_positions=True).logits
    assert torch.allclose(again, first[:, 1:], atol=ATOL)
    cache.crop(width)
    _, fresh = ort.prefill(tokens, mask)
    assert torch.allclose(ort.decode(cache, torch.tensor([40] * 3)).logits,
                          ort.decode(fresh, torch.tensor([40] * 3)).logits, atol=ATOL)
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(cache.length + 1)


def test_fork_and_select(ort: OnnxBackend, tiny: Any, ids: list[list[int]]) -> None:
    tokens, mask = _padded(ids)
    _, cache = ort.prefill(tokens, mask)
    other = cache.fork()
    ort.decode(other, torch.tensor([50, 60, 70]))  # diverges; must not touch ``cache``
    cache.select(torch.tensor([2, 0, 0, 1]))
    assert cache.batch_size == 4 and other.batch_size == 3
    out = ort.decode(cache, torch.tensor([9, 9, 9, 9])).logits
    _, ref_cache = tiny.backend.prefill(tokens, mask)
    ref_cache.select(torch.tensor([2, 0, 0, 1]))
    assert torch.allclose(out, tiny.backend.decode(ref_cache, torch.tensor([9, 9, 9, 9])).logits, atol=ATOL)
    out = ort.decode(cache, torch.tensor([1, 2, 3, 4])).logits
    assert not torch.allclose(out[1], out[2])  # expanded rows diverge independently


def test_decode_embeds_equals_decode(ort_tiny_embeds: Any, ids: list[list[int]]) -> None:
    backend = ort_tiny_embeds.backend
    tokens, mask = _padded(ids)
    nxt = torch.tensor([[5, 6], [7, 8], [9, 10]])
    _, by_ids = backend.prefill(tokens, mask)
    a = backend.decode(by_ids, nxt, all_positions=True, return_hidden=True)
    _, by_embeds = backend.prefill(tokens, mask)
    b = backend.decode_embeds(by_embeds, backend.input_embeddings()[nxt], all_positions=True, return_hidden=True)
    assert torch.allclose(a.logits, b.logits, atol=ATOL) and torch.allclose(a.hidden, b.hidden, atol=ATOL)
    assert backend.input_embeddings().shape == (320, 64)


def test_decode_embeds_needs_an_embeddings_graph(ort: OnnxBackend, ids: list[list[int]]) -> None:
    _, cache = ort.prefill(torch.tensor([ids[0]]))
    with pytest.raises(NotImplementedError, match="--inputs inputs_embeds"):
        ort.decode_embeds(cache, torch.zeros(1, 1, 64))


@pytest.mark.parametrize("strategy,options", [("greedy", {}), ("beam", {"num_beams": 3})])
def test_generation_is_token_identical_to_torch(ort_tiny: Any, tiny: Any, strategy: str,
                                                options: dict[str, Any]) -> None:
    ref = decodekit.generate(PROMPTS, model=tiny, strategy=strategy, options=options, max_new_tokens=16)
    ours = decodekit.generate(PROMPTS, model=ort_tiny, strategy=strategy, options=options, max_new_tokens=16)
    assert [g.token_ids for g in ours] == [g.token_ids for g in ref]
    assert all(len(g.token_ids) > 0 for g in ours)


def test_graph_not_matching_its_sidecar_names_the_differences(onnx_exports: dict[str, Path],
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(onnx_exports["ids"], bad)
    meta = json.loads((bad / SIDECAR).read_text())
    meta.update(num_layers=3, hidden_output=False)
    (bad / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(UserError) as info:
        OnnxBackend(bad)
    message = str(info.value)
    assert "missing inputs: past.2.key, past.2.value" in message
    assert "missing outputs: present.2.key, present.2.value" in message
    assert "unexpected outputs: hidden" in message
    meta.update(num_layers=2, hidden_output=True, dtype="float16")
    (bad / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"wrong dtype: past\.0\.key \(float32, expected float16\)"):
        OnnxBackend(bad)


def test_load_errors(tmp_path: Path, onnx_exports: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="holds no decodekit-onnx.json"):
        OnnxBackend(tmp_path)
    with pytest.raises(UserError, match="is not a directory"):
        decodekit.load(str(tmp_path / "missing"), backend="onnxruntime", cache=False)
    with pytest.raises(UserError, match="export it first"):
        decodekit.load(object(), backend="onnxruntime", cache=False)
    with pytest.raises(UserError, match="unknown execution provider 'tpu'; valid: cpu, cuda, tensorrt"):
        OnnxBackend(onnx_exports["ids"], OnnxOptions(providers=["tpu"]))
    with pytest.raises(UserError, match="at least one"):
        resolve_providers([], ["CPUExecutionProvider"])


def test_gpu_provider_missing_says_what_to_install() -> None:
    with pytest.raises(UserError, match=r"CUDAExecutionProvider is not available.*onnxruntime-gpu"):
        resolve_providers(["cuda"], ["CPUExecutionProvider"])
    assert resolve_providers(["CUDA", "cpu"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_export_argument_errors(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="inputs must be 'input_ids' or 'inputs_embeds'"):
        export_onnx(tiny, tmp_path, inputs="tokens")
    with pytest.raises(UserError, match="dtype must be one of float32, float16"):
        export_onnx(tiny, tmp_path, dtype="float64")
    with pytest.raises(UserError, match="tolerance must be positive"):
        export_onnx(tiny, tmp_path, tolerance=0)


def test_export_check_fails_above_tolerance(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"differs from PyTorch by up to .* \(tolerance 1e-12\)"):
        export_onnx(tiny, tmp_path / "strict", tolerance=1e-12)
    assert not (tmp_path / "strict" / SIDECAR).exists()


def test_export_command_from_a_model_directory(tiny: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from decodekit.cli import main

    tiny.backend.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    status = main(["export", "onnx", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "graph"),
                   "--no-hidden"])
    assert status == 0
    out = capsys.readouterr().out
    assert "check against PyTorch: max abs diff" in out and "2 layers" in out
    backend = OnnxBackend(tmp_path / "graph", OnnxOptions(threads=1, optimization="basic"))
    assert Capability.HIDDEN_STATES not in backend.capabilities
    out, _ = backend.prefill(torch.tensor([[5, 6, 7]]))
    ref, _ = tiny.backend.prefill(torch.tensor([[5, 6, 7]]))
    assert torch.allclose(out.logits, ref.logits, atol=ATOL)
    with pytest.raises(NotImplementedError, match="without the hidden"):
        backend.prefill(torch.tensor([[5, 6, 7]]), return_hidden=True)
    assert main(["export", "onnx", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_float16_export(tiny: Any, tmp_path: Path) -> None:
    result = export_onnx(tiny, tmp_path, dtype="float16")
    assert result.meta["dtype"] == "float16" and result.max_abs_diff < 0.1
    backend = OnnxBackend(tmp_path, OnnxOptions(threads=1))
    out, cache = backend.prefill(torch.tensor([[5, 6, 7]]))
    assert out.logits.dtype == torch.float32 and cache.past[0].dtype == torch.float16
    ref, _ = tiny.backend.prefill(torch.tensor([[5, 6, 7]]))
    assert torch.allclose(out.logits, ref.logits, atol=0.1)


@pytest.mark.e2e
def test_default_model_greedy_and_beam_match_torch() -> None:
    """The default model in float32: exported once into the cache, token-identical to torch."""
    ours = decodekit.load("default", backend="onnxruntime")
    ref = decodekit.load("default")
    prompts = ["The history of the printing press begins", "def fib(n):"]
    for strategy, options in (("greedy", {}), ("beam", {"num_beams": 3})):
        a = decodekit.generate(prompts, model=ref, strategy=strategy, options=options, max_new_tokens=24)
        b = decodekit.generate(prompts, model=ours, strategy=strategy, options=options, max_new_tokens=24)
        assert [g.token_ids for g in b] == [g.token_ids for g in a], strategy
    assert ours.backend.meta["check"]["max_abs_diff"] < 1e-2


def _has_cuda_provider() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_provider(), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_cuda_provider_matches_torch(onnx_exports: dict[str, Path], tiny: Any) -> None:
    model = decodekit.load(str(onnx_exports["embeds"]), backend="onnxruntime", providers=["cuda"], cache=False)
    assert model.backend.device.type == "cuda"
    for strategy, options in (("greedy", {}), ("beam", {"num_beams": 3})):
        ref = decodekit.generate(PROMPTS, model=tiny, strategy=strategy, options=options, max_new_tokens=16)
        ours = decodekit.generate(PROMPTS, model=model, strategy=strategy, options=options, max_new_tokens=16)
        assert [g.token_ids for g in ours] == [g.token_ids for g in ref], strategy
