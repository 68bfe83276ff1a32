"""Forbid any n-gram from occurring twice in a row's sequence."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor
from decodekit.rows import Rows


class NoRepeatNgramOptions(Options):
    """Options of the ``no_repeat_ngram`` processor."""

    size: int = Field(3, ge=1, description="n: no n-gram may occur twice")
    include_prompt: bool = Field(True, description="n-grams of the prompt count too")


class NoRepeatNgram(LogitsProcessor):
    """Ban every token that would complete an n-gram already present in the row.

    Matches transformers' ``NoRepeatNGramLogitsProcessor`` (left padding excluded). The
    search is vectorised over rows and positions on each call.
    """

    name = "no_repeat_ngram"
    Options = NoRepeatNgramOptions
    description = "forbid repeating any n-gram"

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        n = self.options.size  # type: ignore[attr-defined]
        start = 0 if self.options.include_prompt else rows.prompt_width  # type: ignore[attr-defined]
        hist = rows.tokens[:, start:rows.length]
        if hist.shape[1] < n:
            return logits
        if start == 0:
            cols = torch.arange(hist.shape[1])
            pad = cols[None, :] < (rows.prompt_width - rows.prompt_lengths)[:, None]
            hist = hist.masked_fill(pad, -1)
        if n == 1:
            banned_rows = torch.arange(hist.shape[0])[:, None].expand_as(hist)
            ok = hist >= 0
            logits[banned_rows[ok], hist[ok]] = float("-inf")
            return logits
        prefix = hist[:, -(n - 1):]  # [R, n-1]
        windows = hist.unfold(1, n - 1, 1)[:, : hist.shape[1] - n + 1]  # windows followed by a token
        match = (windows == prefix[:, None, :]).all(dim=-1) & (prefix >= 0).all(dim=-1, keepdim=True)
        r, i = match.nonzero(as_tuple=True)
        if r.numel():
            banned = hist[r, i + n - 1]
            keep = banned >= 0
            logits[r[keep], banned[keep]] = float("-inf")
        return logits


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(NoRepeatNgram)
