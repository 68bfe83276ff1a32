"""Diverse beam search (Vijayakumar et al., 2016) with transformers' group beam search semantics.

The ``num_beams`` beams of every prompt form ``num_groups`` groups of ``num_beams /
num_groups`` beams. One forward pass per step covers all beams; then the groups choose their
continuations in order, on the same logits. Group ``g`` scores a token by its log-probability
minus ``diversity_penalty`` times the number of beams of groups ``0 .. g-1`` that chose that
token at this step (Hamming diversity), then runs the request's processors, adds the beams'
running scores and keeps the best ``2 * group_size`` continuations over its beams, exactly as
beam search does within one group. Each group keeps its own list of finished hypotheses, scored
``sum_logprobs / length ** length_penalty``; the result is the best ``num_return_sequences``
hypotheses of all groups.

This reproduces transformers <= 4.55 ``generate(num_beams=B, num_beam_groups=G,
diversity_penalty=l)`` token for token, including its per-group stopping rule and the fact
that a group that is done keeps emitting padding tokens, which count in the diversity penalty
of the groups after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.rows import LENGTH, Rows
from decodekit.strategy import DecodeContext, SequenceResult, Strategy

#: running score of beams that must not be expanded (the non-first beams at the first step)
NEG = -1.0e9


class DiverseBeamOptions(Options):
    """Options of the ``diverse_beam`` strategy."""

    num_beams: int = Field(4, ge=1, description="beams per prompt, over all groups")
    num_groups: int = Field(2, ge=1, description="groups the beams are split into (divides num_beams)")
    diversity_penalty: float = Field(
        0.5, ge=0.0, description="subtracted from a token's log-probability once per beam of an "
                                 "earlier group that chose it at the same step")
    length_penalty: float = Field(1.0, description="exponent of the length in the finished-score "
                                                   "denominator (> 0 favours longer sequences)")
    early_stopping: bool | Literal["never"] = Field(
        False, description="True: a group stops when it has group-size finished hypotheses; False: "
                           "when no running beam can beat them (heuristic); 'never': exact bound")
    num_return_sequences: int = Field(1, ge=1, description="finished hypotheses returned per prompt")

    @model_validator(mode="after")
    def _check(self) -> DiverseBeamOptions:
        if self.num_groups > self.num_beams or self.num_beams % self.num_groups:
            raise ValueError(f"num_groups ({self.num_groups}) must divide num_beams "
                             f"({self.num_beams}); valid values: "
                             f"{[g for g in range(1, self.num_beams + 1) if self.num_beams % g == 0]}")
        if self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences ({self.num_return_sequences}) must be <= "
                             f"num_beams ({self.num_beams})")
        return self


class Hypotheses:
    """The best ``size`` finished sequences of one group of one prompt.

    Keeps insertion order (ties in the final ranking go to the later entry) and the worst
    kept score, like transformers' ``BeamHypotheses``; scores are Python floats.

    Parameters
    ----------
    size
        How many hypotheses to keep (the group size).
    length_penalty
        Exponent of the generated length in the score denominator.
    early_stopping
        ``True``, ``False`` or ``"never"`` (see :class:`DiverseBeamOptions`).
    max_new_tokens
        Generation limit (the bound ``"never"`` uses when ``length_penalty > 0``).
    """

    __slots__ = ("size", "length_penalty", "early_stopping", "max_new_tokens", "entries", "worst")

    def __init__(self, size: int, length_penalty: float, early_stopping: bool | str,
                 max_new_tokens: int) -> None:
        self.size = size
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_new_tokens = max_new_tokens
        self.entries: list[tuple[float, SequenceResult]] = []
        self.worst = 1.0e9

    def add(self, sum_logprobs: float, length: int, make: Callable[[float], SequenceResult]) -> None:
        """Offer a sequence of ``length`` generated tokens; ``make(score)`` builds its result."""
        score = sum_logprobs / (length ** self.length_penalty)
        if len(self.entries) < self.size or score > self.worst:
            self.entries.append((score, make(score)))
            if len(self.entries) > self.size:
                order = sorted((s, i) for i, (s, _) in enumerate(self.entries))
                del self.entries[order[0][1]]
                self.worst = order[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, length: int) -> bool:
        """Whether no running beam (best candidate ``best_sum_logprobs`` at ``length``) can
        still enter the list."""
        if len(self.entries) < self.size:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            length = self.max_new_tokens
        return self.worst >= best_sum_logprobs / (length ** self.length_penalty)


class DiverseBeam(Strategy):
    """Diverse (group) beam search; token-identical to transformers <= 4.55 group beam search."""

    name = "diverse_beam"
    Options = DiverseBeamOptions
    description = "beam search in groups with a Hamming diversity penalty between groups"

    def start(self, ctx: DecodeContext) -> None:
        opts: DiverseBeamOptions = self.options  # type: ignore[assignment]
        self.B = B = len(ctx.prompts)
        self.nb = nb = opts.num_beams
        self.G = G = opts.num_groups
        self.gs = gs = nb // G
        self.K = max(2, 1 + len(ctx.backend.eos_token_ids)) * gs
        self.pad = ctx.backend.pad_token_id
        rows = ctx.new_rows()
        out, cache = ctx.prefill(rows)
        cache.select(torch.arange(B).repeat_interleave(nb))
        self.cache = cache
        # one Rows per group, [prompt][beam] inside; the cache is [prompt][group][beam]
        expand = torch.arange(B).repeat_interleave(gs)
        self.groups: list[Rows] = [(rows if g == G - 1 else rows.fork()).select(expand) for g in range(G)]
        self.logits = out.logits.index_select(0, torch.arange(B).repeat_interleave(nb))
        self.running = torch.full((B, G, gs), NEG)
        self.running[:, :, 0] = 0.0
        self.hyps = [[Hypotheses(gs, opts.length_penalty, opts.early_stopping, ctx.max_new_tokens)
                      for _ in range(G)] for _ in range(B)]
        self.group_done = [[False] * G for _ in range(B)]
        self.finished = False
        self.first = torch.arange(B)[:, None] * nb  # [B, 1] first cache row of each prompt
        self.own = torch.arange(B)[:, None] * gs + torch.arange(gs)[None, :]  # [B, gs] local rows

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        opts: DiverseBeamOptions = self.options  # type: ignore[assignment]
        B, G, gs = self.B, self.G, self.gs
        logprobs = torch.log_softmax(self.logits, dim=-1)
        vocab = logprobs.shape[-1]
        per_group = logprobs.view(B, G, gs, vocab)
        penalise = opts.diversity_penalty > 0.0 and G > 1
        counts = torch.zeros(B, vocab) if penalise else None
        chosen = torch.empty(B, G, gs, dtype=torch.long)
        src = torch.empty(B, G, gs, dtype=torch.long)
        for g in range(G):
            scores = per_group[:, g].reshape(B * gs, vocab)
            if penalise and g > 0:
                scores = (scores.view(B, gs, vocab) - (opts.diversity_penalty * counts)[:, None, :]
                          ).view(B * gs, vocab)
            tokens, local, new_rows = self._group_step(ctx, g, scores)
            self.groups[g] = new_rows
            chosen[:, g] = tokens
            src[:, g] = self.first + g * gs + local
            if penalise and g < G - 1:
                counts.scatter_add_(1, tokens, torch.ones(B, gs))  # type: ignore[union-attr]
        self.cache.select(src.view(-1))
        length = self.groups[0].num_generated
        self.finished = (length >= ctx.max_new_tokens
                         or all(all(done) for done in self.group_done))
        if self.finished:
            self._finalize(length)
        else:
            self.logits = ctx.model.decode(self.cache, chosen.view(-1)).logits
        return {}

    def _group_step(self, ctx: DecodeContext, g: int,
                    scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Rows]:
        """Choose group ``g``'s continuations from its (penalised) log-probabilities.

        Returns the chosen tokens ``[B, gs]``, the beams (within the group) they continue
        ``[B, gs]`` and the group's new rows.
        """
        B, gs, K = self.B, self.gs, self.K
        rows = self.groups[g]
        scores = ctx.processors(scores, rows)
        vocab = scores.shape[-1]
        total = (scores.view(B, gs, vocab) + self.running[:, g, :, None]).view(B, gs * vocab)
        cand_scores, flat = torch.topk(total, K, dim=1)
        beam = flat // vocab
        tokens = flat % vocab
        local = self.own[:, :1] + beam  # [B, K] rows of this group
        done = torch.tensor(self.group_done)[:, g]
        any_done = bool(done.any())
        if any_done:  # a finished group appends padding to its own rows
            own = self.own.repeat(1, K // gs)
            local = torch.where(done[:, None], own, local)
            tokens = tokens.masked_fill(done[:, None], self.pad)
        cand = rows.select(local.view(-1))
        hits = cand.append(tokens.view(-1)).view(B, K)
        if bool(hits.any()) and cand.num_generated >= ctx.max_new_tokens:
            # at the limit every row finishes; only EOS / stop endings count as ended here
            hits = hits & torch.tensor([r != LENGTH for r in cand.finish_reason]).view(B, K)
        if any_done:
            hits = hits & ~done[:, None]
        # running beams: the first gs candidates that did not end (ended ones only if too few)
        order = torch.sort(hits.long() * K + torch.arange(K)[None, :], dim=1).indices[:, :gs]
        self.running[:, g] = cand_scores.gather(1, order) + hits.gather(1, order).float() * NEG
        if any_done:
            self.running[:, g] = self.running[:, g].masked_fill(done[:, None], 0.0)
        self._offer(g, cand, cand_scores, hits)
        picked = (torch.arange(B)[:, None] * K + order).view(-1)
        return tokens.gather(1, order), local.gather(1, order) - self.own[:, :1], cand.select(picked)

    def _offer(self, g: int, cand: Rows, cand_scores: torch.Tensor, hits: torch.Tensor) -> None:
        """Add ended top-``gs`` candidates to group ``g``'s hypotheses; update its done flag."""
        gs, K = self.gs, self.K
        length = cand.num_generated
        ended = hits[:, :gs]
        listed = cand_scores.tolist() if bool(ended.any()) else None
        best = cand_scores[:, 0].tolist()
        for b in range(self.B):
            if self.group_done[b][g]:
                continue
            hyps = self.hyps[b][g]
            if listed is not None:
                for k in ended[b].nonzero().flatten().tolist():
                    r = b * K + k
                    hyps.add(listed[b][k], length, lambda s, r=r: SequenceResult(
                        cand.generated(r), s, cand.finish_reason[r], cand.stop_text[r]))
            self.group_done[b][g] = hyps.is_done(best[b], length)

    def _finalize(self, length: int) -> None:
        """Offer the running beams of groups that are not done to their hypotheses."""
        for b in range(self.B):
            for g in range(self.G):
                if self.group_done[b][g]:
                    continue
                rows = self.groups[g]
                for j in range(self.gs):
                    r = b * self.gs + j
                    reason = rows.finish_reason[r] or LENGTH
                    self.hyps[b][g].add(float(self.running[b, g, j]), length, lambda s, r=r, rows=rows,
                                        reason=reason: SequenceResult(rows.generated(r), s, reason,
                                                                      rows.stop_text[r]))

    def done(self, ctx: DecodeContext) -> bool:
        return self.finished

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        n = self.options.num_return_sequences  # type: ignore[attr-defined]
        results = []
        for b in range(self.B):
            pool = [entry for g in range(self.G) for entry in self.hyps[b][g].entries]
            ranked = sorted(pool, key=lambda entry: entry[0])  # stable: ties keep group order
            results.append([ranked.pop()[1] for _ in range(n)])
        return results


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(DiverseBeam)
