"""An example decodekit plugin: the ``epsilon_sample`` strategy and the ``ascii_only`` processor.

decodekit finds this module through the ``decodekit`` entry-point group declared in
``pyproject.toml`` and registers the functions below marked with ``@hookimpl``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorContext
from decodekit.rows import Rows
from decodekit.strategy import DecodeContext, TokenByToken

__version__ = "0.1.0"


class EpsilonOptions(Options):
    """Options of ``epsilon_sample``."""

    epsilon: float = Field(3e-4, gt=0.0, lt=1.0,
                           description="drop tokens whose probability is below epsilon")
    temperature: float = Field(1.0, gt=0.0, description="divide logits by this first")


class EpsilonSample(TokenByToken):
    """Epsilon sampling: draw among the tokens with probability >= epsilon (the most likely
    token always stays)."""

    name = "epsilon_sample"
    Options = EpsilonOptions
    description = "epsilon sampling: draw among tokens with probability >= epsilon"

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        opts: EpsilonOptions = self.options  # type: ignore[assignment]
        probs = torch.softmax(logits / opts.temperature, dim=-1)
        keep = probs >= opts.epsilon
        keep |= probs == probs.max(dim=-1, keepdim=True).values
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        return torch.multinomial(probs, 1, generator=ctx.generator).squeeze(1)


class AsciiOnly(LogitsProcessor):
    """Forbid tokens whose decoded text contains a non-ASCII character."""

    name = "ascii_only"
    description = "forbid tokens whose text is not plain ASCII"

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        texts = [ctx.tokenizer.decode([i]) for i in range(ctx.vocab_size)]
        self.banned = torch.tensor([i for i, t in enumerate(texts) if not t.isascii()], dtype=torch.long)

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        if self.banned.numel():
            logits[:, self.banned.to(logits.device)] = float("-inf")
        return logits


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(EpsilonSample)


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(AsciiOnly)
