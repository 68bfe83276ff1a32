"""Pre-packed oneDNN weights for the linear layers of multi-row decode steps on a CPU.

A decode step over several rows (contrastive search's ``top_k`` candidates, the beams of a
beam search, a batch of prompts) multiplies a few activation rows by every weight matrix of
the model. torch's default CPU kernel re-arranges ("packs") the weight matrix for such small
matrix products on every call: on the default model a decode step over 3 rows takes about
twice as long as a 1-row one (``benchmarks/bench_linear.py``). oneDNN can keep each weight
packed once, and gains more with more intra-op threads.

:class:`PackedLinears` keeps the packed copies and, for the duration of one forward pass,
routes the model's ``torch.nn.Linear`` layers through them. Nothing of the model is changed
outside that window, so a model object the caller passed in behaves as before everywhere
else. One-row steps (greedy decoding, sampling) and prefills keep torch's kernel.

The packed kernel rounds differently from torch's default one (a few 1e-6 relative in float32
on the default model), so results agree with transformers' batched runs to within float32
rounding rather than bit for bit; the backend option ``linear="aten"`` turns packing off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

#: ``linear="auto"`` packs only models whose linear weights take at most this many bytes: the
#: packed copies take as much memory again
AUTO_LIMIT_BYTES = 2 * 1024 ** 3


def onednn_available() -> bool:
    """Whether this torch build can pack linear weights with oneDNN."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def eligible(model: Any) -> list[tuple[str, torch.nn.Linear]]:
    """The model's float32 CPU ``nn.Linear`` layers, with their qualified names."""
    return [(name, module) for name, module in model.named_modules()
            if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu"]


def linear_bytes(model: Any) -> int:
    """Bytes taken by the weights of :func:`eligible` layers."""
    return sum(m.weight.numel() * m.weight.element_size() for _, m in eligible(model))


class PackedLinears:
    """oneDNN-packed copies of a model's linear weights, used inside :meth:`active`.

    Parameters
    ----------
    model
        A torch module; its float32 CPU ``nn.Linear`` layers are packed on first use.
    share
        Another instance whose packed copies this one reuses (for a model built from the other
        one's layers, such as an early-exit copy), so shared layers are packed once.

    Notes
    -----
    Packing happens lazily, the first time :meth:`active` is entered, and again for a layer
    whose weight was modified in place since (tracked by the tensor's version counter). A
    layer whose ``forward`` is already replaced on the instance (e.g. by accelerate's hooks)
    is left alone.
    """

    def __init__(self, model: Any, share: PackedLinears | None = None) -> None:
        self.layers = [module for _, module in eligible(model)]
        self._packed: dict[int, tuple[int, Any]] = {} if share is None else share._packed

    def _forward(self, module: torch.nn.Linear) -> Any:
        """The packed forward function of ``module`` (packed again if its weight changed)."""
        version = module.weight._version
        entry = self._packed.get(id(module))
        if entry is not None and entry[0] == version:
            return entry[1]
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)
        bias = None if module.bias is None else module.bias.detach()

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
                return F.linear(x, module.weight, module.bias)
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

        self._packed[id(module)] = (version, forward)
        return forward

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Route every packed layer's forward through oneDNN until the block ends.

        Mutates the layers' ``forward`` attributes for the duration of the block only; they are
        restored even when the forward pass raises.
        """
        patched = []
        try:
            for module in self.layers:
                if "forward" in module.__dict__:  # already wrapped by someone else (e.g. hooks)
                    continue
                module.forward = self._forward(module)  # type: ignore[method-assign]
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward
