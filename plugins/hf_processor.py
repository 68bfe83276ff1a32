"""Any ``transformers`` logits processor as a decodekit processor (``hf``).

transformers processors are callables ``processor(input_ids, scores) -> scores`` where
``input_ids`` holds each row's left-padded prompt followed by its generated tokens. decodekit's
:class:`decodekit.rows.Rows` keeps exactly that layout, so the ``hf`` processor hands a
transformers processor ``rows.tokens[:, :rows.length]`` and the logits of every row a strategy
examines (candidates and look-aheads included), on any backend.

From Python, pass the instance itself (it is wrapped automatically) or spell it out::

    from transformers import NoBadWordsLogitsProcessor
    decodekit.generate(prompt, processors=[NoBadWordsLogitsProcessor([[42]], eos_token_id=0)])

From a pipeline file, name the class and its arguments::

    [[processors]]
    name = "hf"
    options = { processor = "transformers.RepetitionPenaltyLogitsProcessor", kwargs = { penalty = 1.3 } }

A transformers processor sees only token ids and keeps no per-row state that decodekit could
fork, so one that remembers earlier calls (rare) may not follow rows that a beam-like strategy
reorders; the stateless ones (penalties, bans, warpers, ``GrammarLogitsProcessor``, which keys
its state by the ids themselves) work with every strategy.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from pydantic import Field, field_validator

from decodekit.errors import OptionsError
from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor
from decodekit.rows import Rows


def import_object(path: str) -> Any:
    """Import ``"package.module.Name"`` or ``"package.module:Name"``.

    Raises
    ------
    OptionsError
        If the module or the attribute does not exist.
    """
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise OptionsError(f"processor {path!r} is not a class path; give 'module.Class' or "
                           f"'module:Class', e.g. 'transformers.RepetitionPenaltyLogitsProcessor'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionsError(f"processor {path!r}: cannot import module {module_name!r} ({exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionsError(f"processor {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def is_transformers_processor(obj: Any) -> bool:
    """Whether ``obj`` is an instance of a transformers ``LogitsProcessor`` or
    ``LogitsProcessorList`` (checked by class name, so transformers is not imported)."""
    return any(cls.__module__.startswith("transformers.") and
               cls.__name__ in ("LogitsProcessor", "LogitsProcessorList")
               for cls in type(obj).__mro__)


class HFProcessorOptions(Options):
    """Options of the ``hf`` processor."""

    processor: Any = Field(..., description="a transformers LogitsProcessor instance (or "
                                            "LogitsProcessorList), or the class path of one, "
                                            "e.g. 'transformers.RepetitionPenaltyLogitsProcessor'")
    args: list[Any] = Field(default_factory=list,
                            description="positional arguments for the class (with a class path)")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="keyword arguments for the class (with a class path)")

    @field_validator("processor")
    @classmethod
    def _check_processor(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, type) or not callable(value):
            raise ValueError("give a processor instance (a callable (input_ids, scores) -> scores) "
                             f"or a class path string, got {value!r}")
        return value


def build(options: HFProcessorOptions) -> Any:
    """The transformers processor the options describe (imported and constructed if needed)."""
    spec = options.processor
    if not isinstance(spec, str):
        if options.args or options.kwargs:
            raise OptionsError("processor 'hf': args/kwargs go with a class path, not with an instance")
        return spec
    cls = import_object(spec)
    if not callable(cls):
        raise OptionsError(f"processor {spec!r} is not a class or a factory function")
    try:
        instance = cls(*options.args, **options.kwargs)
    except Exception as exc:
        raise OptionsError(f"processor 'hf': {spec}(*{options.args!r}, **{options.kwargs!r}) failed: "
                           f"{type(exc).__name__}: {exc}") from None
    if not callable(instance):
        raise OptionsError(f"processor 'hf': {spec}(...) returned {type(instance).__name__}, which is "
                           f"not callable as processor(input_ids, scores)")
    return instance


class HFProcessor(LogitsProcessor):
    """Apply a transformers ``LogitsProcessor`` to every set of logits a strategy examines."""

    name = "hf"
    Options = HFProcessorOptions
    description = "any transformers LogitsProcessor (an instance, or a class path and arguments)"

    def __init__(self, options: Options | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.processor = build(self.options)  # type: ignore[arg-type]

    @classmethod
    def adopt(cls, obj: Any) -> HFProcessor | None:
        """An ``hf`` processor for a transformers ``LogitsProcessor`` instance, else ``None``."""
        return cls({"processor": obj}) if is_transformers_processor(obj) else None

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        if logits.shape[0] != rows.num_rows:
            raise ValueError(f"processor 'hf' got logits for {logits.shape[0]} rows and {rows.num_rows} "
                             f"rows of tokens")
        input_ids = rows.tokens[:, :rows.length].to(logits.device)
        out = self.processor(input_ids, logits)
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"transformers processor {type(self.processor).__name__} returned {shape}, "
                             f"expected scores of shape {tuple(logits.shape)}")
        return out

    def __repr__(self) -> str:
        return f"HFProcessor({type(self.processor).__name__})"


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(HFProcessor)
