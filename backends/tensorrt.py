"""The TensorRT backend: an engine built from an exported ONNX decoder graph (CUDA only).

``decodekit export tensorrt --onnx DIR --out ENGINE`` parses the graph written by ``decodekit
export onnx`` with TensorRT's ONNX parser and builds a serialized engine with one optimization
profile covering the batch, new-position and past-length ranges given on the command line. The
network is created strongly typed where TensorRT supports it, so precision comes from the ONNX
graph (export with ``--dtype float16`` for a half-precision engine). Beside ``ENGINE`` it
writes ``ENGINE.json`` (the ONNX sidecar plus the profile) and the tokenizer in
``ENGINE.tokenizer/``.

Registered as backend ``tensorrt``: ``load(ENGINE, backend="tensorrt")``. The engine runs on
torch CUDA tensors bound by address (``set_tensor_address`` / ``execute_async_v3`` on the
current torch stream); the cache is the same :class:`~decodekit.backends.onnxruntime.TensorCache`
as the ONNX Runtime backend's, on the GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from decodekit.backends._export_onnx import SIDECAR
from decodekit.backends.onnxruntime import ExportedDecoder, check_io, read_sidecar
from decodekit.errors import MissingDependencyError, UserError
from decodekit.hookspecs import hookimpl
from decodekit.options import Options

Shape = tuple[int, ...]


class TensorRTOptions(Options):
    """Load options of the ``tensorrt`` backend."""

    device: str = Field("cuda:0", description="CUDA device the engine runs on")


def _dim(value: Any, dims: dict[str, tuple[int, int, int]], which: int) -> int:
    if isinstance(value, int):
        return value
    if value == "total":
        return dims["past"][which] + dims["seq"][which]
    return dims[value][which]


def compute_profile(meta: dict[str, Any], *, max_batch: int, max_seq: int, max_past: int,
                    opt_batch: int | None = None, opt_seq: int = 1,
                    opt_past: int | None = None) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Minimum, optimum and maximum shape of every graph input for one optimization profile.

    Parameters
    ----------
    meta
        The ONNX sidecar (see :func:`decodekit.backends._export_onnx.io_spec`).
    max_batch, max_seq, max_past
        Largest number of rows, of new positions per forward pass (the longest prompt) and of
        cached positions. ``past + seq`` must stay within the model's context.
    opt_batch, opt_seq, opt_past
        The shapes TensorRT tunes for: by default the largest batch, one new position (a
        decoding step) and half the largest past.

    Returns
    -------
    dict
        ``{input name: (min, opt, max)}``.

    Raises
    ------
    UserError
        A range that is empty, not positive, or beyond the model's context.
    """
    opt_batch = max_batch if opt_batch is None else opt_batch
    opt_past = max_past // 2 if opt_past is None else opt_past
    for name, value in (("max_batch", max_batch), ("max_seq", max_seq), ("opt_batch", opt_batch),
                        ("opt_seq", opt_seq)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("max_past", max_past), ("opt_past", opt_past)):
        if not isinstance(value, int) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")
    for name, opt, high in (("batch", opt_batch, max_batch), ("seq", opt_seq, max_seq),
                            ("past", opt_past, max_past)):
        if opt > high:
            raise UserError(f"opt_{name} ({opt}) must not exceed max_{name} ({high})")
    context = meta.get("max_context")
    if context and max_past + max_seq > context:
        raise UserError(f"max_past + max_seq ({max_past + max_seq}) exceeds the model's context "
                        f"of {context} positions")
    dims = {"batch": (1, opt_batch, max_batch), "seq": (1, opt_seq, max_seq), "past": (0, opt_past, max_past)}
    return {spec["name"]: tuple(tuple(_dim(d, dims, k) for d in spec["shape"]) for k in range(3))  # type: ignore[misc]
            for spec in meta["inputs"]}


def require_tensorrt(feature: str = "the tensorrt backend") -> Any:
    """Import TensorRT, checking that a CUDA GPU is visible to torch.

    Raises
    ------
    UserError
        Saying what is missing: the ``tensorrt`` package, a CUDA GPU, or both.
    """
    import importlib.util

    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = torch.cuda.is_available()
    if has_trt and has_gpu:
        import tensorrt as trt

        return trt
    if has_gpu:
        raise MissingDependencyError("tensorrt", extra="tensorrt", feature=feature)
    gpu = f"a CUDA GPU visible to torch (this torch {torch.__version__} sees none)"
    missing = gpu if has_trt else f"the 'tensorrt' package (pip install 'decodekit[tensorrt]') and {gpu}"
    raise UserError(f"{feature} needs {missing}; on CPU use backend 'onnxruntime' or 'torch'")


