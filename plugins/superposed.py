"""Superposed decoding: k drafts from one forward pass per step (Shen et al.).

The k drafts of a prompt share ONE model cache row. Each step feeds that row the superposed
embedding ``e = sum_v w[v] * E[v]`` of the drafts' last tokens, where ``w`` is the softmax of
the drafts' scores (summed per token). From the resulting distribution ``p = softmax(logits /
temperature)`` every draft keeps its top ``n_token_sample`` tokens (renormalised) and scores
them with an n-gram interpolation of its own history::

    logq_d(v) = (1 - alpha) * log p_d(v) + alpha * log sum_i lambda_i * P_{i+1}-gram(v | last i tokens of d)

The best ``2k`` of ``S_d + logq_d(v)`` over all drafts are the candidates; those that end (EOS,
a stop string or token, the length limit) join the prompt's finished drafts (the best k are
kept), the best k others are the next drafts. The search of a prompt ends when no running
draft can beat its k-th finished one (scores never increase). The first step starts from the
top-k tokens of the prompt's distribution.

Processors: the drafts are k rows of :class:`decodekit.rows.Rows` over one cache row. Each
step the prompt's logits are repeated per draft and run through the processor chain with the
draft rows, so penalties, bans and grammar masks apply to each draft's own history and its own
processor state (``Rows.select`` forks states as drafts are chosen and reordered).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from decodekit.backend import Capability
from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.rows import LENGTH
from decodekit.strategy import DecodeContext, SequenceResult, Strategy

#: Extra score drop of a token the n-grams do not know, in a draft where they know another
#: token. The spec gives such tokens -inf; a large finite drop ranks them below every candidate
#: the spec would rank, but lets the search keep k drafts when fewer candidates are known.
UNKNOWN_TOKEN_PENALTY = 1.0e6


class NoNGramTableWarning(UserWarning):
    """Superposed decoding runs without an n-gram table (alpha is treated as 0)."""


class SuperposedOptions(Options):
    """Options of the ``superposed`` strategy."""

    k: int = Field(3, ge=1, le=64, description="number of drafts decoded together")
    alpha: float = Field(0.54, ge=0.0, le=1.0,
                         description="weight of the n-gram log-probability against the model's")
    temperature: float = Field(0.06, gt=0.0, description="temperature of the model distribution p")
    n_token_sample: int = Field(9, ge=1, description="tokens of p kept per draft and step")
    lambdas: list[float] = Field(default_factory=lambda: [0.01, 0.04, 0.15, 0.18, 0.12],
                                 description="interpolation weights of the 2-gram, 3-gram, ... "
                                             "estimates (non-negative, sum <= 1)")
    ngram: str | None = Field("python-stdlib",
                              description="n-gram table: a builtin name ('python-stdlib'), a file "
                                          "from `decodekit ngram build`, or null for none (alpha 0)")
    penalty: float = Field(200.0, ge=0.0,
                           description="score drop of a draft whose candidate tokens the "
                                       "n-grams all miss")

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        if not 1 <= len(value) <= 7:
            raise ValueError(f"give 1 to 7 weights (2-gram to 8-gram), got {len(value)}")
        if any(v < 0 for v in value) or sum(value) > 1.0 + 1e-9:
            raise ValueError("weights must be non-negative and sum to at most 1")
        return value

    @model_validator(mode="after")
    def _check(self) -> SuperposedOptions:
        if self.n_token_sample < self.k:
            raise ValueError(f"n_token_sample ({self.n_token_sample}) must be >= k ({self.k}): the "
                             "first step takes the k drafts from one draft's kept tokens")
        return self


class Superposed(Strategy):
    """k ranked drafts per prompt at the cost of about one decode (see module docstring)."""

    name = "superposed"
    Options = SuperposedOptions
    requires = frozenset({Capability.INPUT_EMBEDS})
    description = "k drafts from one forward pass per step (superposed embeddings + n-grams)"

    # -- setup -------------------------------------------------------------------------------

    def _load_table(self, ctx: DecodeContext) -> tuple[Any, float]:
        opts: SuperposedOptions = self.options  # type: ignore[assignment]
        if opts.alpha == 0.0:
            return None, 0.0
        if opts.ngram is None:
            warnings.warn("superposed decoding without an n-gram table (ngram=None): running with "
                          "alpha = 0", NoNGramTableWarning, stacklevel=2)
            return None, 0.0
        from decodekit.ngram_corpus import resolve_table

        return resolve_table(opts.ngram, ctx.backend.tokenizer), opts.alpha

    def start(self, ctx: DecodeContext) -> None:
        opts: SuperposedOptions = self.options  # type: ignore[assignment]
        self.k = k = opts.k
        self.B = B = len(ctx.prompts)
        self.table, self.alpha = self._load_table(ctx)
        self.lambdas = list(opts.lambdas)
        rows = ctx.new_rows()
        out, self.cache = ctx.prefill(rows)
        self.logits = out.logits
        self.rows = rows.select(torch.arange(B).repeat_interleave(k))
        # all drafts start as copies of the prompt: only the first one may extend at step 1
        self.scores = torch.full((B, k), float("-inf"), dtype=torch.float64)
        self.scores[:, 0] = 0.0
        self.finished: list[list[SequenceResult]] = [[] for _ in range(B)]
        self.fin_worst = torch.full((B,), float("-inf"), dtype=torch.float64)
        self.prompt_done = torch.zeros(B, dtype=torch.bool)
        self.embeddings = ctx.backend.input_embeddings()
        self.weights = torch.zeros(B, k)
        self.lookup_seconds = 0.0
        self.unknown_drafts = 0
        ctx.extra_stats.update({"drafts": k, "ngram_table": self.table.name if self.table else None,
                                "alpha_used": self.alpha})

    # -- one step ----------------------------------------------------------------------------

    def _interpolate(self, logp: torch.Tensor, tokens: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``logq`` of the kept tokens ``[B*k, n]`` from their model log-probabilities."""
        a = self.alpha
        lm = torch.where(allowed, (1.0 - a) * logp, float("-inf"))
        if self.table is None:
            return lm
        rows = self.rows
        width = len(self.lambdas)
        start = rows.length - width
        hist = rows.tokens[:, max(start, 0):rows.length]
        if start < 0:
            hist = torch.nn.functional.pad(hist, (-start, 0))
        real = rows.length - (rows.prompt_width - rows.prompt_lengths)
        began = time.perf_counter()
        pn = self.table.interpolate(hist.numpy(), real.clamp(max=width).numpy(), tokens.numpy(),
                                    self.lambdas)
        self.lookup_seconds += time.perf_counter() - began
        logq = lm + a * torch.from_numpy(pn).log()
        known = torch.isfinite(logq)
        unknown_draft = ~known.any(dim=-1, keepdim=True)
        live = torch.isfinite(self.scores).view(-1, 1)
        self.unknown_drafts += int((unknown_draft & live).sum())
        fallback = lm - self.options.penalty  # type: ignore[attr-defined]
        logq = torch.where(unknown_draft, fallback, logq)
        return torch.where(known | unknown_draft | ~allowed, logq, fallback - UNKNOWN_TOKEN_PENALTY)

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        opts: SuperposedOptions = self.options  # type: ignore[assignment]
        B, k = self.B, self.k
        rows = self.rows
        logits = ctx.processors(self.logits.repeat_interleave(k, dim=0), rows)
        n = min(opts.n_token_sample, logits.shape[-1])
        values, tokens = (t.cpu() for t in torch.topk(logits, n, dim=-1))
        allowed = torch.isfinite(values)
        scaled = values.double() / opts.temperature
        logp = torch.where(allowed, scaled - torch.logsumexp(scaled, dim=-1, keepdim=True),
                           float("-inf"))
        logq = self._interpolate(logp, tokens, allowed)
        total = (self.scores.view(B * k, 1) + logq).view(B, k * n)
        total[self.prompt_done] = float("-inf")
        m = min(2 * k, k * n)
        cand_scores, flat = torch.topk(total, m, dim=1)
        src = (torch.arange(B)[:, None] * k + flat // n).view(-1)
        cand_tokens = tokens.view(B, k * n).gather(1, flat).view(-1)
        cand = rows.select(src)
        cand.append(cand_tokens)
        ended = cand.finished.view(B, m)
        valid = torch.isfinite(cand_scores)
        offered = valid & ended
        if bool(offered.any()):
            self._offer(cand, cand_scores, offered)
        running = torch.where(valid & ~ended, cand_scores, float("-inf"))
        self.scores, keep = torch.topk(running, k, dim=1)
        self.rows = cand.select((torch.arange(B)[:, None] * m + keep).view(-1))
        best = self.scores.max(dim=1).values
        self.prompt_done |= (best == float("-inf")) | (best <= self.fin_worst)
        if not self.done(ctx):
            embeds = self._superpose()
            self.logits = ctx.model.decode_embeds(self.cache, embeds[:, None, :]).logits
        self._report(ctx)
        return {}

    def _offer(self, cand: Any, scores: torch.Tensor, offered: torch.Tensor) -> None:
        """Add the candidates in ``offered`` to their prompts' finished drafts (best k kept)."""
        m = offered.shape[1]
        for b, j in offered.nonzero().tolist():
            r = b * m + j
            self.finished[b].append(SequenceResult(cand.generated(r), float(scores[b, j]),
                                                   cand.finish_reason[r], cand.stop_text[r]))
        for b in set(offered.nonzero()[:, 0].tolist()):
            kept = sorted(self.finished[b], key=lambda s: -s.score)[:self.k]
            self.finished[b] = kept
            if len(kept) == self.k:
                self.fin_worst[b] = kept[-1].score

    def _superpose(self) -> torch.Tensor:
        """The superposed input embedding ``[B, hidden]`` of the drafts' last tokens."""
        B, k = self.B, self.k
        weights = torch.softmax(self.scores, dim=1)
        # a prompt whose search ended still occupies its cache row: feed it a plain mixture
        weights = torch.where(self.prompt_done[:, None], torch.full_like(weights, 1.0 / k), weights)
        self.weights = weights.float()
        last = self.rows.tokens[:, self.rows.length - 1].view(B, k)
        table = self.embeddings
        vectors = table[last.to(table.device)].float()
        return (self.weights.to(table.device)[..., None] * vectors).sum(dim=1)

    def _report(self, ctx: DecodeContext) -> None:
        ctx.extra_stats["ngram_lookup_seconds"] = round(self.lookup_seconds, 6)
        ctx.extra_stats["unknown_draft_steps"] = self.unknown_drafts

    # -- end ---------------------------------------------------------------------------------

    def done(self, ctx: DecodeContext) -> bool:
        return bool(self.prompt_done.all())

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        results = []
        for b in range(self.B):
            seqs = list(self.finished[b])
            # the search ran out of candidates before k drafts finished: add the running ones
            running = [d for d in range(self.k) if bool(torch.isfinite(self.scores[b, d]))]
            if not seqs and not running:
                running = [0]
            for d in running[:max(0, self.k - len(seqs))]:
                r = b * self.k + d
                seqs.append(SequenceResult(self.rows.generated(r), float(self.scores[b, d]),
                                           self.rows.finish_reason[r] or LENGTH, self.rows.stop_text[r]))
            results.append(sorted(seqs, key=lambda s: -s.score))
        return results


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Superposed)


