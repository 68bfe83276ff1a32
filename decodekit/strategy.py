"""Strategies own the search: which rows exist, how they fork, when they finish.

The core loop (:mod:`decodekit.loop`) only calls, in order::

    strategy.start(ctx)
    while not strategy.done(ctx):
        committed = strategy.step(ctx)     # {prompt index: [token ids committed this step]}
    results = strategy.finish(ctx)         # per prompt: ranked list of SequenceResult

A strategy reaches the model through ``ctx.model`` (a counting wrapper around the backend) and
must pass every set of logits it examines through ``ctx.processors``. It never re-implements a
constraint. :class:`TokenByToken` implements the common one-row-per-prompt loop; greedy and
sampling only choose the token.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from decodekit.backend import Backend, KVCache, StepOutput
from decodekit.options import NoOptions, Options, validate_options
from decodekit.options import Options as _Options  # the class attribute ``Options`` shadows it
from decodekit.rows import Rows

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.processor import ProcessorChain


class ModelRunner:
    """The backend as strategies see it: same calls, plus counters for statistics."""

    __slots__ = ("backend", "forward_passes", "positions")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.forward_passes = 0
        self.positions = 0

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, KVCache]:
        """See :meth:`decodekit.backend.Backend.prefill`."""
        self.forward_passes += 1
        self.positions += input_ids.numel()
        return self.backend.prefill(input_ids, attention_mask, return_hidden=return_hidden)

    def decode(self, cache: KVCache, token_ids: torch.Tensor, *, return_hidden: bool = False,
               all_positions: bool = False) -> StepOutput:
        """See :meth:`decodekit.backend.Backend.decode`."""
        self.forward_passes += 1
        self.positions += token_ids.numel()
        return self.backend.decode(cache, token_ids, return_hidden=return_hidden,
                                   all_positions=all_positions)

    def decode_embeds(self, cache: KVCache, embeds: torch.Tensor, *, return_hidden: bool = False,
                      all_positions: bool = False) -> StepOutput:
        """See :meth:`decodekit.backend.Backend.decode_embeds`."""
        self.forward_passes += 1
        self.positions += embeds.shape[0] * embeds.shape[1]
        return self.backend.decode_embeds(cache, embeds, return_hidden=return_hidden,
                                          all_positions=all_positions)

    def decode_hidden(self, cache: KVCache, token_ids: torch.Tensor) -> torch.Tensor:
        """See :meth:`decodekit.backend.Backend.decode_hidden`."""
        self.forward_passes += 1
        self.positions += token_ids.numel()
        return self.backend.decode_hidden(cache, token_ids)

    def decode_candidates(self, cache: KVCache, token_ids: torch.Tensor, *,
                          with_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """See :meth:`decodekit.backend.Backend.decode_candidates`."""
        self.forward_passes += 1
        self.positions += token_ids.numel()
        return self.backend.decode_candidates(cache, token_ids, with_logits=with_logits)

    def keep_candidates(self, cache: KVCache, chosen: torch.Tensor) -> None:
        """See :meth:`decodekit.backend.Backend.keep_candidates` (no forward pass)."""
        self.backend.keep_candidates(cache, chosen)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """See :meth:`decodekit.backend.Backend.lm_head` (not counted as a forward pass)."""
        return self.backend.lm_head(hidden)


@dataclass
class DecodeContext:
    """Everything a strategy needs for one generation.

    Attributes
    ----------
    model
        The backend behind a counting wrapper.
    processors
        The set-up processor chain.
    prompts
        Token ids per prompt.
    max_new_tokens
        Generation limit per sequence.
    generator
        The request's random generator (seeded); use it for every random draw.
    seed
        Its seed.
    extra_stats
        Strategy-specific counters reported in ``Generation.stats``.
    """

    model: ModelRunner
    processors: ProcessorChain
    prompts: list[list[int]]
    max_new_tokens: int
    generator: torch.Generator
    seed: int
    extra_stats: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def backend(self) -> Backend:
        """The underlying backend."""
        return self.model.backend

    def new_rows(self, repeat: int = 1) -> Rows:
        """Rows for every prompt, each repeated ``repeat`` times (adjacent), left-padded."""
        return Rows.from_prompts(self.prompts, pad_token_id=self.backend.pad_token_id,
                                 max_new_tokens=self.max_new_tokens, chain=self.processors,
                                 repeat=repeat)

    def prefill(self, rows: Rows, *, return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, KVCache]:
        """Run the prompt block of ``rows`` through the model (``return_hidden``: see
        :meth:`decodekit.backend.Backend.prefill`)."""
        ids = rows.tokens[:, :rows.prompt_width]
        mask = None
        if bool((rows.prompt_lengths != rows.prompt_width).any()):
            mask = rows.attention_mask()
        return self.model.prefill(ids, mask, return_hidden=return_hidden)


@dataclass
class SequenceResult:
    """A finished sequence as a strategy reports it (token ids are the generated ones)."""

    token_ids: list[int]
    score: float
    finish_reason: str | None
    stop_text: str | None = None


class Strategy(ABC):
    """Base class of decoding strategies.

    Class attributes
    ----------------
    name
        Registry name, e.g. ``"greedy"``.
    Options
        The strategy's typed options (its own namespace).
    requires
        Backend capabilities it needs (see :class:`decodekit.backend.Capability`).
    description
        One line for listings.

    Parameters
    ----------
    options
        An ``Options`` instance or a mapping; keyword arguments are merged into it.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = NoOptions
    requires: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    def __init__(self, options: _Options | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if kwargs:
            base = options.model_dump() if isinstance(options, Options) else dict(options or {})
            options = {**base, **kwargs}
        self.options = validate_options(self.Options, options, owner=f"strategy {self.name!r}")

    def seed(self) -> int | None:
        """A seed the strategy's options carry (e.g. ``sample.seed``), or ``None``."""
        return getattr(self.options, "seed", None)

    @abstractmethod
    def start(self, ctx: DecodeContext) -> None:
        """Create rows and cache (usually one prefill). Called once."""

    @abstractmethod
    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        """Advance the search by one step.

        Returns
        -------
        dict
            Per prompt index, the token ids this step committed to that prompt's final output
            (for streaming). A strategy that only knows the output at the end returns ``{}``.
        """

    @abstractmethod
    def done(self, ctx: DecodeContext) -> bool:
        """Whether the search is over."""

    @abstractmethod
    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        """Per prompt, the returned sequences, best first."""


class TokenByToken(Strategy):
    """One row per prompt, one token per step: subclasses implement :meth:`choose`.

    Keeps the running sum of chosen tokens' log-probabilities (under the processed logits) as
    the sequence score.
    """

    def start(self, ctx: DecodeContext) -> None:
        self.rows = ctx.new_rows()
        out, self.cache = ctx.prefill(self.rows)
        self.logits = out.logits
        self.scores = torch.zeros(self.rows.num_rows, dtype=torch.float32)
        self.pad = ctx.backend.pad_token_id

    @abstractmethod
    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        """Pick one token per row from processed logits ``[rows, vocab]``."""

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        logits = ctx.processors(self.logits, self.rows)
        committed: dict[int, list[int]] = {}
        tokens = self.append_scored(logits, self.choose(logits, ctx), committed)
        if not bool(self.rows.finished.all()):
            self.logits = ctx.model.decode(self.cache, tokens).logits
        return committed

    def append_scored(self, logits: torch.Tensor, tokens: torch.Tensor,
                      committed: dict[int, list[int]]) -> torch.Tensor:
        """Append one token per row and add its log-probability to the row's score.

        Finished rows get the padding token and no score. Mutates ``self.rows``,
        ``self.scores`` and ``committed`` (each prompt's newly committed tokens are appended to
        its list).

        Parameters
        ----------
        logits
            The processed logits ``[rows, vocab]`` the tokens were chosen from.
        tokens
            ``[rows]`` chosen token ids.
        committed
            Per prompt index, the tokens committed so far in this step.

        Returns
        -------
        torch.Tensor
            The tokens as appended (padding on finished rows).
        """
        rows = self.rows
        finished = rows.finished
        any_finished = bool(finished.any())
        if any_finished:
            tokens = torch.where(finished, self.pad, tokens)
        logprob = logits.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
        if any_finished:
            logprob = logprob.masked_fill(finished, 0.0)
        self.scores += logprob
        was_active = (~finished).nonzero().flatten().tolist()
        rows.append(tokens)
        for r in was_active:
            committed.setdefault(int(rows.source[r]), []).append(int(tokens[r]))
        return tokens

    def done(self, ctx: DecodeContext) -> bool:
        return bool(self.rows.finished.all())

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        rows = self.rows
        return [[SequenceResult(rows.generated(r), float(self.scores[r]), rows.finish_reason[r],
                                rows.stop_text[r])] for r in range(rows.num_rows)]
