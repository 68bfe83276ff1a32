"""Momentum decoding: greedy exploration of the token graph, with resistance against loops.

The generated text is a walk on a directed graph whose nodes are token ids; degeneration is
a walk around a loop it already took. At every step the ``top_k`` most likely tokens are
candidates; a candidate ``c`` that would continue an n-gram the row already contains gets a
repetition length ``L``:

* ``0`` if ``c`` never occurred in the row (prompt included);
* otherwise the largest ``n`` in ``[2, max_length]`` such that the n-gram made of the last
  ``n - 1`` tokens followed by ``c`` already occurred; ``1`` if there is none.

The chosen candidate maximises ``p(c) - alpha * R(L)``, where ``R`` (the resistance) is a
table; lengths outside the table have infinite resistance. The forward passes are exactly
greedy's; the n-gram bookkeeping is an index per row updated with every appended token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from pydantic import Field, field_validator

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorChain
from decodekit.rows import Rows
from decodekit.strategy import DecodeContext, TokenByToken

#: the paper-era resistance table (GPT2-XL setting)
DEFAULT_RESISTANCE: dict[int, float] = {0: 0.0, 1: 1.0, 2: 3.0, 3: 4.0, 4: 5.0, 5: 6.0}


class MomentumOptions(Options):
    """Options of the ``momentum`` strategy."""

    top_k: int = Field(5, ge=1, description="candidates per step")
    alpha: float = Field(0.2, ge=0.0, description="weight of the resistance; 0 gives greedy decoding")
    max_length: int = Field(5, ge=1, description="longest repeated n-gram measured")
    resistance: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_RESISTANCE),
        description="resistance per repetition length {L: R(L)}; lengths not listed are forbidden")

    @field_validator("resistance")
    @classmethod
    def _check_resistance(cls, table: dict[int, float]) -> dict[int, float]:
        for length, value in table.items():
            if length < 0:
                raise ValueError(f"repetition lengths are >= 0, got key {length}")
            if math.isnan(value) or value < 0:
                raise ValueError(f"resistance values must be >= 0 (inf allowed), got {value} for L={length}")
        return table


class NgramIndex:
    """Which tokens followed which contexts of up to ``max_length - 1`` tokens in one sequence.

    Parameters
    ----------
    max_length
        Longest n-gram recorded.
    tokens
        The sequence so far.
    """

    __slots__ = ("max_length", "seen", "follow", "tail")

    def __init__(self, max_length: int, tokens: Iterable[int] = ()) -> None:
        self.max_length = max_length
        self.seen: set[int] = set()
        self.follow: dict[tuple[int, ...], set[int]] = {}
        self.tail: list[int] = []
        for token in tokens:
            self.add(token)

    def add(self, token: int) -> None:
        """Record ``token`` appended to the sequence."""
        tail = self.tail
        for n in range(1, len(tail) + 1):
            context = tuple(tail[-n:])
            followers = self.follow.get(context)
            if followers is None:
                self.follow[context] = {token}
            else:
                followers.add(token)
        self.seen.add(token)
        if self.max_length > 1:
            tail.append(token)
            if len(tail) >= self.max_length:
                del tail[0]

    def repetition_lengths(self, candidates: list[int]) -> list[int]:
        """The repetition length ``L`` of each candidate next token (see the module docstring)."""
        lengths = [1 if c in self.seen else 0 for c in candidates]
        alive = [i for i, length in enumerate(lengths) if length]
        tail = self.tail
        n = 2
        while alive and n <= self.max_length and n - 1 <= len(tail):
            followers = self.follow.get(tuple(tail[-(n - 1):]))
            if not followers:
                break
            alive = [i for i in alive if candidates[i] in followers]
            for i in alive:
                lengths[i] = n
            n += 1
        return lengths

    def copy(self) -> NgramIndex:
        """An independent copy."""
        other = NgramIndex(self.max_length)
        other.seen = set(self.seen)
        other.follow = {context: set(followers) for context, followers in self.follow.items()}
        other.tail = list(self.tail)
        return other


class NgramTracker(LogitsProcessor):
    """Keeps an :class:`NgramIndex` per row as row state: it follows rows through
    ``Rows.select``/``Rows.fork`` and sees every appended token. It never changes logits."""

    name = "momentum_ngrams"

    def __init__(self, max_length: int) -> None:
        super().__init__()
        self.max_length = max_length

    def init_state(self, prompt_ids: list[int]) -> NgramIndex:
        return NgramIndex(self.max_length, prompt_ids)

    def fork_state(self, state: NgramIndex) -> NgramIndex:
        return state.copy()

    def update(self, rows: Rows, tokens: torch.Tensor, active: torch.Tensor) -> None:
        states = rows.states[self.state_index]
        values = tokens.tolist()
        for r in active.nonzero().flatten().tolist():
            states[r].add(values[r])


class Momentum(TokenByToken):
    """Momentum decoding: ``argmax p(c) - alpha * R(L(c))`` over the ``top_k`` most likely
    tokens ``c`` of the processed logits.

    Candidates that a processor forbids (logit ``-inf``) are never chosen while another is
    allowed; if every candidate has infinite resistance the most likely one is taken.
    """

    name = "momentum"
    Options = MomentumOptions
    description = "momentum decoding: greedy with resistance against repeated n-grams"

    def start(self, ctx: DecodeContext) -> None:
        opts: MomentumOptions = self.options  # type: ignore[assignment]
        self.tracker = NgramTracker(opts.max_length)
        chain = ProcessorChain([*ctx.processors, self.tracker])
        self.rows = Rows.from_prompts(ctx.prompts, pad_token_id=ctx.backend.pad_token_id,
                                      max_new_tokens=ctx.max_new_tokens, chain=chain)
        out, self.cache = ctx.prefill(self.rows)
        self.logits = out.logits
        self.scores = torch.zeros(self.rows.num_rows, dtype=torch.float32)
        self.pad = ctx.backend.pad_token_id
        self.k = min(opts.top_k, out.logits.shape[-1])
        # alpha * R(L); with alpha = 0 even an infinite resistance weighs nothing
        self.penalty = {length: 0.0 if opts.alpha == 0.0 else opts.alpha * value
                        for length, value in opts.resistance.items()}
        self.unlisted = 0.0 if opts.alpha == 0.0 else float("inf")

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        top_probs, top_ids = torch.topk(probs, self.k, dim=-1)
        indexes = self.rows.states[self.tracker.state_index]
        finished = self.rows.finished.tolist()
        penalty, unlisted = self.penalty, self.unlisted
        values = []
        for r, candidates in enumerate(top_ids.tolist()):
            if finished[r]:
                values.append([0.0] * self.k)
                continue
            lengths = indexes[r].repetition_lengths(candidates)
            values.append([penalty.get(length, unlisted) for length in lengths])
        score = top_probs - torch.tensor(values, dtype=top_probs.dtype, device=top_probs.device)
        banned = logits.gather(1, top_ids) == float("-inf")
        if bool(banned.any()):
            score = score.masked_fill(banned, float("-inf"))
        chosen = score.argmax(dim=-1)  # first index on ties: the likelier candidate
        return top_ids.gather(1, chosen[:, None]).squeeze(1)


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Momentum)