# -- the `decodekit ngram` command ---------------------------------------------------------------


def _setup_ngram(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Arguments of ``decodekit ngram {build,info}``; returns the function that runs it."""
    from decodekit.ngram import DEFAULT_ORDERS, MAX_ORDER

    actions = parser.add_subparsers(dest="ngram_action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build", help="count the n-grams of a corpus with a model's tokenizer into a table file",
        description="Count 2..N-gram continuations of a text corpus, tokenised with a model's "
                    "tokenizer, into a memory-mapped table for the superposed strategy's `ngram` option.")
    build.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                       help="text files, or directories searched recursively for --pattern files")
    build.add_argument("--tokenizer", required=True, metavar="MODEL",
                       help="'default', a model directory, a .gguf file or a Hub id")
    build.add_argument("--out", required=True, metavar="FILE", help="table file to write")
    build.add_argument("--max-order", type=int, default=max(DEFAULT_ORDERS), metavar="N",
                       help=f"largest n-gram order, 2..{MAX_ORDER} (default %(default)s)")
    build.add_argument("--pattern", action="append", metavar="GLOB",
                       help="file name pattern inside directories (repeatable; default *.txt, "
                            "*.md, *.rst, *.py)")
    build.add_argument("--name", help="name stored in the table (default: the output file's stem)")
    info = actions.add_parser("info", help="print a table's header (orders, sizes, corpus, tokenizer)")
    info.add_argument("table", metavar="FILE")
    return _run_ngram


def _run_ngram(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from decodekit import ngram, ngram_corpus
    from decodekit.errors import InputError

    if args.ngram_action == "info":
        table = ngram.NGramTable.open(args.table)
        print(json.dumps({**table.meta, "contexts": len(table.ctx_keys), "entries": len(table.entry_keys),
                          "bytes": Path(args.table).stat().st_size}, indent=2, default=str))
        return 0
    if not 2 <= args.max_order <= ngram.MAX_ORDER:
        raise InputError(f"--max-order must lie in 2..{ngram.MAX_ORDER}, got {args.max_order}")
    began = time.perf_counter()
    files = ngram_corpus.read_corpus(args.corpus, tuple(args.pattern) if args.pattern else
                              ("*.txt", "*.md", "*.rst", "*.py"))
    tokenizer = ngram_corpus.load_tokenizer(args.tokenizer)
    out = Path(args.out)
    table = ngram.build_table([text for _, text in files], tokenizer, range(2, args.max_order + 1),
                              name=args.name or out.stem,
                              corpus={"files": len(files), "characters": sum(len(t) for _, t in files)})
    table.save(out)
    print(f"wrote {out}: {len(table.ctx_keys)} contexts, {len(table.entry_keys)} n-grams of orders "
          f"{list(table.orders)} from {table.meta['tokens']} tokens in {len(files)} files "
          f"({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - began:.1f} s)")
    return 0


@hookimpl
def decodekit_register_commands(register: Any) -> None:
    register("ngram", _setup_ngram, "build and inspect n-gram tables (used by superposed decoding)")
