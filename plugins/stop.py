"""When a sequence ends: end-of-sequence tokens, extra stop tokens and stop strings.

The core adds this processor with its defaults to every generation that does not configure
it, so EOS always ends a sequence unless ``eos = false``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorContext
from decodekit.rows import EOS, STOP, Rows


class StopOptions(Options):
    """Options of the ``stop`` processor."""

    eos: bool = Field(True, description="end a sequence at the model's end-of-sequence tokens")
    token_ids: list[int] = Field(default_factory=list, description="more token ids that end a sequence")
    strings: list[str] = Field(default_factory=list,
                               description="end a sequence when its text contains one of these")
    include_stop_string: bool = Field(False, description="keep the stop string in the returned text")


class Stop(LogitsProcessor):
    """Finishes rows on EOS / stop tokens (reason ``eos`` / ``stop``) and on stop strings.

    Stop strings are matched on the decoded text of the row's last few tokens, so a string
    split across tokens is found. The token that completes a stop string stays in
    ``token_ids``; the text is cut before the stop string (after it with
    ``include_stop_string``).
    """

    name = "stop"
    Options = StopOptions
    description = "end sequences at EOS, stop tokens or stop strings"

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        opts: StopOptions = self.options  # type: ignore[assignment]
        if any(not s for s in opts.strings):
            from decodekit.errors import OptionsError

            raise OptionsError("processor 'stop': stop strings must not be empty")
        self.eos_ids = torch.tensor(ctx.eos_token_ids if opts.eos else (), dtype=torch.long)
        self.stop_ids = torch.tensor(opts.token_ids, dtype=torch.long)
        self.strings = list(opts.strings)
        # tokens to decode so that the longest stop string fits: a token holds at least one
        # byte (byte-level vocabularies split characters), plus slack
        self.window = max((len(s.encode("utf-8")) for s in self.strings), default=0) + 2

    def update(self, rows: Rows, tokens: torch.Tensor, active: torch.Tensor) -> None:
        if self.eos_ids.numel():
            rows.mark_finished(active & torch.isin(tokens, self.eos_ids), EOS)
        if self.stop_ids.numel():
            rows.mark_finished(active & torch.isin(tokens, self.stop_ids), STOP)
        if not self.strings:
            return
        decode = self.ctx.tokenizer.decode  # type: ignore[union-attr]
        live = active & ~rows.finished
        start = max(rows.prompt_width, rows.length - self.window)
        for r in live.nonzero().flatten().tolist():
            tail = decode(rows.tokens[r, start:rows.length].tolist(), skip_special_tokens=True)
            # several strings may complete at once: the one that starts first ends the text
            found = [(tail.find(s), i, s) for i, s in enumerate(self.strings) if s in tail]
            if found:
                mask = torch.zeros(rows.num_rows, dtype=torch.bool)
                mask[r] = True
                rows.mark_finished(mask, STOP, stop_text=min(found)[2])


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(Stop)
