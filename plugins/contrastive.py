"""Contrastive search (Su et al.): likely tokens that do not repeat what the context says.

At every step the ``top_k`` most likely tokens are candidates. All of them run through the
model together, in one forward pass (:meth:`decodekit.backend.Backend.decode_candidates`: the
torch backend feeds them as ``top_k`` positions of their row instead of copying the cache), and
each candidate's final hidden state is compared (cosine similarity) with the hidden states of
every earlier position of its row, prompt included. The degeneration penalty is the largest
similarity; the chosen candidate maximises ``(1 - alpha) * p - alpha * penalty``. Its logits,
cache entries and hidden state are kept, so the next step needs no further forward pass: the
cost per token is one forward pass over ``top_k`` candidates per row. Where the backend can
apply its output layer on its own (checked once against the prefill's logits), the candidates'
forward pass stops at the hidden states and only the chosen rows get logits, which saves
``top_k - 1`` output-layer products per row.

Token-identical to transformers (<= 4.55) ``generate(penalty_alpha=alpha, top_k=top_k)`` in
float32 for the same model and inputs, except that padding never enters the maximum (where a
padding hidden state is the zero vector, transformers' padded rows fall back to greedy).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from decodekit.backend import Capability
from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.strategy import DecodeContext, SequenceResult, Strategy

#: initial room (positions) reserved past the prompt in the context buffer; doubled on demand
_GROW = 64


class ContrastiveOptions(Options):
    """Options of the ``contrastive`` strategy."""

    top_k: int = Field(4, ge=1, description="candidates per step (one forward pass over all of them)")
    alpha: float = Field(0.6, ge=0.0, le=1.0,
                         description="weight of the degeneration penalty; 0 gives greedy decoding")


def normalize(hidden: torch.Tensor) -> torch.Tensor:
    """Unit-length float32 copies of the vectors along the last dimension of ``hidden``."""
    hidden = hidden.float()
    return hidden / hidden.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


class ContextStates:
    """The normalised final hidden states of every row's context, grown one position a step.

    Parameters
    ----------
    prompt_hidden
        ``[rows, width, hidden]`` hidden states of the left-padded prompt block.
    valid
        ``[rows, width]`` bool, ``False`` at padding positions (never part of the maximum);
        ``None`` when no row is padded.
    room
        Positions to reserve for generated tokens.
    """

    def __init__(self, prompt_hidden: torch.Tensor, valid: torch.Tensor | None, room: int) -> None:
        rows, width, size = prompt_hidden.shape
        self.length = width
        self.buffer = prompt_hidden.new_empty((rows, width + max(1, room), size), dtype=torch.float32)
        self.buffer[:, :width] = normalize(prompt_hidden)
        self.valid = None
        if valid is not None:
            self.valid = torch.ones(rows, self.buffer.shape[1], dtype=torch.bool, device=valid.device)
            self.valid[:, :width] = valid

    def penalty(self, candidates: torch.Tensor) -> torch.Tensor:
        """Largest cosine similarity of each candidate with its row's context.

        Parameters
        ----------
        candidates
            ``[rows, k, hidden]`` normalised candidate hidden states.

        Returns
        -------
        torch.Tensor
            ``[rows, k]`` float32 penalties.
        """
        context = self.buffer[:, :self.length]
        cos = torch.bmm(candidates, context.transpose(1, 2))  # [rows, k, length]
        if self.valid is not None:
            cos.masked_fill_(~self.valid[:, None, :self.length], float("-inf"))
        return cos.max(dim=-1).values

    def append(self, hidden: torch.Tensor) -> None:
        """Add one normalised hidden state ``[rows, hidden]`` per row."""
        if self.length == self.buffer.shape[1]:
            grown = self.buffer.new_empty((self.buffer.shape[0], 2 * self.length, self.buffer.shape[2]))
            grown[:, :self.length] = self.buffer
            self.buffer = grown
            if self.valid is not None:
                valid = self.valid.new_ones((self.valid.shape[0], 2 * self.length))
                valid[:, :self.length] = self.valid
                self.valid = valid
        self.buffer[:, self.length] = hidden
        self.length += 1


def separate_head_matches(ctx: DecodeContext, hidden: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether ``ctx.model.lm_head`` turns final hidden states ``[rows, hidden]`` into the
    ``logits`` a forward pass gave for them (a model may transform logits after its output
    layer; then the backend's separate head must not be used)."""
    head = ctx.model.lm_head(hidden)
    if head is None or head.shape != logits.shape:
        return False
    tol = max(1e-4, 8 * torch.finfo(hidden.dtype).eps) if hidden.is_floating_point() else 1e-4
    scale = float(logits.abs().max()) if logits.numel() else 1.0
    return bool(torch.allclose(head.to(logits.device), logits, rtol=tol, atol=tol * max(scale, 1.0)))


