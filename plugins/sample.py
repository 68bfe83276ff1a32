"""Ancestral sampling with temperature, top-k, top-p (nucleus) and min-p truncation."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.strategy import DecodeContext, TokenByToken


class SampleOptions(Options):
    """Options of the ``sample`` strategy."""

    temperature: float = Field(1.0, gt=0.0, description="divide logits by this before truncation")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0: no limit)")
    top_p: float = Field(1.0, gt=0.0, le=1.0,
                         description="keep the smallest set of tokens whose probability reaches p")
    min_p: float = Field(0.0, ge=0.0, le=1.0,
                         description="drop tokens less likely than min_p times the most likely one")
    seed: int | None = Field(None, description="seed of the request's random generator "
                                               "(generate(seed=...) overrides it)")


def warp(logits: torch.Tensor, options: SampleOptions) -> torch.Tensor:
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
    independent of the global random state.
    """

    name = "sample"
    Options = SampleOptions
    description = "random sampling with temperature, top-k, top-p and min-p"

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        warped = warp(logits.clone(), self.options)  # type: ignore[arg-type]
        probs = torch.softmax(warped, dim=-1)
        return torch.multinomial(probs, 1, generator=ctx.generator).squeeze(1)


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Sample)
