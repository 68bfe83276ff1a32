"""Logits processors: composable, ordered transformations of next-token logits.

A processor may keep one state object per row (e.g. n-gram tables, a grammar matcher). The
:class:`decodekit.rows.Rows` of a generation hold those states and fork them whenever a
strategy forks or reorders rows, so a processor composes with beam-like and look-ahead
strategies without knowing about them.

Contract of a processor, per generation:

1. ``setup(ctx)`` once, with the tokenizer, vocabulary size and special tokens;
2. ``init_state(prompt_ids)`` once per row (return ``None`` if stateless);
3. ``process(logits, rows)`` for every set of logits a strategy examines: returns processed
   logits (it may modify ``logits`` in place); never mutates row state;
4. ``update(rows, tokens, active)`` after a token was appended to each row: updates per-row
   state and may finish rows with ``rows.mark_finished``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from decodekit.options import NoOptions, Options, validate_options
from decodekit.options import Options as _Options  # the class attribute ``Options`` shadows it

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from decodekit.rows import Rows


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor learns about the generation at setup.

    Attributes
    ----------
    tokenizer
        The model's tokenizer.
    vocab_size
        Width of the logits.
    eos_token_ids
        End-of-sequence ids of the model.
    pad_token_id
        Padding id.
    max_new_tokens
        Generation limit.
    """

    tokenizer: Any
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    max_new_tokens: int


class LogitsProcessor:
    """Base class of logits processors.

    Subclasses set ``name`` and ``Options`` and override :meth:`process`, and for stateful
    processors :meth:`init_state`, :meth:`update` and possibly :meth:`fork_state`.

    Parameters
    ----------
    options
        An ``Options`` instance or mapping; keyword arguments are merged into it.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = NoOptions
    description: ClassVar[str] = ""
    _state_index: int

    def __init__(self, options: _Options | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if kwargs:
            base = dict(options or {}) if not isinstance(options, Options) else options.model_dump()
            options = {**base, **kwargs}
        self.options = validate_options(self.Options, options, owner=f"processor {self.name!r}")
        self.ctx: ProcessorContext | None = None

    def setup(self, ctx: ProcessorContext) -> None:
        """Called once per generation before any other method. Default: store ``ctx``."""
        self.ctx = ctx

    def init_state(self, prompt_ids: list[int]) -> Any:
        """Return the initial state of a row whose prompt is ``prompt_ids`` (default ``None``)."""
        return None

    def fork_state(self, state: Any) -> Any:
        """Return an independent copy of a row state (default: a deep copy, or the object
        itself for ``None``, ints, strings and tuples)."""
        if state is None or isinstance(state, (int, float, str, tuple, frozenset)):
            return state
        return copy.deepcopy(state)

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        """Return processed logits ``[rows, vocab]`` (may modify ``logits`` in place).

        Must not mutate row state: strategies call it on candidate and look-ahead rows too.
        """
        return logits

    def update(self, rows: Rows, tokens: torch.Tensor, active: torch.Tensor) -> None:
        """Record that ``tokens[r]`` was appended to every row ``r`` with ``active[r]``.

        ``rows.tokens`` already contains the new tokens. May call ``rows.mark_finished``.
        Mutates this processor's row states (``rows.states[self_index]``).
        """

    @classmethod
    def adopt(cls, obj: Any) -> LogitsProcessor | None:
        """A processor of this class that applies ``obj``, or ``None`` when it cannot.

        Called when a request lists an object that is neither a decodekit processor nor a
        processor spec (the ``hf`` processor adopts transformers ``LogitsProcessor`` instances).
        Does not mutate ``obj``. The default adopts nothing.
        """
        return None

    @property
    def state_index(self) -> int:
        """Position of this processor's states in ``rows.states`` (set by the chain)."""
        return self._state_index


class ProcessorChain:
    """An ordered list of set-up processors, applied in order."""

    def __init__(self, processors: list[LogitsProcessor]) -> None:
        self.processors = processors
        for i, proc in enumerate(processors):
            proc._state_index = i
        self._active = [p for p in processors if type(p).process is not LogitsProcessor.process]
        self._updating = [p for p in processors if type(p).update is not LogitsProcessor.update]

    def __len__(self) -> int:
        return len(self.processors)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.processors)

    def setup(self, ctx: ProcessorContext) -> None:
        """Set up every processor for one generation."""
        for proc in self.processors:
            proc.setup(ctx)

    def init_states(self, rows: Rows) -> list[list[Any]]:
        """Initial per-row states of every processor."""
        histories = None
        states = []
        for proc in self.processors:
            if type(proc).init_state is LogitsProcessor.init_state:
                states.append([None] * rows.num_rows)
                continue
            if histories is None:
                histories = [rows.history(r) for r in range(rows.num_rows)]
            states.append([proc.init_state(h) for h in histories])
        return states

    def select_states(self, states: list[list[Any]], idx: list[int], firsts: list[bool]) -> list[list[Any]]:
        """States for rows taken at ``idx``; entries not marked in ``firsts`` are forked."""
        out = []
        for proc, per_row in zip(self.processors, states):
            if all(s is None for s in per_row):
                out.append([None] * len(idx))
                continue
            out.append([per_row[i] if first else proc.fork_state(per_row[i])
                        for i, first in zip(idx, firsts)])
        return out

    def __call__(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        """Apply every processor in order; returns the processed logits."""
        for proc in self._active:
            logits = proc.process(logits, rows)
        return logits

    def update(self, rows: Rows, tokens: torch.Tensor, active: torch.Tensor) -> None:
        """Let every processor observe the appended tokens."""
        for proc in self._updating:
            proc.update(rows, tokens, active)
