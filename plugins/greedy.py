"""Greedy decoding: the most likely token at every step, with jump-forward over forced tokens.

Jump-forward: a processor may offer, per row, the tokens that are forced next (the ``grammar``
processor does when its ``jump_forward`` option is on, e.g. the key of a JSON Schema property
and its ``":``). Greedy then feeds those tokens to the model in one multi-token forward pass
instead of one pass per token, and reads the logits of every fed position from it.

With checking (the processor's ``verify_forced``, the grammar's ``jump_forward_check``, on by
default) a forced token is kept only where greedy would have chosen it from that position's
processed logits; at the first position where greedy prefers another token (for example
another split of the same text) greedy's token is taken, the cache is cropped back and decoding
goes on from there. The output is then greedy's, token for token, and only forward passes are
saved. The one caveat is the same as for speculative decoding: the logits of a multi-token pass
may differ from those of single-token passes in the last bits, which can flip an exact tie.

Without checking, forced tokens are emitted as the processor splits them whenever every
processor allows them; that saves more passes but can tokenize the forced text differently from
greedy, and so change the text that follows.

Jump-forward needs a backend with ``multi_token`` and ``cache_ops``; otherwise, and when no
processor offers forced tokens, greedy runs token by token. ``stats.extra`` counts the forced
tokens emitted (``jump_forward_tokens``) and the forward passes saved
(``jump_forward_saved_passes``) when a processor offers forced tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from decodekit.backend import Capability
from decodekit.hookspecs import hookimpl
from decodekit.strategy import DecodeContext, SequenceResult, TokenByToken


class Greedy(TokenByToken):
    """Pick the arg-max of the processed logits (ties go to the lowest token id).

    Token-identical to transformers ``generate(do_sample=False)`` on the same model, inputs
    and processors. Jumps over forced tokens when a processor offers them (module docstring).
    """

    name = "greedy"
    description = "the most likely token at every step"

    def start(self, ctx: DecodeContext) -> None:
        super().start(ctx)
        caps = ctx.backend.capabilities
        self.forcers = [p for p in ctx.processors if callable(getattr(p, "forced_tokens", None))]
        self.jump = bool(self.forcers) and Capability.MULTI_TOKEN in caps and Capability.CACHE_OPS in caps
        self.verify = all(bool(getattr(p, "verify_forced", True)) for p in self.forcers)
        self.jump_tokens = 0
        self.saved_passes = 0

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        return torch.argmax(logits, dim=-1)

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        if not self.jump:
            return super().step(ctx)
        rows = self.rows
        logits = ctx.processors(self.logits, rows)
        picks = self.choose(logits, ctx)
        forced = self._forced(ctx, logits, picks)
        committed: dict[int, list[int]] = {}
        if forced is None:
            self.append_scored(logits, picks, committed)
            if not bool(rows.finished.all()):
                self.logits = ctx.model.decode(self.cache, rows.tokens[:, rows.length - 1]).logits
            return committed
        return self._jump(ctx, logits, forced, committed)

    # -- jump-forward ------------------------------------------------------------------------

    def _forced(self, ctx: DecodeContext, logits: torch.Tensor, picks: torch.Tensor) -> torch.Tensor | None:
        """``[rows, n]`` forced tokens to feed (padding on finished rows), or ``None`` when
        some active row has none, or (checking) greedy does not pick the first one."""
        rows = self.rows
        active = (~rows.finished).nonzero().flatten().tolist()
        lists = []
        for r in active:
            tokens: list[int] = []
            for proc in self.forcers:
                tokens = proc.forced_tokens(rows, r)
                if tokens:
                    break
            if not tokens:
                return None
            first = tokens[0]
            if self.verify and first != int(picks[r]):
                return None
            if not self.verify and not bool(torch.isfinite(logits[r, first])):
                return None
            lists.append(tokens)
        n = min(min(len(t) for t in lists), ctx.max_new_tokens - rows.num_generated)
        if n < 1 or (self.verify and n < 2):  # one checked token is an ordinary step
            return None
        out = torch.full((rows.num_rows, n), self.pad, dtype=torch.long)
        for r, tokens in zip(active, lists):
            out[r] = torch.tensor(tokens[:n], dtype=torch.long)
        return out

    def _jump(self, ctx: DecodeContext, logits: torch.Tensor, forced: torch.Tensor,
              committed: dict[int, list[int]]) -> dict[int, list[int]]:
        """Append ``forced`` (checked position by position) after one multi-token pass."""
        rows, n = self.rows, forced.shape[1]
        appended = passes = 0
        self.append_scored(logits, forced[:, 0], committed)
        self.jump_tokens += 1
        appended += not bool(rows.finished.all())
        if not appended:
            return committed
        feed = rows.tokens[:, rows.length - 1:rows.length]
        if n > 1:
            feed = torch.cat([feed, forced[:, 1:]], dim=1)
        base = self.cache.length
        out = ctx.model.decode(self.cache, feed if n > 1 else feed[:, 0], all_positions=n > 1)
        passes += 1
        if n == 1:
            self.logits = out.logits
            self.saved_passes += appended - passes
            return committed
        for i in range(n - 1):
            step_logits = ctx.processors(out.logits[:, i].contiguous(), rows)
            candidate = forced[:, i + 1]
            picks = self.choose(step_logits, ctx)
            if self.verify:
                ok = picks == candidate
            else:
                ok = torch.isfinite(step_logits.gather(1, candidate[:, None]).squeeze(1))
            ok |= rows.finished
            accepted = bool(ok.all())
            tokens = candidate if accepted else torch.where(ok, candidate, picks)
            self.append_scored(step_logits, tokens, committed)
            self.jump_tokens += accepted
            ended = bool(rows.finished.all())
            appended += not ended
            if ended:
                break
            if not accepted:  # keep F_0 .. F_i in the cache, feed the token taken instead
                self.cache.crop(base + i + 1)
                self.logits = ctx.model.decode(self.cache, rows.tokens[:, rows.length - 1]).logits
                passes += 1
                break
        else:
            self.logits = out.logits[:, n - 1]
        self.saved_passes += appended - passes
        return committed

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        if self.forcers:
            ctx.extra_stats["jump_forward_tokens"] = self.jump_tokens
            ctx.extra_stats["jump_forward_saved_passes"] = self.saved_passes
        return super().finish(ctx)


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Greedy)
