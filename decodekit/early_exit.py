"""Early-exit models: the first layers of a transformers decoder as a model of their own.

An early-exit model runs the embeddings, the first ``layers`` transformer blocks, the final
norm and the language-model head of a larger model. It shares every weight with the larger
model (no copy), so it costs no memory beyond its own KV cache, and its vocabulary is the
larger model's by construction. Entropy-adaptive decoding (the ``ead`` strategy) uses it as
the default small model.

Supported are transformers causal language models whose decoder keeps its blocks in a
``layers`` ``ModuleList`` and reads ``config.num_hidden_layers`` (Llama, Mistral, Qwen2,
Gemma, Phi-3 and most current decoder-only architectures).
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

import torch

from decodekit.errors import OptionsError, UserError

_CACHE: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def decoder_of(model: Any) -> Any:
    """The decoder module of a transformers causal LM (the one holding ``layers``).

    Raises
    ------
    UserError
        When the architecture keeps its blocks elsewhere.
    """
    base_name = getattr(model, "base_model_prefix", "model")
    decoder = getattr(model, base_name, None)
    if decoder is None or not isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        raise UserError(f"cannot build an early-exit model from {type(model).__name__}: its decoder "
                        "has no 'layers' list of transformer blocks (supported: Llama, Mistral, "
                        "Qwen2, Gemma, Phi-3 and similar); give a separate small model instead")
    return decoder


def num_layers(model: Any) -> int:
    """Number of transformer blocks of a transformers causal LM."""
    return len(decoder_of(model).layers)


def _check_layers(model: Any, layers: Any) -> int:
    total = num_layers(model)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers < total:
        raise OptionsError(f"layers must be an integer from 1 to {total - 1} (the model has {total} "
                           f"transformer layers), got {layers!r}")
    return total


def early_exit_model(model: Any, layers: int) -> Any:
    """A causal LM that runs only the first ``layers`` blocks of ``model``.

    Every submodule except the block list is the same object as in ``model``, and the blocks
    are ``model``'s first ``layers`` blocks, so weights are shared, not copied.

    Parameters
    ----------
    model
        A transformers causal LM (e.g. ``LlamaForCausalLM``).
    layers
        How many blocks to keep, ``1 <= layers < `` the model's block count.

    Returns
    -------
    transformers.PreTrainedModel
        A model of the same class, in eval mode.

    Raises
    ------
    OptionsError
        When ``layers`` is out of range.
    UserError
        When the architecture is not supported.
    """
    decoder = decoder_of(model)
    total = _check_layers(model, layers)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    for key in ("layer_types", "sliding_window_pattern_list"):
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) == total:
            setattr(config, key, value[:layers])
    with torch.device("meta"):
        small = type(model)(config)
    base_name = getattr(model, "base_model_prefix", "model")
    small_decoder = getattr(small, base_name)
    for name, child in decoder.named_children():
        if name == "layers":
            child = torch.nn.ModuleList(list(child)[:layers])
        setattr(small_decoder, name, child)
    for name, child in model.named_children():
        if child is not decoder:
            setattr(small, name, child)
    leftover = [n for n, t in [*small.named_parameters(), *small.named_buffers()] if t.is_meta]
    if leftover:
        raise UserError(f"cannot build an early-exit model from {type(model).__name__}: "
                        f"{', '.join(leftover[:5])} could not be shared with the full model")
    small.generation_config = copy.deepcopy(model.generation_config)
    return small.eval()


def early_exit_backend(backend: Any, layers: int) -> Any:
    """A ``torch`` backend running the first ``layers`` blocks of ``backend``'s model.

    The construction is cached per model object: repeated generations with the same large
    model reuse it.

    Parameters
    ----------
    backend
        A :class:`decodekit.backends.pytorch.TorchBackend`.
    layers
        How many blocks to keep.

    Raises
    ------
    UserError
        When ``backend`` is not a ``torch`` backend.
    """
    from decodekit.backends.pytorch import TorchBackend

    if not isinstance(backend, TorchBackend):
        raise UserError(f"an early-exit small model needs the 'torch' backend (got "
                        f"{getattr(backend, 'name', type(backend).__name__)!r}); give "
                        "small_model= a model of its own instead")
    model = backend.model
    _check_layers(model, layers)
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        found = per_model.get(layers)
        if found is not None:
            return found
    small = TorchBackend(early_exit_model(model, layers), backend.tokenizer,
                         model_id=f"{backend.model_id}[:{layers} layers]", linear="aten")
    if backend.packed is not None:  # the layers are the big model's: share their packed copies
        from decodekit.backends._packed_linear import PackedLinears

        small.packed = PackedLinears(small.model, share=backend.packed)
    with _LOCK:
        return per_model.setdefault(layers, small)
