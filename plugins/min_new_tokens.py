"""Forbid ending a sequence before it has a minimum number of new tokens."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorContext
from decodekit.rows import Rows


class MinNewTokensOptions(Options):
    """Options of the ``min_new_tokens`` processor."""

    count: int = Field(1, ge=0, description="new tokens required before EOS is allowed")
    token_ids: list[int] = Field(default_factory=list,
                                 description="more ending tokens to hold back (besides the model's EOS)")


class MinNewTokens(LogitsProcessor):
    """Mask the model's EOS tokens (and ``token_ids``) until ``count`` tokens were generated."""

    name = "min_new_tokens"
    Options = MinNewTokensOptions
    description = "no EOS before a minimum number of new tokens"

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        ids = set(ctx.eos_token_ids) | set(self.options.token_ids)  # type: ignore[attr-defined]
        self.ids = torch.tensor(sorted(ids), dtype=torch.long)

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        if rows.num_generated < self.options.count and self.ids.numel():  # type: ignore[attr-defined]
            logits[:, self.ids] = float("-inf")
        return logits


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(MinNewTokens)
