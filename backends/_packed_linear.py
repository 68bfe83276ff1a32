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
import threading
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


def _version(x: torch.Tensor) -> int:
    """The in-place modification counter of ``x``; inference tensors have none (-2)."""
    return -2 if x.is_inference() else x._version


class _Fused:
    """Linear layers that read the same input tensor, packed as one weight matrix.

    The first member called with an input computes every member's output in one product; the
    others, called next with that same (unmodified) tensor, get their part without computing.
    A member called with any other input computes the group's product for that input. The
    last product is kept per thread, so passes running in several threads do not mix.
    """

    def __init__(self, members: tuple[torch.nn.Linear, ...]) -> None:
        self.members = members
        self.widths = [m.out_features for m in members]
        #: (weight versions, packed weight, bias), replaced as a whole
        self._weights: tuple[tuple[int, ...], torch.Tensor, torch.Tensor | None] | None = None
        self._forwards: dict[int, Any] = {}
        self._local = threading.local()

    @property
    def holding(self) -> bool:
        """Whether this thread keeps the input and outputs of a product."""
        return getattr(self._local, "last", None) is not None

    def release(self) -> None:
        """Drop the input and outputs this thread kept from its last product."""
        self._local.last = None

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        versions = tuple(m.weight._version for m in self.members)
        weights = self._weights
        if weights is None or weights[0] != versions:
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(
                    torch.cat([m.weight.detach() for m in self.members]), None)
                biases = [m.bias for m in self.members]
                bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])  # type: ignore[union-attr]
            weights = self._weights = (versions, packed, bias)
        return weights[1], weights[2]

    def forward(self, index: int) -> Any:
        """The forward function of member ``index`` (made once, then reused)."""
        made = self._forwards.get(index)
        if made is None:
            made = self._forwards[index] = self._make_forward(index)
        return made

    def _make_forward(self, index: int) -> Any:
        member = self.members[index]
        local = self._local

        def forward(x: torch.Tensor) -> torch.Tensor:
            last = getattr(local, "last", None)  # (input, its version, outputs, members waiting)
            if last is not None and x is last[0] and _version(x) == last[1] and index in last[3]:
                last[3].discard(index)
                return last[2][index]
            if x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
                return F.linear(x, member.weight, member.bias)
            packed, bias = self._packed()
            y = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
            outs = [part.contiguous() for part in y.split(self.widths, dim=-1)]
            local.last = (x, _version(x), outs, set(range(len(self.members))) - {index})
            return outs[index]

        return forward


def _same_input_groups(model: Any, layers: list[torch.nn.Linear]) -> list[tuple[torch.nn.Linear, ...]]:
    """Groups of ``layers`` that read the same tensor in a small forward pass of ``model``
    (a transformer block's query/key/value projections, a gated MLP's gate and up
    projections), in call order. Empty when the model cannot run on two one-token rows."""
    seen: dict[int, tuple[torch.Tensor, list[torch.nn.Linear]]] = {}

    def recorder(module: torch.nn.Linear) -> Any:
        def forward(x: torch.Tensor) -> torch.Tensor:
            seen.setdefault(id(x), (x, []))[1].append(module)  # the tensor is kept: ids stay unique
            return F.linear(x, module.weight, module.bias)
        return forward

    patched = []
    try:
        for module in layers:
            if "forward" not in module.__dict__:
                module.forward = recorder(module)  # type: ignore[method-assign]
                patched.append(module)
        device = layers[0].weight.device if layers else "cpu"
        with torch.no_grad():
            model(input_ids=torch.zeros((2, 1), dtype=torch.long, device=device), use_cache=False)
    except Exception:  # noqa: BLE001 - a model that cannot run this way just gets no groups
        return []
    finally:
        for module in patched:
            del module.forward
    groups = []
    for _, members in seen.values():
        if (len(members) > 1 and len({id(m) for m in members}) == len(members)
                and len({m.bias is None for m in members}) == 1):
            groups.append(tuple(members))
    return groups


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
        self.model = model
        self.layers = [module for _, module in eligible(model)]
        self._packed: dict[Any, Any] = {} if share is None else share._packed
        self._groups: list[_Fused] | None = None
        self._group_of: dict[int, tuple[_Fused, int]] = {}

    def _find_groups(self) -> None:
        """Pack layers that read the same input together (shared with ``share``'s groups)."""
        self._groups = []
        for members in _same_input_groups(self.model, self.layers):
            key = ("group", *(id(m) for m in members))
            fused = self._packed.setdefault(key, _Fused(members))
            self._groups.append(fused)
            for index, module in enumerate(members):
                self._group_of[id(module)] = (fused, index)

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
        if self._groups is None:
            self._find_groups()
        patched = []
        try:
            for module in self.layers:
                if "forward" in module.__dict__:  # already wrapped by someone else (e.g. hooks)
                    continue
                grouped = self._group_of.get(id(module))
                module.forward = (self._forward(module) if grouped is None  # type: ignore[method-assign]
                                  else grouped[0].forward(grouped[1]))
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward
            for fused in self._groups or ():
                fused.release()
