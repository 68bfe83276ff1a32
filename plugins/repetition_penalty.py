"""Repetition penalty (Keskar et al., 2019): make already-seen tokens less likely."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor
from decodekit.rows import Rows


class RepetitionPenaltyOptions(Options):
    """Options of the ``repetition_penalty`` processor."""

    penalty: float = Field(1.2, gt=0.0, description="> 1 discourages repeats, < 1 encourages them")
    include_prompt: bool = Field(True, description="count prompt tokens as seen")


def seen_tokens(rows: Rows, include_prompt: bool) -> torch.Tensor:
    """``[rows, n]`` ids of each row's history; padding positions repeat a real token of the row."""
    start = rows.prompt_width if not include_prompt else 0
    hist = rows.tokens[:, start:rows.length]
    if include_prompt:
        first_real = rows.prompt_width - rows.prompt_lengths
        cols = torch.arange(hist.shape[1])
        is_pad = cols[None, :] < first_real[:, None]
        filler = rows.tokens.gather(1, first_real[:, None])
        hist = torch.where(is_pad, filler, hist)
    return hist


class RepetitionPenalty(LogitsProcessor):
    """Divide positive (multiply negative) logits of every token already in the row by ``penalty``.

    Same rule as transformers' ``RepetitionPenaltyLogitsProcessor``, except that left padding
    is never counted as seen.
    """

    name = "repetition_penalty"
    Options = RepetitionPenaltyOptions
    description = "penalise tokens that already occur in the sequence"

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        opts: RepetitionPenaltyOptions = self.options  # type: ignore[assignment]
        hist = seen_tokens(rows, opts.include_prompt)
        if hist.shape[1] == 0:
            return logits
        picked = logits.gather(1, hist)
        picked = torch.where(picked < 0, picked * opts.penalty, picked / opts.penalty)
        return logits.scatter_(1, hist, picked)


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(RepetitionPenalty)