def build_engine(onnx_dir: str | Path, out: str | Path, *, max_batch: int = 8, max_seq: int = 512,
                 max_past: int = 1024, opt_batch: int | None = None, opt_seq: int = 1,
                 opt_past: int | None = None, workspace_gib: float = 4.0) -> Path:
    """Build a TensorRT engine from an exported ONNX directory (see :func:`compute_profile`).

    Returns
    -------
    Path
        The engine file; ``ENGINE.json`` and ``ENGINE.tokenizer/`` are written beside it.
    """
    onnx_dir = Path(onnx_dir).expanduser()
    meta = read_sidecar(onnx_dir)
    profile_shapes = compute_profile(meta, max_batch=max_batch, max_seq=max_seq, max_past=max_past,
                                     opt_batch=opt_batch, opt_seq=opt_seq, opt_past=opt_past)
    if not workspace_gib > 0:
        raise UserError(f"workspace_gib must be positive, got {workspace_gib!r}")
    engine_path = Path(out).expanduser()
    if engine_path.is_dir():
        raise UserError(f"--out {engine_path} is a directory; give the engine file to write")
    trt = require_tensorrt("building a TensorRT engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_dir / meta["graph"])):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_dir / meta['graph']}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (see its log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    sidecar = {**meta, "engine": engine_path.name, "tokenizer": f"{engine_path.name}.tokenizer",
               "profile": {name: [list(s) for s in shapes] for name, shapes in profile_shapes.items()}}
    Path(f"{engine_path}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    tokenizer_dir = Path(f"{engine_path}.tokenizer")
    tokenizer_dir.mkdir(exist_ok=True)
    for item in onnx_dir.iterdir():
        tokenizer_file = item.suffix in (".json", ".jinja", ".txt", ".model") and item.name != SIDECAR
        if item.is_file() and tokenizer_file:
            shutil.copy2(item, tokenizer_dir / item.name)
    return engine_path


class TensorRTBackend(ExportedDecoder):
    """A TensorRT engine built by ``decodekit export tensorrt``, run on torch CUDA tensors.

    Parameters
    ----------
    engine
        The engine file (``ENGINE.json`` must be beside it).
    options
        The CUDA device.
    tokenizer
        Use this tokenizer instead of the one saved with the engine.
    """

    name = "tensorrt"
    Options = TensorRTOptions

    def __init__(self, engine: str | Path, options: TensorRTOptions | None = None, tokenizer: Any = None) -> None:
        options = options or TensorRTOptions()
        engine_path = Path(engine).expanduser()
        trt = require_tensorrt()
        sidecar = Path(f"{engine_path}.json")
        if not engine_path.is_file() or not sidecar.is_file():
            raise UserError(f"{engine_path} and {sidecar} must both exist: build them with "
                            "'decodekit export tensorrt --onnx DIR --out ENGINE'")
        meta = json.loads(sidecar.read_text())
        self.device = torch.device(options.device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {engine_path} (built by another TensorRT version "
                            "or for another GPU?); build it again on this machine")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        kinds = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.INT64: "int64",
                 trt.DataType.INT32: "int32"}
        types = {n: kinds.get(self.engine.get_tensor_dtype(n), str(self.engine.get_tensor_dtype(n))) for n in names}
        check_io({n: t for n, t in types.items() if is_input[n]},
                 {n: t for n, t in types.items() if not is_input[n]}, meta, f"engine {engine_path}")
        self.context = self.engine.create_execution_context()
        self.profile = meta.get("profile", {})
        self._setup(engine_path.parent, meta, tokenizer)
        self._in_names = [spec["name"] for spec in meta["inputs"]]
        self._out_names = [spec["name"] for spec in meta["outputs"]]

    def _run(self, first: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
             past: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        rows, n, total = first.shape[0], first.shape[1], mask.shape[1]
        limits = self.profile.get("attention_mask")
        if limits and (rows > limits[2][0] or total > limits[2][1] or n > self.profile["position_ids"][2][1]):
            raise UserError(f"{rows} rows x {n} new positions over {total} total exceed the engine's "
                            f"profile (max batch {limits[2][0]}, max positions {limits[2][1]}); "
                            "build the engine with larger --max-batch/--max-seq/--max-past")
        meta = self.meta
        inputs = [first.contiguous(), mask.contiguous(), positions.contiguous(), *past]
        for name, tensor in zip(self._in_names, inputs):
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        logits = torch.empty(rows, n, meta["vocab_size"], dtype=self.dtype, device=self.device)
        outputs = [logits]
        hidden = None
        if meta["hidden_output"]:
            hidden = torch.empty(rows, n, meta["hidden_size"], dtype=self.dtype, device=self.device)
            outputs.append(hidden)
        shape = (rows, meta["num_key_value_heads"], total, meta["head_dim"])
        present = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in past]
        for name, tensor in zip(self._out_names, outputs + present):
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT failed to execute the engine")
        return logits, hidden, present


def setup_export_tensorrt(parser: argparse.ArgumentParser) -> Any:
    """Arguments of ``decodekit export tensorrt``; returns the function that runs it."""
    parser.add_argument("--onnx", required=True, metavar="DIR", help="directory from 'decodekit export onnx'")
    parser.add_argument("--out", required=True, metavar="ENGINE", help="engine file to write")
    parser.add_argument("--max-batch", type=int, default=8, help="most rows per forward pass (default 8)")
    parser.add_argument("--max-seq", type=int, default=512, help="most new positions per pass (default 512)")
    parser.add_argument("--max-past", type=int, default=1024, help="most cached positions (default 1024)")
    parser.add_argument("--opt-batch", type=int, default=None, help="batch to tune for (default: max)")
    parser.add_argument("--opt-past", type=int, default=None, help="past length to tune for (default: max/2)")
    parser.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace (default 4)")

    def run(args: argparse.Namespace) -> int:
        path = build_engine(args.onnx, args.out, max_batch=args.max_batch, max_seq=args.max_seq,
                            max_past=args.max_past, opt_batch=args.opt_batch, opt_past=args.opt_past,
                            workspace_gib=args.workspace_gib)
        print(f"built TensorRT engine {path} (sidecar {path}.json)")
        return 0

    return run


@hookimpl
def decodekit_register_backends(register: Any) -> None:
    register(TensorRTBackend)


@hookimpl
def decodekit_resolve_model(reference: Any, backend: str, options: dict[str, Any]) -> TensorRTBackend | None:
    if backend != TensorRTBackend.name:
        return None
    parsed, tokenizer = TensorRTBackend.parse_load_options(options)
    if not isinstance(reference, (str, Path)):
        raise UserError(f"the tensorrt backend loads an engine file, not a {type(reference).__name__}")
    return TensorRTBackend(reference, parsed, tokenizer)
