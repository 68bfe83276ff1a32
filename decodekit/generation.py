"""Requests, step events and results of a generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

#: finish reason of a sequence whose text a completeness-checking processor (e.g. ``grammar``)
#: reports unfinished: it hit ``max_new_tokens`` or a stop string mid-structure
INCOMPLETE = "incomplete"
#: finish reason of a row that received a token a processor forbids (only a strategy that
#: appends tokens with -inf score, e.g. beam search with fewer allowed tokens than beams, does)
INVALID = "invalid"

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.backend import Backend
    from decodekit.options import Options
    from decodekit.processor import LogitsProcessor


@dataclass
class Stats:
    """Statistics of one generation call (shared by the prompts of a batch).

    Attributes
    ----------
    forward_passes
        Model calls (prefill included).
    positions
        Token positions run through the model (prompt padding included).
    prompt_tokens
        Real prompt tokens of this prompt.
    new_tokens
        Tokens generated for this prompt's first sequence.
    seconds
        Wall time of the whole call, prefill included.
    batch_size
        Number of prompts decoded together.
    extra
        Strategy-specific counters.
    """

    forward_passes: int = 0
    positions: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """New tokens of this prompt per second of the call."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"forward_passes": self.forward_passes, "positions": self.positions,
                "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
                "seconds": round(self.seconds, 6), "tokens_per_second": round(self.tokens_per_second, 3),
                "batch_size": self.batch_size, **self.extra}


@dataclass
class Sequence:
    """One returned continuation.

    Attributes
    ----------
    text
        Decoded new text (special tokens skipped; a stop string and what follows it removed
        unless the ``stop`` processor keeps it).
    token_ids
        New token ids, including the one that ended the sequence (e.g. EOS).
    score
        Strategy-defined score: sum of token log-probabilities for greedy and sampling, the
        length-penalised beam score for beam search.
    finish_reason
        ``"eos"``, ``"stop"`` (stop string or stop token), ``"length"`` (``max_new_tokens``
        reached), ``"incomplete"`` (a processor that checks completeness, such as ``grammar``,
        says the text is not finished: it ended by length or a stop string mid-structure) or
        ``"invalid"`` (a strategy appended a token a processor forbids). With a grammar,
        ``"length"`` and ``"stop"`` are kept only when the text is complete.
    complete
        Whether the text is complete for every processor that can tell (a grammar: a whole
        sentence of it); ``None`` when no processor of the request checks completeness.
        ``False`` means the text must not be used as valid output.
    """

    text: str
    token_ids: list[int]
    score: float
    finish_reason: str | None
    complete: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"text": self.text, "token_ids": self.token_ids, "score": self.score,
                "finish_reason": self.finish_reason, "complete": self.complete}


@dataclass
class Generation:
    """The result for one prompt.

    Attributes
    ----------
    prompt
        The prompt as given (text or token ids).
    prompt_token_ids
        The token ids fed to the model (after the chat template, if any).
    sequences
        Returned sequences, best first.
    stats
        Statistics of the call.
    strategy
        Name of the strategy that produced it.
    """

    prompt: str | list[int]
    prompt_token_ids: list[int]
    sequences: list[Sequence]
    stats: Stats
    strategy: str

    @property
    def text(self) -> str:
        """Text of the best sequence."""
        return self.sequences[0].text

    @property
    def token_ids(self) -> list[int]:
        """New token ids of the best sequence."""
        return self.sequences[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        """Why the best sequence ended."""
        return self.sequences[0].finish_reason

    @property
    def complete(self) -> bool | None:
        """Whether the best sequence's text is complete (see :attr:`Sequence.complete`)."""
        return self.sequences[0].complete

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL record of the CLI)."""
        return {"prompt": self.prompt, "text": self.text, "token_ids": self.token_ids,
                "finish_reason": self.finish_reason, "complete": self.complete,
                "strategy": self.strategy,
                "sequences": [s.as_dict() for s in self.sequences], "stats": self.stats.as_dict()}


@dataclass
class GenerationRequest:
    """A resolved request, as observer hooks see it.

    Attributes
    ----------
    backend
        The loaded model.
    strategy
        Strategy name.
    options
        The strategy's validated options.
    processors
        Set-up processors, in order.
    prompts
        The prompts as given.
    prompt_token_ids
        Token ids per prompt.
    max_new_tokens
        Generation limit.
    seed
        Seed of the request's random generator.
    """

    backend: Backend
    strategy: str
    options: Options
    processors: list[LogitsProcessor]
    prompts: list[str | list[int]]
    prompt_token_ids: list[list[int]]
    max_new_tokens: int
    seed: int


@dataclass
class StepEvent:
    """What one decoding step committed.

    Attributes
    ----------
    step
        1-based step number.
    tokens
        Per prompt index, the token ids committed in this step (absent: none).
    forward_passes
        Model calls so far.
    elapsed
        Seconds since the generation started.
    """

    step: int
    tokens: dict[int, list[int]]
    forward_passes: int
    elapsed: float


@dataclass
class TextDelta:
    """A streamed increment of one prompt's output (``generate(stream=True)``).

    Attributes
    ----------
    index
        Prompt index within the batch.
    text
        New text since the previous delta of this prompt.
    token_ids
        Token ids committed with it.
    """

    index: int
    text: str
    token_ids: list[int]