class Contrastive(Strategy):
    """Contrastive search: ``argmax (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j)`` over the
    ``top_k`` most likely tokens ``v``.

    Every set of logits it examines goes through the processor chain first; candidates that a
    processor forbids (logit ``-inf``) are never chosen, even when fewer than ``top_k`` tokens
    remain allowed. The row token history is not expanded: only the chosen candidate is
    appended to a row, so processor states follow the rows without copies.
    """

    name = "contrastive"
    Options = ContrastiveOptions
    requires = frozenset({Capability.HIDDEN_STATES, Capability.CACHE_OPS})
    description = "contrastive search: likely tokens unlike the context (Su et al.)"

    def start(self, ctx: DecodeContext) -> None:
        self.rows = rows = ctx.new_rows()
        out, self.cache = ctx.prefill(rows, return_hidden="all")
        if out.hidden is None or out.hidden.dim() != 3:
            raise RuntimeError(f"backend {ctx.backend.name!r} returned no per-position hidden states "
                               "from prefill(return_hidden='all')")
        padded = bool((rows.prompt_lengths != rows.prompt_width).any())
        valid = rows.attention_mask().bool().to(out.hidden.device) if padded else None
        self.context = ContextStates(out.hidden, valid, min(ctx.max_new_tokens, _GROW))
        self.logits: torch.Tensor | None = out.logits
        self.chosen_hidden: torch.Tensor | None = None
        self.split = separate_head_matches(ctx, out.hidden[:, -1], out.logits)
        self.k = min(self.options.top_k, out.logits.shape[-1])  # type: ignore[attr-defined]
        n = rows.num_rows
        self.offsets = torch.arange(n, device=out.logits.device) * self.k
        self.scores = torch.zeros(n, dtype=torch.float32)
        self.pad = ctx.backend.pad_token_id

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        alpha: float = self.options.alpha  # type: ignore[attr-defined]
        rows, k = self.rows, self.k
        n = rows.num_rows
        if self.logits is None:  # split head: logits of the rows chosen at the previous step
            self.logits = ctx.model.lm_head(self.chosen_hidden)  # type: ignore[arg-type]
        logits = ctx.processors(self.logits, rows)  # type: ignore[arg-type]
        probs = torch.softmax(logits, dim=-1)
        top_probs, top_ids = torch.topk(probs, k, dim=-1)  # [rows, k]

        # one forward pass for every candidate of every row
        cand_logits, raw = ctx.model.decode_candidates(self.cache, top_ids, with_logits=not self.split)
        hidden = normalize(raw)  # [rows, k, hidden]

        penalty = self.context.penalty(hidden)
        score = (1.0 - alpha) * top_probs - alpha * penalty
        banned = logits.gather(1, top_ids) == float("-inf")
        if bool(banned.any()):
            score = score.masked_fill(banned, float("-inf"))
        chosen = score.argmax(dim=-1)  # first index on ties
        ctx.model.keep_candidates(self.cache, chosen)
        pick = self.offsets + chosen
        self.context.append(hidden.reshape(n * k, -1).index_select(0, pick))
        if cand_logits is None:
            self.logits, self.chosen_hidden = None, raw.reshape(n * k, -1).index_select(0, pick)
        else:
            self.logits = cand_logits.reshape(n * k, -1).index_select(0, pick)
        tokens = top_ids.gather(1, chosen[:, None]).squeeze(1).cpu()

        finished = rows.finished
        any_finished = bool(finished.any())
        if any_finished:
            tokens = torch.where(finished, self.pad, tokens)
        picked = logits.gather(1, tokens.to(logits.device)[:, None]).squeeze(1)
        logprob = (picked - torch.logsumexp(logits, dim=-1)).cpu()
        if any_finished:
            logprob = logprob.masked_fill(finished, 0.0)
        self.scores += logprob
        was_active = (~finished).nonzero().flatten().tolist()
        rows.append(tokens)
        return {int(rows.source[r]): [int(tokens[r])] for r in was_active}

    def done(self, ctx: DecodeContext) -> bool:
        return bool(self.rows.finished.all())

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        rows = self.rows
        return [[SequenceResult(rows.generated(r), float(self.scores[r]), rows.finish_reason[r],
                                rows.stop_text[r])] for r in range(rows.num_rows)]


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Contrastive)
