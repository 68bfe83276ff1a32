"""The ONNX Runtime backend: a decoder graph exported by ``decodekit export onnx``.

Registered as backend ``onnxruntime``; ``load(DIR, backend="onnxruntime")`` loads an exported
directory (graph, ``decodekit-onnx.json`` sidecar, tokenizer). ``"default"`` exports the
default model once into decodekit's cache directory and loads that.

The graph runs in an ``InferenceSession`` through IO binding: inputs and outputs are torch
tensors bound by address, so ONNX Runtime reads the cache and writes logits, the hidden state
and the new keys/values without copies. The cache (:class:`TensorCache`) keeps these tensors
and does its row operations with torch. Providers: CPU by default; ``providers=["cuda"]`` or
``["tensorrt", "cuda"]`` with ``onnxruntime-gpu`` on a CUDA machine.

Also registers the ``decodekit export`` command (subcommands ``onnx`` and ``tensorrt``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from decodekit.backend import Backend, Capability, KVCache, StepOutput
from decodekit.errors import InputError, MissingDependencyError, UserError
from decodekit.hookspecs import hookimpl
from decodekit.options import Options

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OnnxOptions(Options):
    """Load options of the ``onnxruntime`` backend."""

    providers: list[str] = Field(["cpu"], description="execution providers in priority order: "
                                 "cpu, cuda, tensorrt (or full ONNX Runtime provider names)")
    device_id: int = Field(0, ge=0, description="GPU index for the cuda/tensorrt providers")
    threads: int | None = Field(None, ge=1, description="intra-op threads (CPU provider)")
    optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimization level")


class TensorCache(KVCache):
    """Keys/values as torch tensors ``[rows, kv_heads, length, head_dim]`` per layer, plus the
    attention mask and the next position of every row."""

    __slots__ = ("mask", "next_pos", "past")

    def __init__(self, past: list[torch.Tensor], mask: torch.Tensor, next_pos: torch.Tensor) -> None:
        self.past = past
        self.mask = mask
        self.next_pos = next_pos

    @property
    def batch_size(self) -> int:
        return int(self.next_pos.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def select(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.mask.device, torch.long)
        self.past = [p.index_select(0, rows) for p in self.past]
        self.mask = self.mask.index_select(0, rows)
        self.next_pos = self.next_pos.index_select(0, rows)

    def fork(self) -> TensorCache:
        return TensorCache([p.clone() for p in self.past], self.mask.clone(), self.next_pos.clone())

    def crop(self, length: int) -> None:
        if length < 0 or length > self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        if length == self.length:
            return
        self.next_pos = self.next_pos - self.mask[:, length:].sum(dim=1)
        self.mask = self.mask[:, :length].contiguous()
        self.past = [p[:, :, :length].contiguous() for p in self.past]


def read_sidecar(directory: Path) -> dict[str, Any]:
    """The sidecar of an exported directory, with a clear error when it is not one."""
    from decodekit.backends._export_onnx import FORMAT_VERSION, SIDECAR

    path = directory / SIDECAR
    if not path.is_file():
        raise UserError(f"{directory} holds no {SIDECAR}: not a directory written by "
                        "'decodekit export onnx --model MODEL --out DIR'")
    meta = json.loads(path.read_text())
    if meta.get("format") != "decodekit-onnx" or meta.get("version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a decodekit ONNX sidecar of version {FORMAT_VERSION}; "
                        "export the model again")
    return meta


def check_io(found_inputs: dict[str, str], found_outputs: dict[str, str], meta: dict[str, Any],
             source: str) -> None:
    """Compare a graph's inputs and outputs (name -> dtype) with what the sidecar promises.

    Raises
    ------
    UserError
        Naming every missing, unexpected or mistyped input and output.
    """
    from decodekit.backends._export_onnx import io_spec

    problems = []
    for kind, found, expected in (("input", found_inputs, io_spec(meta)[0]),
                                  ("output", found_outputs, io_spec(meta)[1])):
        want = {spec["name"]: spec["dtype"] for spec in expected}
        missing = [n for n in want if n not in found]
        extra = [n for n in found if n not in want]
        wrong = [f"{n} ({found[n]}, expected {want[n]})" for n in want if n in found and found[n] != want[n]]
        if missing:
            problems.append(f"missing {kind}s: {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected {kind}s: {', '.join(extra)}")
        if wrong:
            problems.append(f"{kind}s with the wrong dtype: {', '.join(wrong)}")
    if problems:
        raise UserError(f"{source} does not match its sidecar: {'; '.join(problems)}")


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bfloat16)": "bfloat16"}
_TORCH = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


class ExportedDecoder(Backend):
    """Shared logic of backends that run an exported decoder graph on torch tensors.

    Subclasses set up ``self.meta`` (the sidecar), ``self.device`` and implement :meth:`_run`.
    """

    capabilities = frozenset({Capability.MULTI_TOKEN, Capability.CACHE_OPS, Capability.HIDDEN_STATES,
                              Capability.INPUT_EMBEDS})
    meta: dict[str, Any]
    device: torch.device
    embeddings: torch.Tensor | None

    def _setup(self, directory: Path, meta: dict[str, Any], tokenizer: Any) -> None:
        self.meta = meta
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(directory / meta.get("tokenizer", ".")))
        self.tokenizer = tokenizer
        self.model_id = str(meta.get("model_id") or directory)
        self.vocab_size = int(meta["vocab_size"])
        self.eos_token_ids = tuple(meta["eos_token_ids"])
        self.pad_token_id = int(meta["pad_token_id"])
        self.bos_token_id = meta.get("bos_token_id")
        self.max_context = meta.get("max_context")
        self.dtype = _TORCH[meta["dtype"]]
        self.embeds = meta["input_kind"] == "inputs_embeds"
        caps = {Capability.MULTI_TOKEN, Capability.CACHE_OPS}
        if meta["hidden_output"]:
            caps.add(Capability.HIDDEN_STATES)
        self.embeddings = None
        if self.embeds:
            import numpy as np

            caps.add(Capability.INPUT_EMBEDS)
            self.embeddings = torch.from_numpy(np.load(directory / meta["embeddings"])).to(self.device)
        # per instance: what this graph was exported with (the class lists what exports can have)
        self.capabilities = frozenset(caps)  # type: ignore[misc]

    def _run(self, first: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
             past: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """One forward pass; returns logits ``[rows, n, vocab]``, the hidden state (or None)
        and the new keys/values."""
        raise NotImplementedError

    def _step(self, cache: TensorCache, first: torch.Tensor, return_hidden: bool, all_positions: bool) -> StepOutput:
        n = first.shape[1]
        positions = cache.next_pos[:, None] + torch.arange(n, device=self.device)
        mask = torch.cat([cache.mask, cache.mask.new_ones(cache.mask.shape[0], n)], dim=1)
        logits, hidden, present = self._run(first, mask, positions, cache.past)
        cache.past, cache.mask, cache.next_pos = present, mask, cache.next_pos + n
        return self._output(logits, hidden, return_hidden, all_positions)

    def _output(self, logits: torch.Tensor, hidden: torch.Tensor | None, return_hidden: bool | str,
                all_positions: bool) -> StepOutput:
        if return_hidden and hidden is None:
            raise NotImplementedError(f"the graph of {self.model_id!r} was exported without the hidden "
                                      "state output; export again without --no-hidden")
        if not all_positions:
            logits = logits[:, -1]
            if hidden is not None and return_hidden != "all":
                hidden = hidden[:, -1]
        return StepOutput(logits.float(), hidden if return_hidden else None)

    def _first(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device, torch.long)
        if self.embeddings is not None:
            return self.embeddings[ids]
        return ids

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, TensorCache]:
        if return_hidden not in (True, False, "all"):
            raise ValueError(f"return_hidden must be True, False or 'all', got {return_hidden!r}")
        rows, width = input_ids.shape
        mask = (torch.ones(rows, width, dtype=torch.long, device=self.device) if attention_mask is None
                else attention_mask.to(self.device, torch.long).contiguous())
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        shape = (rows, self.meta["num_key_value_heads"], 0, self.meta["head_dim"])
        empty = [torch.empty(shape, dtype=self.dtype, device=self.device)
                 for _ in range(2 * self.meta["num_layers"])]
        logits, hidden, present = self._run(self._first(input_ids), mask, positions, empty)
        cache = TensorCache(present, mask, positions[:, -1] + 1)
        return self._output(logits, hidden, return_hidden, False), cache

    def decode(self, cache: KVCache, token_ids: torch.Tensor, *, return_hidden: bool = False,
               all_positions: bool = False) -> StepOutput:
        if token_ids.dim() == 1:
            token_ids = token_ids[:, None]
        return self._step(cache, self._first(token_ids), return_hidden, all_positions)  # type: ignore[arg-type]

    def decode_embeds(self, cache: KVCache, embeds: torch.Tensor, *, return_hidden: bool = False,
                      all_positions: bool = False) -> StepOutput:
        if not self.embeds:
            raise NotImplementedError(f"the graph of {self.model_id!r} takes token ids; export it with "
                                      "--inputs inputs_embeds to decode from input embeddings")
        if embeds.dim() != 3:
            raise InputError(f"decode_embeds expects [rows, n, hidden] embeddings, got shape {tuple(embeds.shape)}")
        return self._step(cache, embeds.to(self.device, self.dtype), return_hidden, all_positions)  # type: ignore[arg-type]

    def input_embeddings(self) -> torch.Tensor:
        if self.embeddings is None:
            raise NotImplementedError(f"the graph of {self.model_id!r} takes token ids; export it with "
                                      "--inputs inputs_embeds to expose input embeddings")
        return self.embeddings

    def parameter_count(self) -> int:
        return int(self.meta.get("parameter_count") or 0)


class OnnxBackend(ExportedDecoder):
    """An exported decoder graph in an ONNX Runtime ``InferenceSession``.

    Parameters
    ----------
    directory
        A directory written by ``decodekit export onnx``.
    options
        Providers, threads, optimization level.
    tokenizer
        Use this tokenizer instead of the one saved with the graph.
    """

    name = "onnxruntime"
    Options = OnnxOptions

    def __init__(self, directory: str | Path, options: OnnxOptions | None = None, tokenizer: Any = None) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise MissingDependencyError("onnxruntime", extra="onnx", feature="the onnxruntime backend") from exc
        options = options or OnnxOptions()
        directory = Path(directory).expanduser()
        meta = read_sidecar(directory)
        providers = resolve_providers(options.providers, ort.get_available_providers())
        gpu = providers[0] != "CPUExecutionProvider"
        if gpu and not torch.cuda.is_available():
            raise UserError(f"provider {providers[0]} needs a CUDA device visible to torch (the "
                            "backend's tensors live there); this torch build sees none")
        self.device = torch.device(f"cuda:{options.device_id}" if gpu else "cpu")
        self._ort_device = ("cuda", options.device_id) if gpu else ("cpu", 0)
        session_options = ort.SessionOptions()
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        level = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}[options.optimization]
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        graph = directory / meta["graph"]
        if not graph.is_file():
            raise UserError(f"the graph file {graph} named by the sidecar is missing")
        provider_options = [{"device_id": options.device_id} if p != "CPUExecutionProvider" else {}
                            for p in providers]
        self.session = ort.InferenceSession(str(graph), session_options, providers=providers,
                                            provider_options=provider_options)
        check_io({i.name: _ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()},
                 {o.name: _ORT_TYPES.get(o.type, o.type) for o in self.session.get_outputs()},
                 meta, f"graph {graph}")
        self.providers = self.session.get_providers()
        self._setup(directory, meta, tokenizer)
        import numpy as np

        self._np = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}
        self._in_names = [spec["name"] for spec in meta["inputs"]]
        self._out_names = [spec["name"] for spec in meta["outputs"]]

    def _bind(self, binding: Any, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        kind, index = self._ort_device
        bind = binding.bind_output if output else binding.bind_input
        bind(name, kind, index, self._np[tensor.dtype], list(tensor.shape), tensor.data_ptr())

    def _run(self, first: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
             past: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        rows, n = first.shape[0], first.shape[1]
        total = mask.shape[1]
        meta = self.meta
        binding = self.session.io_binding()
        inputs = [first.contiguous(), mask.contiguous(), positions.contiguous(), *past]
        for name, tensor in zip(self._in_names, inputs):
            self._bind(binding, name, tensor)
        logits = torch.empty(rows, n, meta["vocab_size"], dtype=self.dtype, device=self.device)
        outputs = [logits]
        hidden = None
        if meta["hidden_output"]:
            hidden = torch.empty(rows, n, meta["hidden_size"], dtype=self.dtype, device=self.device)
            outputs.append(hidden)
        shape = (rows, meta["num_key_value_heads"], total, meta["head_dim"])
        present = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in past]
        for name, tensor in zip(self._out_names, outputs + present):
            self._bind(binding, name, tensor, output=True)
        if self.device.type == "cuda":
            binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        if self.device.type == "cuda":
            binding.synchronize_outputs()
        return logits, hidden, present

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": list(self.providers)}


def resolve_providers(requested: list[str], available: list[str]) -> list[str]:
    """Full ONNX Runtime provider names for ``requested`` (short names or full names).

    Raises
    ------
    UserError
        For an unknown name, or a provider this ONNX Runtime build does not have.
    """
    if not requested:
        raise UserError("providers must name at least one execution provider, e.g. ['cpu']")
    names = []
    for item in requested:
        full = PROVIDERS.get(item.lower(), item)
        if full not in PROVIDERS.values() and full not in available:
            raise UserError(f"unknown execution provider {item!r}; valid: {', '.join(PROVIDERS)} "
                            f"(or one of {', '.join(available)})")
        if full not in available:
            hint = " (install onnxruntime-gpu: pip install 'decodekit[gpu]')" if full != "CPUExecutionProvider" else ""
            raise UserError(f"execution provider {full} is not available in this ONNX Runtime "
                            f"build{hint}; available: {', '.join(available)}")
        names.append(full)
    return names


def default_export_dir() -> Path:
    """Where ``load("default", backend="onnxruntime")`` keeps its export of the default model."""
    from decodekit import default_model
    from decodekit.backends._export_onnx import FORMAT_VERSION

    converted = default_model.converted_dir()
    return default_model.cache_root() / "onnx" / f"{converted.name}-onnx-v{FORMAT_VERSION}"


def _ensure_default() -> Path:
    from decodekit.backends._export_onnx import SIDECAR, export_onnx

    directory = default_export_dir()
    if not (directory / SIDECAR).is_file():
        import sys

        print(f"decodekit: exporting the default model to ONNX in {directory} (once)", file=sys.stderr)
        export_onnx("default", directory)
    return directory


@hookimpl
def decodekit_register_backends(register: Any) -> None:
    register(OnnxBackend)


@hookimpl
def decodekit_resolve_model(reference: Any, backend: str, options: dict[str, Any]) -> OnnxBackend | None:
    if backend != OnnxBackend.name:
        return None
    parsed, tokenizer = OnnxBackend.parse_load_options(options)
    if not isinstance(reference, (str, Path)):
        raise UserError(f"the onnxruntime backend loads an exported directory or 'default', not a "
                        f"{type(reference).__name__}; export it first: decodekit export onnx --model MODEL --out DIR")
    directory = _ensure_default() if str(reference) == "default" else Path(reference)
    if not directory.expanduser().is_dir():
        raise UserError(f"{reference!r} is not a directory; the onnxruntime backend loads a directory "
                        "written by 'decodekit export onnx --model MODEL --out DIR' (or 'default')")
    return OnnxBackend(directory, parsed, tokenizer)


def _setup_export_onnx(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument("--model", required=True, help="'default', a model directory, a .gguf file or a Hub id")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--inputs", choices=("input_ids", "inputs_embeds"), default="input_ids",
                        help="graph input: token ids, or input embeddings (enables input_embeds)")
    parser.add_argument("--no-hidden", action="store_true", help="omit the final hidden state output")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest accepted abs. difference to PyTorch at the check "
                             "(default 1e-2 for float32, 0.2 for float16)")

    def run(args: argparse.Namespace) -> int:
        from decodekit.backends._export_onnx import export_onnx

        result = export_onnx(args.model, args.out, inputs=args.inputs, hidden=not args.no_hidden,
                             dtype=args.dtype, opset=args.opset, tolerance=args.tolerance)
        print(f"exported {result.meta['model_id']} to {result.directory} "
              f"({result.meta['num_layers']} layers, {result.meta['dtype']}, inputs {result.meta['input_kind']}); "
              f"check against PyTorch: max abs diff {result.max_abs_diff:.3g} "
              f"(tolerance {result.meta['check']['tolerance']:g})")
        return 0

    return run


def _setup_export(parser: argparse.ArgumentParser) -> Any:
    from decodekit.backends.tensorrt import setup_export_tensorrt

    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    runners = {
        "onnx": _setup_export_onnx(targets.add_parser(
            "onnx", help="export a model to an ONNX decoder graph (onnxruntime backend)")),
        "tensorrt": setup_export_tensorrt(targets.add_parser(
            "tensorrt", help="build a TensorRT engine from an exported ONNX directory (needs a GPU)")),
    }
    return lambda args: runners[args.target](args)


@hookimpl
def decodekit_register_commands(register: Any) -> None:
    register("export", _setup_export, "export a model for the onnxruntime and tensorrt backends")
