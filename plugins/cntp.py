"""Cautious next token prediction (CNTP): sample several trials where the model is unsure.

At every step the strategy samples as the ``sample`` strategy does, but first measures the
entropy ``H`` (nats) of the warped next-token distribution ``q`` (processors, temperature,
top-k, top-p and min-p applied). The number of trials is

* ``"code"`` (default, the released code and the paper's figure):
  ``N = int(1 + (max_trials - 1) * clamp((H - entropy_low) / (entropy_high - entropy_low), 0, 1))``
* ``"paper"`` (the paper's Algorithm 1):
  ``N = clamp(floor((H - entropy_low) / (entropy_high - entropy_low) * max_trials), 1, max_trials)``

With ``N = 1`` one token is drawn exactly as ``sample`` draws it. Otherwise ``N`` trials are
sampled from this step, each until (and including) a punctuation token, an end-of-sequence
token or the length limit, and the trial with the lowest perplexity
``exp(-mean log q(token))`` is kept, with its cache; the others are dropped.

The ``N`` trials run as ``N`` rows of one batch: one forward pass per trial step for all of
them. A trial that has ended waits for its siblings (it is fed padding, which is cropped away
from the kept trial's cache afterwards, and its processors no longer see tokens).

Punctuation is decided once per tokenizer from each token's own decoded text: a token is
punctuation when that text contains one of ``. , \\n ? ! : ; ) ] }`` (special tokens decode
to nothing and never are).

Prompts of a batch keep one cache each, because their trials end at different lengths; within
a step the prompts are advanced one after another, and the single-token draws of all prompts
that do not branch are made together, in one draw as ``sample`` makes it.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from decodekit.backend import Capability, KVCache
from decodekit.hookspecs import hookimpl
from decodekit.plugins.sample import SamplingOptions, warp
from decodekit.rows import Rows
from decodekit.strategy import DecodeContext, SequenceResult, Strategy

#: Characters that make a token a chunk end.
PUNCTUATION = ".,\n?!:;)]}"

_MASKS: weakref.WeakKeyDictionary[Any, dict[int, torch.Tensor]] = weakref.WeakKeyDictionary()


class CNTPOptions(SamplingOptions):
    """Options of the ``cntp`` strategy (the sampling options plus the trial schedule)."""

    max_trials: int = Field(10, ge=1, description="most trials at one step (N_max)")
    entropy_low: float = Field(0.01, ge=0.0, description="entropy (nats) at or below which one "
                                                         "token is sampled")
    entropy_high: float = Field(1.5, gt=0.0, description="entropy (nats) at or above which "
                                                         "max_trials trials run")
    trial_formula: Literal["code", "paper"] = Field(
        "code", description="'code': N = int(1 + (Nmax-1) * clamp(x, 0, 1)); 'paper': "
                            "N = clamp(floor(x * Nmax), 1, Nmax), x = (H-low)/(high-low)")

    @model_validator(mode="after")
    def _check(self) -> CNTPOptions:
        if self.entropy_high <= self.entropy_low:
            raise ValueError(f"entropy_high ({self.entropy_high}) must be greater than "
                             f"entropy_low ({self.entropy_low})")
        return self


def trial_count(entropy: float, options: CNTPOptions) -> int:
    """Number of trials for a step whose warped distribution has ``entropy`` nats."""
    x = (entropy - options.entropy_low) / (options.entropy_high - options.entropy_low)
    if options.trial_formula == "code":
        return int(1 + (options.max_trials - 1) * min(max(x, 0.0), 1.0))
    return min(max(math.floor(x * options.max_trials), 1), options.max_trials)


def punctuation_mask(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """``[vocab_size]`` bool: whether each token's own decoded text contains punctuation.

    Special tokens and ids past the tokenizer's vocabulary are never punctuation. Computed
    once per tokenizer object and vocabulary size.
    """
    try:
        per_tok = _MASKS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: compute every time
        per_tok = {}
    mask = per_tok.get(vocab_size)
    if mask is not None:
        return mask
    known = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    special = set(getattr(tokenizer, "all_special_ids", ()))
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, text in enumerate(texts):
        if i not in special and any(c in text for c in PUNCTUATION):
            mask[i] = True
    per_tok[vocab_size] = mask
    return mask


@dataclass
class Branch:
    """One branching step, as recorded for inspection (``CNTP.branches``).

    Attributes
    ----------
    prompt
        Index of the prompt.
    position
        Generated tokens of that prompt before the step.
    entropy
        Entropy (nats) of the warped distribution that set the trial count.
    trials
        Token ids of every trial.
    perplexities
        ``exp(-mean log q)`` of every trial under the warped distributions.
    kept
        Index of the kept trial (the lowest perplexity; the first on ties).
    """

    prompt: int
    position: int
    entropy: float
    trials: list[list[int]]
    perplexities: list[float]
    kept: int


@dataclass
class _Prompt:
    rows: Rows
    cache: KVCache
    logits: torch.Tensor  # [1, vocab] raw next-token logits
    score: float = 0.0
    done: bool = False
    processed: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    entropy: float = 0.0
    trials: int = 1
    chunks: list[int] = field(default_factory=list)


class CNTP(Strategy):
    """Cautious next token prediction; ``max_trials = 1`` is exactly ``sample``."""

    name = "cntp"
    Options = CNTPOptions
    requires = frozenset({Capability.CACHE_OPS})
    description = "sample several trials to the next punctuation where unsure; keep the likeliest"

    def start(self, ctx: DecodeContext) -> None:
        backend = ctx.backend
        self.pad = backend.pad_token_id
        ends = punctuation_mask(backend.tokenizer, backend.vocab_size).clone()
        eos = [t for t in backend.eos_token_ids if 0 <= t < backend.vocab_size]
        ends[eos] = True
        self.ends = ends
        self.branches: list[Branch] = []
        self.trial_passes = 0
        self.prompts: list[_Prompt] = []
        for ids in ctx.prompts:
            rows = Rows.from_prompts([ids], pad_token_id=self.pad, max_new_tokens=ctx.max_new_tokens,
                                     chain=ctx.processors)
            out, cache = ctx.model.prefill(torch.tensor([ids], dtype=torch.long))
            self.prompts.append(_Prompt(rows, cache, out.logits))

    def done(self, ctx: DecodeContext) -> bool:
        return all(p.done for p in self.prompts)

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        opts: CNTPOptions = self.options  # type: ignore[assignment]
        for state in self.prompts:
            if state.done:
                continue  # keeps its last distribution: it still takes part in the shared draw
            state.processed = ctx.processors(state.logits, state.rows)
            state.probs = torch.softmax(warp(state.processed.clone(), opts), dim=-1)
            state.entropy = float(torch.special.entr(state.probs).sum())
            state.trials = trial_count(state.entropy, opts)
        # one draw for every prompt that does not branch; finished prompts draw too, as their
        # rows do in ``sample``, so that max_trials = 1 consumes the same random numbers
        single = [i for i, s in enumerate(self.prompts) if s.done or s.trials == 1]
        committed: dict[int, list[int]] = {}
        if single:
            probs = torch.cat([self.prompts[i].probs for i in single])  # type: ignore[misc]
            drawn = torch.multinomial(probs, 1, generator=ctx.generator).squeeze(1).tolist()
            for i, token in zip(single, drawn):
                state = self.prompts[i]
                if not state.done:
                    self._commit_one(ctx, state, token)
                    committed[i] = [token]
        for i, state in enumerate(self.prompts):
            if not state.done and i not in committed:
                committed[i] = self._branch(ctx, i, state)
        return committed

    def _commit_one(self, ctx: DecodeContext, state: _Prompt, token: int) -> None:
        processed = state.processed
        assert processed is not None
        state.score += float(processed[0, token] - torch.logsumexp(processed[0], dim=-1))
        tokens = torch.tensor([token], dtype=torch.long)
        state.rows.append(tokens)
        state.done = bool(state.rows.finished[0])
        if not state.done:
            state.logits = ctx.model.decode(state.cache, tokens).logits

    def _branch(self, ctx: DecodeContext, index: int, state: _Prompt) -> list[int]:
        """Run ``state.trials`` trials as rows of one batch; keep the least perplexing one."""
        opts: CNTPOptions = self.options  # type: ignore[assignment]
        n = state.trials
        assert state.probs is not None and state.processed is not None
        before = state.rows.num_generated
        base = state.cache.length
        cache = state.cache
        cache.select(torch.zeros(n, dtype=torch.long))
        rows = state.rows.select(torch.zeros(n, dtype=torch.long))
        tokens = torch.multinomial(state.probs, n, replacement=True, generator=ctx.generator)[0]
        logq = torch.log(state.probs[0, tokens])
        logp = torch.log_softmax(state.processed[0], dim=-1)[tokens]
        lengths = torch.ones(n, dtype=torch.long)
        ended = torch.zeros(n, dtype=torch.bool)
        finished = torch.zeros(n, dtype=torch.bool)  # ended for real (EOS, stop, length)
        next_logits: list[torch.Tensor | None] = [None] * n
        passes = 0
        while True:
            rows.append(tokens)
            live = ~ended
            finished |= live & rows.finished
            now = live & (self.ends[tokens] | rows.finished)
            ended |= now
            # an ended trial waits for its siblings; its processors must not see the padding
            rows.finished |= ended
            if bool(ended.all()):
                break
            out = ctx.model.decode(cache, torch.where(ended & ~now, self.pad, tokens))
            passes += 1
            for r in now.nonzero().flatten().tolist():
                next_logits[r] = out.logits[r:r + 1]
            alive = (~ended).nonzero().flatten()
            processed = ctx.processors(out.logits, rows).index_select(0, alive)
            probs = torch.softmax(warp(processed.clone(), opts), dim=-1)
            drawn = torch.multinomial(probs, 1, generator=ctx.generator).squeeze(1)
            tokens = torch.full((n,), self.pad, dtype=torch.long)
            tokens[alive] = drawn
            logq[alive] += torch.log(probs.gather(1, drawn[:, None]).squeeze(1))
            logp[alive] += torch.log_softmax(processed, dim=-1).gather(1, drawn[:, None]).squeeze(1)
            lengths[alive] += 1
        perplexity = torch.exp(-logq / lengths)
        kept = int(torch.argmin(perplexity))  # first minimum on ties
        length = int(lengths[kept])
        start = rows.prompt_width + before
        self.branches.append(Branch(index, before, state.entropy,
                                    [rows.tokens[r, start:start + int(lengths[r])].tolist()
                                     for r in range(n)],
                                    perplexity.tolist(), kept))
        keep = torch.tensor([kept], dtype=torch.long)
        cache.select(keep)
        cache.crop(min(cache.length, base + length))
        state.rows = rows.select(keep)
        state.rows.length = start + length
        state.rows.finished[0] = bool(finished[kept])
        state.score += float(logp[kept])
        state.done = bool(finished[kept])
        chunk = state.rows.tokens[0, start:start + length].tolist()
        if not state.done:
            logits = next_logits[kept]
            if logits is None:  # ended at the last trial step: its token is not in the cache yet
                logits = ctx.model.decode(cache, torch.tensor([chunk[-1]], dtype=torch.long)).logits
                passes += 1
            state.logits = logits
        state.chunks.append(length)
        self.trial_passes += passes
        return chunk

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        chunks = [c for p in self.prompts for c in p.chunks]
        ctx.extra_stats.update({
            "branching_steps": len(chunks),
            "trials_run": sum(len(b.trials) for b in self.branches),
            "trial_forward_passes": self.trial_passes,
            "accepted_per_branch": round(sum(chunks) / len(chunks), 3) if chunks else 0.0,
        })
        return [[SequenceResult(p.rows.generated(0), p.score, p.rows.finish_reason[0],
                                p.rows.stop_text[0])] for p in self.prompts]


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(CNTP)
