"""The PyTorch backend: any transformers causal language model.

Registered as backend ``torch``. Loads a local model directory, a ``.gguf`` file, a Hub id
(when online or already cached), an already-built ``PreTrainedModel`` (pass ``tokenizer=``),
or ``"default"`` (the embedded SmolLM2-135M-Instruct).

Forward passes mirror transformers' ``generate``: position ids come from the attention mask
(left padding), the mask is dropped when no row is padded, and only the last position's
logits are computed unless all positions are asked for.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from decodekit.backend import Backend, Capability, KVCache, StepOutput
from decodekit.backends._packed_linear import AUTO_LIMIT_BYTES, PackedLinears, linear_bytes, onednn_available
from decodekit.errors import InputError, MissingDependencyError, UserError
from decodekit.hookspecs import hookimpl
from decodekit.options import Options


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` accepts ``logits_to_keep`` (its signature is read through the
    decorators transformers wraps ``forward`` in, whose own code only takes ``*args, **kwargs``)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class TorchOptions(Options):
    """Load options of the ``torch`` backend."""

    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda:0'")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = Field(
        "float32", description="weights dtype ('auto' keeps the checkpoint's)")
    revision: str | None = Field(None, description="Hub revision (Hub ids only)")
    trust_remote_code: bool = Field(False, description="allow model code from the Hub")
    attn_implementation: str | None = Field(
        None, description="transformers attention implementation (e.g. 'sdpa', 'eager')")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (CPU)")
    linear: Literal["auto", "onednn", "aten"] = Field(
        "auto", description="kernel of the linear layers in decode steps over several rows: "
        "'onednn' keeps oneDNN-packed weight copies (faster; as much memory again), 'aten' is "
        "torch's default (bit-identical to transformers), 'auto' packs float32 CPU models whose "
        "linear weights take at most 2 GiB")


class TorchCache(KVCache):
    """A transformers cache plus the attention mask and next position of every row."""

    __slots__ = ("past", "mask", "next_pos", "_length", "pending")

    def __init__(self, past: Any, mask: torch.Tensor | None, next_pos: torch.Tensor, length: int) -> None:
        self.past = past
        self.pending = 0  # candidates fed by decode_candidates, not yet resolved by keep_candidates
        self.mask = mask  # None: no row has padding
        self.next_pos = next_pos
        self._length = length

    @property
    def batch_size(self) -> int:
        return int(self.next_pos.shape[0])

    @property
    def length(self) -> int:
        return self._length

    def select(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.next_pos.device)
        self.past.reorder_cache(rows)
        self.next_pos = self.next_pos.index_select(0, rows)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, rows)

    def fork(self) -> TorchCache:
        mask = None if self.mask is None else self.mask.clone()
        forked = TorchCache(copy.deepcopy(self.past), mask, self.next_pos.clone(), self._length)
        forked.pending = self.pending
        return forked

    def crop(self, length: int) -> None:
        if length < 0 or length > self._length:
            raise ValueError(f"cannot crop a cache of length {self._length} to {length}")
        if length == self._length:
            return
        self.past.crop(length - self._length)
        removed = self._length - length
        if self.mask is not None:
            kept = self.mask[:, length:self._length].sum(dim=1)
            self.next_pos = self.next_pos - kept
            self.mask = self.mask[:, :length]
        else:
            self.next_pos = self.next_pos - removed
        self._length = length


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchBackend(Backend):
    """A transformers causal LM on a torch device.

    Parameters
    ----------
    model
        A transformers ``PreTrainedModel`` with a causal LM head.
    tokenizer
        Its tokenizer.
    model_id
        Printable identifier.
    linear
        The ``linear`` option (see :class:`TorchOptions`).
    """

    name = "torch"
    capabilities = Capability.ALL
    Options = TorchOptions

    def __init__(self, model: Any, tokenizer: Any, model_id: str = "model",
                 linear: Literal["auto", "onednn", "aten"] = "auto") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        config = model.config
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        pad = getattr(model.generation_config, "pad_token_id", None)
        if pad is None:
            pad = tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id = int(pad)
        self.bos_token_id = getattr(config, "bos_token_id", None)
        self.max_context = getattr(config, "max_position_embeddings", None)
        self._logits_to_keep = _takes_logits_to_keep(model)
        self.packed = self._packed_linears(linear)

    def _packed_linears(self, linear: str) -> PackedLinears | None:
        """The packed weights the ``linear`` option asks for, or ``None`` for torch's kernel."""
        if linear == "aten":
            return None
        cpu_fp32 = self.device.type == "cpu" and self.model.dtype == torch.float32
        if linear == "onednn":
            if not onednn_available():
                raise UserError("linear='onednn' needs a torch build with oneDNN (mkldnn), which this "
                                "one lacks; valid values here: 'auto', 'aten'")
            if not cpu_fp32:
                raise UserError(f"linear='onednn' packs float32 weights on a CPU; this model is "
                                f"{str(self.model.dtype).removeprefix('torch.')} on {self.device}; "
                                "use linear='auto' or 'aten'")
            return PackedLinears(self.model)
        if linear != "auto":
            raise UserError(f"unknown linear kernel {linear!r}; valid: 'auto', 'onednn', 'aten'")
        if cpu_fp32 and onednn_available() and 0 < linear_bytes(self.model) <= AUTO_LIMIT_BYTES:
            return PackedLinears(self.model)
        return None

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, reference: Any, options: TorchOptions, tokenizer: Any = None) -> TorchBackend:
        """Load ``reference`` (see module docstring) with ``options``."""
        try:
            import transformers  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(exc.name or "transformers", extra="torch",
                                         feature="the torch backend") from exc
        if options.threads:
            torch.set_num_threads(options.threads)
        dtype: Any = "auto" if options.dtype == "auto" else _DTYPES[options.dtype]
        kwargs: dict[str, Any] = {"dtype": dtype}
        if options.attn_implementation:
            kwargs["attn_implementation"] = options.attn_implementation
        if isinstance(reference, torch.nn.Module):
            if tokenizer is None:
                raise UserError("a model object needs its tokenizer: load(model, tokenizer=...)")
            model = reference
            model_id = getattr(model.config, "_name_or_path", None) or type(model).__name__
        elif isinstance(reference, (str, Path)):
            ref = str(reference)
            path = Path(ref).expanduser()
            if ref == "default":
                from decodekit import default_model

                path = default_model.ensure_converted()
                model_id = default_model.MODEL_ID
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            elif path.suffix == ".gguf":
                if not path.is_file():
                    raise UserError(f"GGUF file not found: {path}")
                for needed in ("gguf", "accelerate"):
                    import importlib.util

                    if importlib.util.find_spec(needed) is None:
                        raise MissingDependencyError(needed, extra="torch", feature="loading GGUF files")
                model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
                model.hf_quantizer = None
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                model_id = path.name
            elif path.is_dir():
                if not (path / "config.json").is_file():
                    raise UserError(f"{path} is a directory but holds no config.json: not a model directory")
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
                model_id = str(path)
            else:
                if path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1:
                    raise UserError(f"model {ref!r} is not a model directory, a .gguf file, 'default' "
                                    "or a Hub id")
                try:
                    model = AutoModelForCausalLM.from_pretrained(
                        ref, revision=options.revision, trust_remote_code=options.trust_remote_code, **kwargs)
                    tokenizer = tokenizer or AutoTokenizer.from_pretrained(
                        ref, revision=options.revision, trust_remote_code=options.trust_remote_code)
                except OSError as exc:
                    raise UserError(f"could not load model {ref!r}: it is not a local path and the Hub "
                                    f"could not provide it ({str(exc).splitlines()[0]})") from None
                model_id = ref
        else:
            raise UserError(f"cannot load a model from {type(reference).__name__}; give 'default', a "
                            "path, a .gguf file, a Hub id or a transformers model object")
        model = model.to(options.device)
        return cls(model, tokenizer, model_id, linear=options.linear)

    # -- running -----------------------------------------------------------------------------

    def _forward(self, cache: TorchCache, *, input_ids: torch.Tensor | None = None,
                 embeds: torch.Tensor | None = None, return_hidden: bool, all_positions: bool,
                 raw: bool = False) -> Any:
        n = (input_ids if input_ids is not None else embeds).shape[1]  # type: ignore[union-attr]
        positions = cache.next_pos[:, None] + torch.arange(n, device=cache.next_pos.device)
        if cache.mask is not None:
            cache.mask = torch.cat([cache.mask, cache.mask.new_ones(cache.mask.shape[0], n)], dim=1)
        kwargs: dict[str, Any] = {"past_key_values": cache.past, "position_ids": positions,
                                  "attention_mask": cache.mask, "use_cache": True}
        if input_ids is not None:
            kwargs["input_ids"] = input_ids.to(self.device)
        else:
            kwargs["inputs_embeds"] = embeds
        if self._logits_to_keep:
            # raw: hidden states only; an empty index keeps no position for the output layer
            kwargs["logits_to_keep"] = (torch.empty(0, dtype=torch.long, device=self.device) if raw
                                        else 0 if all_positions else 1)
        if return_hidden:
            kwargs["output_hidden_states"] = True
        rows = (input_ids if input_ids is not None else embeds).shape[0]  # type: ignore[union-attr]
        packed = self.packed.active() if self.packed is not None and rows > 1 else contextlib.nullcontext()
        with torch.no_grad(), packed:  # no autograd graph (its tensors could not be forked either)
            out = self.model(**kwargs)
        cache.past = out.past_key_values
        cache.next_pos = cache.next_pos + n
        cache._length += n
        if raw:
            return out
        return self._output(out, return_hidden, all_positions)

    @staticmethod
    def _output(out: Any, return_hidden: bool, all_positions: bool, all_hidden: bool = False) -> StepOutput:
        logits = out.logits
        hidden = out.hidden_states[-1] if return_hidden else None
        if not all_positions:
            logits = logits[:, -1, :]
            hidden = hidden[:, -1, :] if hidden is not None and not all_hidden else hidden
        if logits.dtype != torch.float32:
            logits = logits.float()
        return StepOutput(logits, hidden)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, TorchCache]:
        from transformers import DynamicCache

        if return_hidden not in (True, False, "all"):
            raise ValueError(f"return_hidden must be True, False or 'all', got {return_hidden!r}")
        rows, width = input_ids.shape
        if attention_mask is not None:
            mask = attention_mask.to(self.device, dtype=torch.long)
            if bool(mask.all()):
                mask = None
        else:
            mask = None
        if mask is not None:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            next_pos = positions[:, -1] + 1
        else:
            positions = torch.arange(width, device=self.device).expand(rows, width)
            next_pos = torch.full((rows,), width, dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"input_ids": input_ids.to(self.device), "attention_mask": mask,
                                  "position_ids": positions, "past_key_values": DynamicCache(),
                                  "use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        if return_hidden:
            kwargs["output_hidden_states"] = True
        with torch.no_grad():  # no autograd graph (its tensors could not be forked either)
            out = self.model(**kwargs)
        cache = TorchCache(out.past_key_values, mask, next_pos, width)
        return self._output(out, bool(return_hidden), False, return_hidden == "all"), cache

    def decode(self, cache: KVCache, token_ids: torch.Tensor, *, return_hidden: bool = False,
               all_positions: bool = False) -> StepOutput:
        if token_ids.dim() == 1:
            token_ids = token_ids[:, None]
        return self._forward(cache, input_ids=token_ids, return_hidden=return_hidden,  # type: ignore[arg-type]
                             all_positions=all_positions)

    def decode_embeds(self, cache: KVCache, embeds: torch.Tensor, *, return_hidden: bool = False,
                      all_positions: bool = False) -> StepOutput:
        if embeds.dim() != 3:
            raise InputError(f"decode_embeds expects [rows, n, hidden] embeddings, got shape {tuple(embeds.shape)}")
        return self._forward(cache, embeds=embeds.to(self.device, self.model.dtype),  # type: ignore[arg-type]
                             return_hidden=return_hidden, all_positions=all_positions)

    def input_embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def decode_hidden(self, cache: KVCache, token_ids: torch.Tensor) -> torch.Tensor:
        if not self._logits_to_keep:
            return super().decode_hidden(cache, token_ids)
        out = self._forward(cache, input_ids=token_ids.reshape(-1, 1), return_hidden=True,  # type: ignore[arg-type]
                            all_positions=False, raw=True)
        return out.hidden_states[-1][:, -1, :]

    def _tree_ready(self, cache: KVCache) -> bool:
        """Whether candidates can be fed as positions of their row (see :meth:`decode_candidates`):
        an attention that takes a 4-D mask and a cache whose layers are plain growing tensors."""
        from transformers.cache_utils import DynamicLayer

        if not isinstance(cache, TorchCache) or cache.pending:
            return False
        if getattr(self.model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
            return False
        layers = getattr(cache.past, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)

    def decode_candidates(self, cache: KVCache, token_ids: torch.Tensor, *,
                          with_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """See :meth:`decodekit.backend.Backend.decode_candidates`.

        The ``k`` candidates of a row run as ``k`` positions of that row, all at the row's next
        position, each attending to the row's context and to itself only (a 4-D attention
        mask): the cache grows by ``k`` positions instead of being copied ``k`` times, and
        :meth:`keep_candidates` moves the chosen one's keys and values into place. Models whose
        attention or cache does not allow this use the default (expanded rows).
        """
        if not self._tree_ready(cache):
            return super().decode_candidates(cache, token_ids, with_logits=with_logits)
        assert isinstance(cache, TorchCache)
        rows, k = token_ids.shape
        length = cache.length
        context = (cache.mask.bool() if cache.mask is not None
                   else torch.ones(rows, length, dtype=torch.bool, device=self.device))
        allowed = torch.cat([context[:, None, None, :].expand(rows, 1, k, length),
                             torch.eye(k, dtype=torch.bool, device=self.device).expand(rows, 1, k, k)], dim=-1)
        if self.model.config._attn_implementation == "eager":  # eager adds the mask to the scores
            mask: torch.Tensor = torch.zeros(allowed.shape, dtype=self.model.dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(self.model.dtype).min)
        else:
            mask = allowed
        kwargs: dict[str, Any] = {"input_ids": token_ids.to(self.device), "past_key_values": cache.past,
                                  "position_ids": cache.next_pos[:, None].expand(rows, k),
                                  "attention_mask": mask, "use_cache": True, "output_hidden_states": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 0 if with_logits else torch.empty(0, dtype=torch.long, device=self.device)
        packed = self.packed.active() if self.packed is not None and rows * k > 1 else contextlib.nullcontext()
        with torch.no_grad(), packed:
            out = self.model(**kwargs)
        cache.past = out.past_key_values
        cache.pending = k
        hidden = out.hidden_states[-1]
        logits = out.logits.float() if with_logits else None
        return logits, hidden

    def keep_candidates(self, cache: KVCache, chosen: torch.Tensor) -> None:
        """See :meth:`decodekit.backend.Backend.keep_candidates`."""
        if not isinstance(cache, TorchCache) or not cache.pending:
            super().keep_candidates(cache, chosen)
            return
        rows, length = chosen.numel(), cache.length
        single = int(chosen.reshape(-1)[0]) if rows == 1 else -1  # one row: plain slices
        where = None if rows == 1 else chosen.reshape(rows, 1, 1, 1).to(self.device) + length
        for layer in cache.past.layers:
            for name in ("keys", "values"):
                states = getattr(layer, name)  # [rows, heads, length + k, dim]
                if where is None:
                    if single:
                        states.narrow(2, length, 1).copy_(states.narrow(2, length + single, 1))
                else:
                    picked = states.gather(2, where.expand(rows, states.shape[1], 1, states.shape[3]))
                    states.narrow(2, length, 1).copy_(picked)
                setattr(layer, name, states.narrow(2, 0, length + 1))
        cache.pending = 0
        if cache.mask is not None:
            cache.mask = torch.cat([cache.mask, cache.mask.new_ones(rows, 1)], dim=1)
        cache.next_pos = cache.next_pos + 1
        cache._length += 1

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor | None:
        head = self.model.get_output_embeddings()
        if head is None:
            return None
        with torch.no_grad():
            return head(hidden.to(self.device, head.weight.dtype)).float()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@hookimpl
def decodekit_register_backends(register: Any) -> None:
    register(TorchBackend)


@hookimpl
def decodekit_resolve_model(reference: Any, backend: str, options: dict[str, Any]) -> TorchBackend | None:
    if backend != TorchBackend.name:
        return None
    parsed, tokenizer = TorchBackend.parse_load_options(options)
    return TorchBackend.load(reference, parsed, tokenizer)
