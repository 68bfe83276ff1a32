"""Forbid words or token sequences."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorContext
from decodekit.rows import Rows


class BadWordsOptions(Options):
    """Options of the ``bad_words`` processor."""

    words: list[str] = Field(default_factory=list,
                             description="words to forbid (with and without a leading space)")
    token_ids: list[list[int]] = Field(default_factory=list, description="token sequences to forbid")


class BadWords(LogitsProcessor):
    """Never complete a forbidden token sequence.

    A one-token sequence is always masked; for a longer one the last token is masked when the
    row ends with the rest of it. Words are tokenised as given and with a leading space, as a
    word appears at the start of text and after a space.
    """

    name = "bad_words"
    Options = BadWordsOptions
    description = "forbid words or token sequences"

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        opts: BadWordsOptions = self.options  # type: ignore[assignment]
        seqs: set[tuple[int, ...]] = set()
        for word in opts.words:
            if not word:
                from decodekit.errors import OptionsError

                raise OptionsError("processor 'bad_words': words must not be empty")
            for variant in (word, " " + word):
                ids = tuple(ctx.tokenizer.encode(variant, add_special_tokens=False))
                if ids:
                    seqs.add(ids)
        for ids in opts.token_ids:
            bad = [t for t in ids if not 0 <= t < ctx.vocab_size]
            if not ids or bad:
                from decodekit.errors import OptionsError

                raise OptionsError(f"processor 'bad_words': token sequence {ids} is empty or has ids "
                                   f"outside [0, {ctx.vocab_size})")
            seqs.add(tuple(ids))
        self.single = torch.tensor(sorted(s[0] for s in seqs if len(s) == 1), dtype=torch.long)
        self.multi = [(torch.tensor(s[:-1]), s[-1]) for s in sorted(seqs) if len(s) > 1]

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        if self.single.numel():
            logits[:, self.single] = float("-inf")
        first_real = rows.prompt_width - rows.prompt_lengths  # per row: first non-padding column
        for prefix, last in self.multi:
            k = prefix.numel()
            start = rows.length - k
            if start < 0:
                continue
            tail = rows.tokens[:, start:rows.length]
            hit = (tail == prefix).all(dim=1) & (first_real <= start)  # never match padding
            if bool(hit.any()):
                logits[hit, last] = float("-inf")
        return logits


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(BadWords)
