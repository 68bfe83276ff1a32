"""The tensorrt backend: profile computation, argument validation and the errors raised where
TensorRT or a GPU is missing. Engine building and parity run only on a CUDA machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

import decodekit
from decodekit.backends.tensorrt import TensorRTBackend, build_engine, compute_profile
from decodekit.errors import UserError

HAS_GPU = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
GPU_REASON = "needs a CUDA GPU and the tensorrt package (pip install 'decodekit[tensorrt]')"

META = {"input_kind": "input_ids", "dtype": "float16", "num_layers": 1, "num_key_value_heads": 2,
        "head_dim": 8, "hidden_size": 32, "vocab_size": 50, "hidden_output": True, "max_context": 2048}


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    from decodekit.backends._export_onnx import io_spec

    inputs, outputs = io_spec(META)
    return {**META, "inputs": inputs, "outputs": outputs}


def test_profile_covers_batch_sequence_and_past(meta: dict[str, Any]) -> None:
    profile = compute_profile(meta, max_batch=4, max_seq=128, max_past=512)
    assert set(profile) == {"input_ids", "attention_mask", "position_ids", "past.0.key", "past.0.value"}
    assert profile["input_ids"] == ((1, 1), (4, 1), (4, 128))
    assert profile["position_ids"] == profile["input_ids"]
    assert profile["attention_mask"] == ((1, 1), (4, 257), (4, 640))  # past + seq
    assert profile["past.0.key"] == ((1, 2, 0, 8), (4, 2, 256, 8), (4, 2, 512, 8))
    custom = compute_profile(meta, max_batch=8, max_seq=16, max_past=64, opt_batch=2, opt_seq=4, opt_past=10)
    assert custom["past.0.value"][1] == (2, 2, 10, 8) and custom["attention_mask"][1] == (2, 14)


def test_profile_for_an_embeddings_graph() -> None:
    from decodekit.backends._export_onnx import io_spec

    spec = {**META, "input_kind": "inputs_embeds"}
    inputs, _ = io_spec(spec)
    profile = compute_profile({**spec, "inputs": inputs}, max_batch=2, max_seq=8, max_past=8)
    assert profile["inputs_embeds"] == ((1, 1, 32), (2, 1, 32), (2, 8, 32))


@pytest.mark.parametrize("kwargs,message", [
    ({"max_batch": 0}, "max_batch must be a positive integer, got 0"),
    ({"max_seq": -3}, "max_seq must be a positive integer"),
    ({"max_past": -1}, "max_past must be a non-negative integer"),
    ({"opt_batch": 9}, r"opt_batch \(9\) must not exceed max_batch \(4\)"),
    ({"opt_past": 100}, r"opt_past \(100\) must not exceed max_past \(64\)"),
    ({"max_past": 2040}, r"max_past \+ max_seq \(2056\) exceeds the model's context of 2048"),
])
def test_profile_validation(meta: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    args = {"max_batch": 4, "max_seq": 16, "max_past": 64, **kwargs}
    with pytest.raises(UserError, match=message):
        compute_profile(meta, **args)


def test_export_command_validates_before_building(tmp_path: Path) -> None:
    from decodekit.cli import main

    assert main(["export", "tensorrt", "--onnx", str(tmp_path), "--out", str(tmp_path / "e.engine")]) == 2
    with pytest.raises(UserError, match="holds no decodekit-onnx.json"):
        build_engine(tmp_path, tmp_path / "e.engine")


def test_export_rejects_bad_ranges(onnx_exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exceeds the model's context of 512"):
        build_engine(onnx_exports["ids"], tmp_path / "e.engine")  # defaults: 512 + 1024 positions
    with pytest.raises(UserError, match="workspace_gib must be positive"):
        build_engine(onnx_exports["ids"], tmp_path / "e.engine", max_seq=64, max_past=128, workspace_gib=0)


@pytest.mark.skipif(HAS_GPU, reason="checks the errors raised without a GPU")
def test_without_gpu_the_backend_says_what_is_missing(onnx_exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="the tensorrt backend needs .*CUDA GPU") as info:
        decodekit.load(str(tmp_path / "model.engine"), backend="tensorrt", cache=False)
    if importlib.util.find_spec("tensorrt") is None:
        assert "the 'tensorrt' package (pip install 'decodekit[tensorrt]')" in str(info.value)
    assert "use backend 'onnxruntime' or 'torch'" in str(info.value)
    with pytest.raises(UserError, match="building a TensorRT engine needs .*CUDA GPU"):
        build_engine(onnx_exports["ids"], tmp_path / "e.engine", max_seq=64, max_past=128)


def test_load_options_are_validated() -> None:
    from decodekit.errors import OptionsError

    with pytest.raises(OptionsError, match="providers"):
        decodekit.load("x.engine", backend="tensorrt", providers=["cuda"], cache=False)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason=GPU_REASON)
def test_engine_matches_torch_on_gpu(tiny: Any, onnx_exports: dict[str, Path], tmp_path: Path) -> None:
    engine = build_engine(onnx_exports["embeds"], tmp_path / "tiny.engine", max_batch=8, max_seq=64,
                          max_past=192)
    model = decodekit.load(str(engine), backend="tensorrt", cache=False)
    assert isinstance(model.backend, TensorRTBackend)
    prompts = ["The quick brown", "SELECT id", "def add(a, b):\n"]
    for strategy, options in (("greedy", {}), ("beam", {"num_beams": 3}), ("contrastive", {}),
                              ("superposed", {"k": 2, "ngram": None, "alpha": 0.0})):
        ref = decodekit.generate(prompts, model=tiny, strategy=strategy, options=options, max_new_tokens=16)
        ours = decodekit.generate(prompts, model=model, strategy=strategy, options=options, max_new_tokens=16)
        assert [g.token_ids for g in ours] == [g.token_ids for g in ref], strategy
