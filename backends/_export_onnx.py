"""Export a transformers causal LM to an ONNX decoder graph with explicit key/value inputs.

The graph computes one forward pass over ``seq`` new positions of ``batch`` rows, given the
keys and values of ``past`` earlier positions:

========================  ==========================================  =========
name                      shape                                       dtype
========================  ==========================================  =========
``input_ids``             ``[batch, seq]`` (or ``inputs_embeds``      int64
                          ``[batch, seq, hidden]``, model dtype)
``attention_mask``        ``[batch, past + seq]``                     int64
``position_ids``          ``[batch, seq]``                            int64
``past.{i}.key|value``    ``[batch, kv_heads, past, head_dim]``       model dtype
``logits`` (out)          ``[batch, seq, vocab]``                     model dtype
``hidden`` (out, opt.)    ``[batch, seq, hidden]`` (LM-head input)    model dtype
``present.{i}.key|value`` ``[batch, kv_heads, past + seq, head_dim]`` model dtype
========================  ==========================================  =========

The exporter is torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``: it traces
the decoder once and yields one shape-generic graph (any batch, any number of new positions, an
empty past at prefill). After export the graph runs in ONNX Runtime on random inputs (a prefill
with left padding and a decode step on a random past) and is compared with PyTorch; the largest
absolute difference is recorded in the sidecar file, and export fails above ``tolerance``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SIDECAR = "decodekit-onnx.json"
GRAPH = "model.onnx"
EMBEDDINGS = "embeddings.npy"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: Default largest accepted absolute difference to PyTorch at the export-time check, per dtype.
#: Logits of a 30-layer float32 model differ by about 1e-3 between two correct implementations;
#: a faulty translation shows up as differences of order one.
TOLERANCE = {"float32": 1e-2, "float16": 2e-1}


def io_spec(meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Expected inputs and outputs (name, dtype, symbolic shape) of a graph described by ``meta``.

    Parameters
    ----------
    meta
        The sidecar fields ``input_kind``, ``dtype``, ``num_layers``, ``num_key_value_heads``,
        ``head_dim``, ``hidden_size``, ``vocab_size`` and ``hidden_output``.

    Returns
    -------
    (inputs, outputs)
        Lists of ``{"name", "dtype", "shape"}``; symbolic dimensions are the strings
        ``batch``, ``seq``, ``past`` and ``total`` (``past + seq``).
    """
    dt, kv, hd = meta["dtype"], meta["num_key_value_heads"], meta["head_dim"]
    if meta["input_kind"] == "inputs_embeds":
        first = {"name": "inputs_embeds", "dtype": dt, "shape": ["batch", "seq", meta["hidden_size"]]}
    else:
        first = {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}
    inputs = [first, {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total"]},
              {"name": "position_ids", "dtype": "int64", "shape": ["batch", "seq"]}]
    outputs = [{"name": "logits", "dtype": dt, "shape": ["batch", "seq", meta["vocab_size"]]}]
    if meta["hidden_output"]:
        outputs.append({"name": "hidden", "dtype": dt, "shape": ["batch", "seq", meta["hidden_size"]]})
    for i in range(meta["num_layers"]):
        for part in ("key", "value"):
            inputs.append({"name": f"past.{i}.{part}", "dtype": dt, "shape": ["batch", kv, "past", hd]})
            outputs.append({"name": f"present.{i}.{part}", "dtype": dt, "shape": ["batch", kv, "total", hd]})
    return inputs, outputs


class DecoderGraph(torch.nn.Module):
    """The traced module: explicit tensors in, logits / hidden state / presents out."""

    def __init__(self, model: Any, layers: int, embeds: bool, hidden: bool) -> None:
        super().__init__()
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.layers, self.embeds, self.hidden = layers, embeds, hidden

    def forward(self, first: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        key = "inputs_embeds" if self.embeds else "input_ids"
        out = self.decoder(**{key: first}, attention_mask=attention_mask, position_ids=position_ids,
                           past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state
        results = [self.head(hidden)] + ([hidden] if self.hidden else [])
        for layer in cache.layers[:self.layers]:
            results += [layer.keys, layer.values]
        return tuple(results)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes
    ----------
    directory
        The output directory.
    meta
        The sidecar contents.
    max_abs_diff
        Largest absolute difference between ONNX Runtime and PyTorch over the check inputs.
    """

    directory: Path
    meta: dict[str, Any]
    max_abs_diff: float


def _torch_backend(model: Any) -> Any:
    from decodekit.backends.pytorch import TorchBackend, TorchOptions

    backend = getattr(model, "backend", model)  # a decodekit Model or a backend
    if isinstance(backend, TorchBackend):
        return backend
    return TorchBackend.load(model, TorchOptions())


def _meta(backend: Any, dtype: str, embeds: bool, hidden: bool) -> dict[str, Any]:
    config = backend.model.config
    heads = int(config.num_attention_heads)
    meta: dict[str, Any] = {
        "format": "decodekit-onnx", "version": FORMAT_VERSION, "model_id": backend.model_id,
        "graph": GRAPH, "input_kind": "inputs_embeds" if embeds else "input_ids",
        "hidden_output": hidden, "dtype": dtype,
        "num_layers": int(config.num_hidden_layers), "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(config, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        "hidden_size": int(config.hidden_size), "vocab_size": int(backend.vocab_size),
        "eos_token_ids": list(backend.eos_token_ids), "pad_token_id": backend.pad_token_id,
        "bos_token_id": backend.bos_token_id, "max_context": backend.max_context,
        "embeddings": EMBEDDINGS if embeds else None, "tokenizer": ".",
        "parameter_count": backend.parameter_count(),
    }
    meta["inputs"], meta["outputs"] = io_spec(meta)
    return meta


def _check_inputs(meta: dict[str, Any], seed: int,
                  shapes: tuple[tuple[int, int, int], ...] = ((2, 5, 0), (3, 1, 6))) -> list[list[torch.Tensor]]:
    """Random inputs for ``(rows, seq, past)`` shapes; by default a left-padded prefill (empty
    past) and a decode step on a random past."""
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[meta["dtype"]]
    kv, hd, layers = meta["num_key_value_heads"], meta["head_dim"], meta["num_layers"]
    cases = []
    for rows, seq, past in shapes:
        if meta["input_kind"] == "inputs_embeds":
            first = torch.randn(rows, seq, meta["hidden_size"], generator=gen).to(dt) * 0.05
        else:
            first = torch.randint(0, meta["vocab_size"], (rows, seq), generator=gen)
        mask = torch.ones(rows, past + seq, dtype=torch.long)
        mask[0, :2] = 0  # left padding in the first row
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        caches = [torch.randn(rows, kv, past, hd, generator=gen).to(dt) for _ in range(2 * layers)]
        cases.append([first, mask, positions, *caches])
    return cases


def check_graph(directory: Path, module: DecoderGraph, meta: dict[str, Any], seed: int = 0) -> float:
    """Run the exported graph in ONNX Runtime and in PyTorch on random inputs.

    Returns
    -------
    float
        The largest absolute difference over all outputs (logits, hidden state, presents).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory / meta["graph"]), providers=["CPUExecutionProvider"])
    names = [spec["name"] for spec in meta["inputs"]]
    worst = 0.0
    for case in _check_inputs(meta, seed):
        got = session.run(None, {n: t.numpy() for n, t in zip(names, case)})
        with torch.no_grad():
            expected = module(*case)
        for ours, theirs in zip(got, expected):
            if ours.size:
                diff = (torch.from_numpy(ours).float() - theirs.float()).abs().max()
                worst = max(worst, float(diff))
    return worst


def export_onnx(model: Any, out: str | Path, *, inputs: str = "input_ids", hidden: bool = True,
                dtype: str = "float32", opset: int = 17, tolerance: float | None = None,
                seed: int = 0) -> ExportResult:
    """Export ``model`` to ``out``: graph, sidecar JSON, tokenizer (and embeddings).

    Parameters
    ----------
    model
        What the torch backend loads (``"default"``, a model directory, a ``.gguf`` file, a Hub
        id), a torch-backend :class:`decodekit.Model`, or a ``TorchBackend``.
    out
        Output directory (created; existing files of an earlier export are replaced).
    inputs
        ``"input_ids"`` (token ids in) or ``"inputs_embeds"`` (input embeddings in; the
        embedding matrix is saved beside the graph, enabling the ``input_embeds`` capability).
    hidden
        Also output the final hidden state (capability ``hidden_states``).
    dtype
        ``"float32"`` or ``"float16"`` (weights and activations of the graph).
    opset
        ONNX opset version.
    tolerance
        Largest accepted absolute difference to PyTorch at the export-time check (default:
        :data:`TOLERANCE` of ``dtype``).
    seed
        Seed of the check's random inputs.

    Raises
    ------
    UserError
        Bad arguments, or the exported graph disagrees with PyTorch beyond ``tolerance``.
    """
    import numpy as np

    from decodekit.errors import MissingDependencyError, UserError

    if inputs not in ("input_ids", "inputs_embeds"):
        raise UserError(f"inputs must be 'input_ids' or 'inputs_embeds', got {inputs!r}")
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if tolerance is None:
        tolerance = TOLERANCE[dtype]
    if not tolerance > 0:
        raise UserError(f"tolerance must be positive, got {tolerance!r}")
    for package in ("onnx", "onnxruntime"):
        import importlib.util

        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, extra="onnx", feature="exporting to ONNX")
    backend = _torch_backend(model)
    directory = Path(out).expanduser()
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--out {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    embeds = inputs == "inputs_embeds"
    meta = _meta(backend, dtype, embeds, hidden)
    torch_model = backend.model
    if torch_model.dtype != DTYPES[dtype]:
        import copy

        torch_model = copy.deepcopy(torch_model).to(DTYPES[dtype])
    module = DecoderGraph(torch_model, meta["num_layers"], embeds, hidden).eval()
    # trace with a non-empty past and several new positions: an empty past or a single position
    # would take shortcuts in the model code that the trace would bake into the graph
    sample = _check_inputs(meta, seed + 1, ((2, 3, 4),))[0]
    in_names = [spec["name"] for spec in meta["inputs"]]
    out_names = [spec["name"] for spec in meta["outputs"]]
    axes = {spec["name"]: {i: d for i, d in enumerate(spec["shape"]) if isinstance(d, str)}
            for spec in meta["inputs"] + meta["outputs"]}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(module, tuple(sample), str(directory / GRAPH), input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    if embeds:
        weight = torch_model.get_input_embeddings().weight.detach()
        np.save(directory / EMBEDDINGS, weight.to(DTYPES[dtype]).numpy())
    worst = check_graph(directory, module, meta, seed)
    meta["check"] = {"max_abs_diff": worst, "tolerance": tolerance, "seed": seed}
    meta["exporter"] = {"torch": torch.__version__, "opset": opset, "dynamo": False}
    if worst > tolerance:
        raise UserError(f"the exported graph differs from PyTorch by up to {worst:.3g} (tolerance "
                        f"{tolerance:g}); the model may use operations the exporter does not "
                        f"translate faithfully. Files left in {directory} for inspection")
    backend.tokenizer.save_pretrained(str(directory))
    (directory / SIDECAR).write_text(json.dumps(meta, indent=2) + "\n")
    return ExportResult(directory, meta, worst)
