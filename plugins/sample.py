"""Ancestral sampling with temperature, top-k, top-p (nucleus) and min-p truncation."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.strategy import DecodeContext, TokenByToken


class SamplingOptions(Options):
    """Temperature, truncation and seed: the options of every strategy that samples with
    :func:`warp` (``sample``, and ``cntp``/``ead`` extend them)."""

    temperature: float = Field(1.0, gt=0.0, description="divide logits by this before truncation")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0: no limit)")
    top_p: float = Field(1.0, gt=0.0, le=1.0,
                         description="keep the smallest set of tokens whose probability reaches p")
    min_p: float = Field(0.0, ge=0.0, le=1.0,
                         description="drop tokens less likely than min_p times the most likely one")
    seed: int | None = Field(None, description="seed of the request's random generator "
                                               "(generate(seed=...) overrides it)")


class SampleOptions(SamplingOptions):
    """Options of the ``sample`` strategy."""

    aligned: bool = Field(False, description="grammar-aligned sampling (ASAp): sample the model's "
                                             "distribution conditioned on the grammar, learning "
                                             "from earlier samples (needs a grammar)")
    aligned_reset: bool = Field(False, description="with aligned: forget what earlier requests "
                                                   "learned for this model, grammar and prompt")

    @model_validator(mode="after")
    def _check_aligned(self) -> SampleOptions:
        if self.aligned_reset and not self.aligned:
            raise ValueError("aligned_reset applies to grammar-aligned sampling; set aligned = true "
                             "too, or drop aligned_reset")
        return self


def warp(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Apply temperature, top-k, top-p and min-p to ``[rows, vocab]`` logits (in place)."""
    if options.temperature != 1.0:
        logits = logits.div_(options.temperature)
    if options.top_k and options.top_k < logits.shape[-1]:
        kth = torch.topk(logits, options.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill_(logits < kth, float("-inf"))
    if options.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        limit = probs.max(dim=-1, keepdim=True).values * options.min_p
        logits = logits.masked_fill_(probs < limit, float("-inf"))
    if options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= options.top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill_(drop, float("-inf"))
    return logits


class Sample(TokenByToken):
    """Draw each token from the processed, warped distribution.

    Draws use the request's ``torch.Generator`` only, so a run is reproducible for a seed and
    independent of the global random state. With ``aligned = true`` the grammar-masked draw is
    corrected by grammar-aligned sampling (:mod:`decodekit.aligned`).
    """

    name = "sample"
    Options = SampleOptions
    description = "random sampling with temperature, top-k, top-p and min-p"

    def start(self, ctx: DecodeContext) -> None:
        super().start(ctx)
        self.aligned: Any = None
        if getattr(self.options, "aligned", False):
            from decodekit.aligned import AlignedSampler

            self.aligned = AlignedSampler(ctx, self.rows, self.options, warp,
                                          reset=getattr(self.options, "aligned_reset", False))

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        aligned = getattr(self, "aligned", None)
        if aligned is None:
            return super().step(ctx)
        aligned.prepare(self.logits, self.rows)
        committed = super().step(ctx)
        aligned.advance(self.rows, ctx)
        return committed

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        if getattr(self, "aligned", None) is not None:
            return self.aligned.choose(logits, self.rows, ctx.generator)
        warped = warp(logits.clone(), self.options)  # type: ignore[arg-type]
        probs = torch.softmax(warped, dim=-1)
        return torch.multinomial(probs, 1, generator=ctx.generator).squeeze(1)


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Sample)
