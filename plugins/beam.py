"""Beam search with transformers' semantics (length penalty, early stopping, returned beams).

One forward pass per step for all ``num_beams`` rows of every prompt. Per prompt, the top
``2 * num_beams`` (more with several EOS ids) continuations are ranked by accumulated
log-probability; continuations that end (EOS, stop, length) among the top ``num_beams`` are
offered to the prompt's finished hypotheses with score ``sum_logprobs / length **
length_penalty``; the best ``num_beams`` that do not end keep running. Processors receive
log-probabilities, as in transformers.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.rows import LENGTH
from decodekit.strategy import DecodeContext, SequenceResult, Strategy

NEG = -1.0e9


class BeamOptions(Options):
    """Options of the ``beam`` strategy."""

    num_beams: int = Field(4, ge=1, description="beams per prompt")
    length_penalty: float = Field(1.0, description="exponent of the length in the finished-score "
                                                   "denominator (> 0 favours longer sequences)")
    early_stopping: bool | Literal["never"] = Field(
        False, description="True: stop when num_beams hypotheses are finished; False: stop when "
                           "no running beam can beat them (heuristic); 'never': canonical search")
    num_return_sequences: int = Field(1, ge=1, description="finished hypotheses returned per prompt")

    @model_validator(mode="after")
    def _check(self) -> BeamOptions:
        if self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences ({self.num_return_sequences}) must be <= "
                             f"num_beams ({self.num_beams})")
        return self


class Beam(Strategy):
    """Beam search; token-identical to transformers ``generate(num_beams=...)``."""

    name = "beam"
    Options = BeamOptions
    description = "beam search with length penalty and early stopping"

    def start(self, ctx: DecodeContext) -> None:
        opts: BeamOptions = self.options  # type: ignore[assignment]
        nb = opts.num_beams
        self.B = len(ctx.prompts)
        self.nb = nb
        self.K = max(2, 1 + len(ctx.backend.eos_token_ids)) * nb
        rows = ctx.new_rows()
        out, cache = ctx.prefill(rows)
        expand = torch.arange(self.B).repeat_interleave(nb)
        cache.select(expand)
        self.cache = cache
        self.rows = rows.select(expand)
        self.logits = out.logits.index_select(0, expand)
        self.running = torch.zeros(self.B, nb)
        self.running[:, 1:] = NEG
        self.fin_scores = torch.full((self.B, nb), NEG)
        self.fin_done = torch.zeros(self.B, nb, dtype=torch.bool)
        self.fin_seqs: list[list[SequenceResult | None]] = [[None] * nb for _ in range(self.B)]
        self.improvable = torch.ones(self.B, 1, dtype=torch.bool)
        self.all_hit = False
        self.top_mask = torch.arange(self.K) < nb

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        opts: BeamOptions = self.options  # type: ignore[assignment]
        B, nb, K = self.B, self.nb, self.K
        logprobs = torch.log_softmax(self.logits, dim=-1)
        logprobs = ctx.processors(logprobs, self.rows)
        vocab = logprobs.shape[-1]
        total = (logprobs.view(B, nb, vocab) + self.running[:, :, None]).view(B, nb * vocab)
        cand_scores, flat = torch.topk(total, K, dim=1)
        beam = flat // vocab
        tokens = flat % vocab
        src = (torch.arange(B)[:, None] * nb + beam).view(-1)
        cand = self.rows.select(src)
        hits = cand.append(tokens.view(-1)).view(B, K)

        # running beams for the next step
        run_scores = cand_scores + hits.float() * NEG
        nxt = torch.topk(run_scores, nb, dim=1).indices
        self.running = run_scores.gather(1, nxt)

        # offer just-finished top-nb candidates to the finished hypotheses
        length = cand.num_generated
        fin = cand_scores / (length ** opts.length_penalty)
        full = self.fin_done.all(dim=1, keepdim=True) & (opts.early_stopping is True)
        fin = fin + full.float() * NEG + (~self.improvable).float() * NEG
        just = hits & self.top_mask[None, :]
        fin = fin + (~just).float() * NEG
        merged = torch.cat([self.fin_scores, fin], dim=1)
        keep = torch.topk(merged, nb, dim=1).indices
        self.fin_scores = merged.gather(1, keep)
        self.fin_done = torch.cat([self.fin_done, just], dim=1).gather(1, keep)
        for b, picks in enumerate(keep.tolist()):
            if all(p < nb for p in picks) and picks == list(range(nb)):
                continue
            old = self.fin_seqs[b]
            new = []
            for slot, p in enumerate(picks):
                if p < nb:
                    new.append(old[p])
                else:
                    r = b * K + (p - nb)
                    new.append(SequenceResult(cand.generated(r), float(self.fin_scores[b, slot]),
                                              cand.finish_reason[r], cand.stop_text[r]))
            self.fin_seqs[b] = new

        # move rows and cache to the chosen running beams
        sel = (torch.arange(B)[:, None] * K + nxt).view(-1)
        self.rows = cand.select(sel)
        self.cache.select(src.index_select(0, sel))
        # every row ends at the limit (rows a processor already finished, e.g. with a token the
        # grammar rejects, are not among this step's hits)
        self.all_hit = bool(hits.all()) or cand.num_generated >= ctx.max_new_tokens

        # can anything still improve?
        if opts.early_stopping == "never" and opts.length_penalty > 0.0:
            best_len = ctx.max_new_tokens
        else:
            best_len = length
        best_running = self.running[:, :1] / (best_len ** opts.length_penalty)
        worst_fin = torch.where(self.fin_done, self.fin_scores.min(dim=1, keepdim=True).values,
                                torch.tensor(NEG))
        self.improvable = self.improvable & (best_running > worst_fin).any(dim=-1, keepdim=True)
        if not self.done(ctx):
            self.logits = ctx.model.decode(self.cache, self.rows.tokens[:, self.rows.length - 1]).logits
        return {}

    def done(self, ctx: DecodeContext) -> bool:
        if self.all_hit:
            return True
        if not bool(self.improvable.any()):
            return True
        return bool(self.fin_done.all()) and self.options.early_stopping is True  # type: ignore[attr-defined]

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        n = self.options.num_return_sequences  # type: ignore[attr-defined]
        results = []
        for b in range(self.B):
            # only slots that hold ended hypotheses (a slot's score can round to the empty
            # slots' NEG in float32 and take a candidate that did not end)
            done = self.fin_done[b].tolist()
            seqs = [s for s, d in zip(self.fin_seqs[b], done) if s is not None and d][:n]
            r = b * self.nb
            while len(seqs) < n:  # nothing finished in time: return running beams
                seqs.append(SequenceResult(self.rows.generated(r), float(self.running[b, r - b * self.nb]),
                                           self.rows.finish_reason[r] or LENGTH, self.rows.stop_text[r]))
                r += 1
            results.append(seqs)
        return results


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Beam)
