"""Entropy adaptive decoding (EAD): switch between a small and a large model by entropy.

Two models with one vocabulary take turns: the small one ``M_S`` (option ``small_model``) and
the large one ``M_L`` (the model the generation runs on). Every row starts on ``M_S``. After
each token, ``H_t`` is the entropy in bits of the active model's next-token distribution
(processed logits, before temperature or truncation) and ``Hbar`` the mean of the last
``window`` of them. Once ``window`` entropies are known and at least ``min_dwell`` tokens were
generated since the row's last switch, the row moves to ``M_L`` when ``Hbar > threshold`` and
to ``M_S`` when ``Hbar <= threshold``. The next token comes from the active model, chosen by
the ``base`` strategy (greedy, sample or another token-by-token strategy).

Each model keeps its own cache over all rows of the batch. A model runs only when at least
one row is active on it; it then first consumes, in one multi-token pass, every token it has
not seen (a catch-up; its very first run is a prefill of the whole history), which brings the
cache of every row up to date. With one prompt, a model runs exactly while it is active; in a
batch, a model that runs for one row also advances the others.

``Generation.stats.forward_passes`` and ``positions`` count both models' passes; the
per-model counts, token shares, switches and cost estimates are in ``stats.extra``.

The default small model is an early-exit model: the first ``layers`` transformer blocks of the
large model with its embeddings, final norm and head (:mod:`decodekit.early_exit`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from decodekit.backend import Backend, Capability
from decodekit.errors import OptionsError, UserError
from decodekit.hookspecs import hookimpl
from decodekit.plugins.sample import SamplingOptions
from decodekit.strategy import DecodeContext, ModelRunner, SequenceResult, Strategy, TokenByToken

SMALL, LARGE = 0, 1
_SAMPLING = ("temperature", "top_k", "top_p", "min_p")


class EADOptions(SamplingOptions):
    """Options of the ``ead`` strategy (the sampling options apply with ``base = 'sample'``)."""

    small_model: Any = Field(None, description="the small model: a reference load() accepts, a "
                                               "loaded Model or Backend; omitted: the first "
                                               "`layers` layers of the model (early exit)")
    layers: int = Field(8, ge=1, description="transformer layers of the early-exit small model")
    threshold: float = Field(2.0, description="entropy (bits): the large model runs while the "
                                              "rolling mean is above it (inf: small only, "
                                              "-inf: large only after the first window)")
    window: int = Field(5, ge=1, description="entropies in the rolling mean")
    min_dwell: int | None = Field(None, ge=0, description="tokens a row stays on a model after a "
                                                          "switch before it may switch again "
                                                          "(default: window)")
    base: str = Field("greedy", description="token choice: 'greedy', 'sample' or another "
                                            "token-by-token strategy")
    base_options: dict[str, Any] = Field(default_factory=dict,
                                         description="options of a base other than 'sample'")

    @model_validator(mode="after")
    def _check(self) -> EADOptions:
        ref = self.small_model
        if ref is not None and not isinstance(ref, (str, Path, Backend)) and \
                not isinstance(getattr(ref, "backend", None), Backend):
            raise ValueError(f"small_model must be a model reference (e.g. 'default', a path, a "
                             f"Hub id), a loaded Model or a Backend, got {type(ref).__name__}")
        if ref is not None and "layers" in self.model_fields_set:
            raise ValueError("layers applies only to the default early-exit small model; leave "
                             "it out when small_model is given")
        if math.isnan(self.threshold):
            raise ValueError("threshold must be a number of bits (or inf / -inf), not NaN")
        sampling = sorted(set(_SAMPLING) & self.model_fields_set)
        if self.base != "sample" and sampling:
            raise ValueError(f"{', '.join(sampling)} appl{'y' if len(sampling) > 1 else 'ies'} "
                             f"only with base='sample' (base is {self.base!r})")
        if self.base == "sample" and self.base_options:
            raise ValueError("with base='sample' give temperature, top_k, top_p and min_p as "
                             "options of 'ead', not in base_options")
        return self


class _SmallRunner(ModelRunner):
    """The small model's runner: counts its own calls and adds them to the generation's."""

    __slots__ = ("total",)

    def __init__(self, backend: Backend, total: ModelRunner) -> None:
        super().__init__(backend)
        self.total = total

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                return_hidden: bool = False) -> Any:
        self.total.forward_passes += 1
        self.total.positions += input_ids.numel()
        return super().prefill(input_ids, attention_mask, return_hidden=return_hidden)

    def decode(self, cache: Any, token_ids: torch.Tensor, *, return_hidden: bool = False,
               all_positions: bool = False) -> Any:
        self.total.forward_passes += 1
        self.total.positions += token_ids.numel()
        return super().decode(cache, token_ids, return_hidden=return_hidden,
                              all_positions=all_positions)


def check_vocabularies(large: Backend, small: Backend) -> None:
    """Raise :class:`UserError` unless the two models share one vocabulary."""
    what = f"the small model {small.model_id!r} and the model {large.model_id!r}"
    if large.vocab_size != small.vocab_size:
        raise UserError(f"strategy 'ead': {what} must share a vocabulary, but their logits have "
                        f"{small.vocab_size} and {large.vocab_size} entries")
    if large.tokenizer is not small.tokenizer and \
            large.tokenizer.get_vocab() != small.tokenizer.get_vocab():
        raise UserError(f"strategy 'ead': {what} must share a vocabulary, but their tokenizers "
                        "map tokens to different ids")


def resolve_small(ctx: DecodeContext, options: EADOptions) -> Backend:
    """The small model's backend: the given one, a loaded reference or the early exit."""
    ref = options.small_model
    if ref is None:
        from decodekit.early_exit import early_exit_backend

        return early_exit_backend(ctx.backend, options.layers)
    if isinstance(ref, Backend):
        return ref
    if isinstance(getattr(ref, "backend", None), Backend):
        return ref.backend
    from decodekit.api import load

    backend_options = {}
    device = getattr(ctx.backend, "device", None)
    if device is not None and "device" in type(ctx.backend).Options.model_fields:
        backend_options["device"] = str(device)  # next to the large model
    return load(str(ref), backend=ctx.backend.name, **backend_options).backend


def make_base(options: EADOptions) -> TokenByToken:
    """The token-choosing strategy named by ``options.base``."""
    from decodekit.manager import get_plugin_system

    cls = get_plugin_system().registry.get("strategy", options.base)
    if not (isinstance(cls, type) and issubclass(cls, TokenByToken)):
        raise OptionsError(f"strategy 'ead': base {options.base!r} is not a token-by-token "
                           "strategy; use 'greedy', 'sample' or another strategy that picks one "
                           "token per row from the logits")
    if options.base == "sample":
        return cls({k: getattr(options, k) for k in (*_SAMPLING, "seed")})
    return cls(options.base_options)


class EAD(Strategy):
    """Entropy adaptive decoding with a small and a large model."""

    name = "ead"
    Options = EADOptions
    requires = frozenset({Capability.MULTI_TOKEN})
    description = "decode with a small model, switch to the large one where entropy is high"

    def start(self, ctx: DecodeContext) -> None:
        opts: EADOptions = self.options  # type: ignore[assignment]
        self.base = make_base(opts)
        small = resolve_small(ctx, opts)
        if Capability.MULTI_TOKEN not in small.capabilities:
            raise UserError(f"strategy 'ead': the small model's backend {small.name!r} cannot "
                            "decode several tokens in one pass (capability multi_token)")
        check_vocabularies(ctx.backend, small)
        self.small_backend = small
        self.runners = [_SmallRunner(small, ctx.model), ctx.model]
        self.caches: list[Any] = [None, None]
        self.synced = [0, 0]
        self.logits: list[torch.Tensor | None] = [None, None]
        self.catch_ups = [0, 0]
        self.rows = ctx.new_rows()
        n = self.rows.num_rows
        self.active = torch.full((n,), SMALL, dtype=torch.long)
        self.entropies = torch.zeros(n, opts.window)
        self.seen = torch.zeros(n, dtype=torch.long)
        self.since = torch.zeros(n, dtype=torch.long)
        self.tokens = [0, 0]
        #: per row, (model, entropy in bits) of every generated token (0: small, 1: large)
        self.trace: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        self.switches = [0, 0]  # to small, to large
        self.scores = torch.zeros(n)
        self.dwell = opts.window if opts.min_dwell is None else opts.min_dwell
        self.pad = ctx.backend.pad_token_id
        self._sync(SMALL)

    def _sync(self, model: int) -> None:
        """Bring ``model``'s cache up to the rows' length: prefill, catch-up or one token."""
        rows = self.rows
        runner = self.runners[model]
        if self.caches[model] is None:
            mask = None
            if bool((rows.prompt_lengths != rows.prompt_width).any()):
                tail = torch.ones(rows.num_rows, rows.length - rows.prompt_width, dtype=torch.long)
                mask = torch.cat([rows.attention_mask(), tail], dim=1)
            out, self.caches[model] = runner.prefill(rows.tokens[:, :rows.length], mask)
            if rows.length > rows.prompt_width:
                self.catch_ups[model] += 1
        else:
            missing = rows.tokens[:, self.synced[model]:rows.length]
            out = runner.decode(self.caches[model], missing)
            if missing.shape[1] > 1:
                self.catch_ups[model] += 1
        self.synced[model] = rows.length
        self.logits[model] = out.logits

    def _needed(self) -> list[int]:
        live = ~self.rows.finished
        return [m for m in (SMALL, LARGE) if bool((live & (self.active == m)).any())]

    def step(self, ctx: DecodeContext) -> dict[int, list[int]]:
        rows = self.rows
        needed = self._needed()
        first = self.logits[needed[0]]
        assert first is not None
        logits = first.clone()
        for m in needed[1:]:
            other = self.logits[m]
            assert other is not None
            on = (self.active == m).to(logits.device)
            logits[on] = other.to(logits.device)[on]
        processed = ctx.processors(logits, rows)
        tokens = self.base.choose(processed, ctx)
        finished = rows.finished
        tokens = torch.where(finished, self.pad, tokens)
        logprob = processed.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(processed, dim=-1)
        self.scores += logprob.masked_fill(finished, 0.0).cpu()
        entropy = torch.special.entr(torch.softmax(processed, dim=-1)).sum(-1).cpu() / math.log(2)
        was_active = ~finished
        rows.append(tokens)
        for m in (SMALL, LARGE):
            self.tokens[m] += int((was_active & (self.active == m)).sum())
        for r in was_active.nonzero().flatten().tolist():
            self.trace[r].append((int(self.active[r]), float(entropy[r])))
        self._decide(entropy, was_active)
        if not bool(rows.finished.all()):
            for m in self._needed():
                self._sync(m)
        return {int(rows.source[r]): [int(tokens[r])]
                for r in was_active.nonzero().flatten().tolist()}

    def _decide(self, entropy: torch.Tensor, was_active: torch.Tensor) -> None:
        """Record the step's entropies and switch the rows whose rolling mean crossed."""
        opts: EADOptions = self.options  # type: ignore[assignment]
        rolled = torch.cat([self.entropies[:, 1:], entropy[:, None]], dim=1)
        self.entropies = torch.where(was_active[:, None], rolled, self.entropies)
        self.seen += was_active.long()
        self.since += was_active.long()
        ready = was_active & ~self.rows.finished & (self.seen >= opts.window) & (self.since >= self.dwell)
        if not bool(ready.any()):
            return
        want = torch.where(self.entropies.mean(dim=1) > opts.threshold, LARGE, SMALL)
        switch = ready & (want != self.active)
        if bool(switch.any()):
            self.active = torch.where(switch, want, self.active)
            self.since = self.since.masked_fill(switch, 0)
            self.switches[LARGE] += int((switch & (want == LARGE)).sum())
            self.switches[SMALL] += int((switch & (want == SMALL)).sum())

    def done(self, ctx: DecodeContext) -> bool:
        return bool(self.rows.finished.all())

    def finish(self, ctx: DecodeContext) -> list[list[SequenceResult]]:
        rows = self.rows
        small = self.runners[SMALL]
        # the generation's counters hold both models' calls
        large_passes = ctx.model.forward_passes - small.forward_passes
        large_positions = ctx.model.positions - small.positions
        total = self.tokens[SMALL] + self.tokens[LARGE]
        p_small, p_large = self.small_backend.parameter_count(), ctx.backend.parameter_count()
        # what a large-only run feeds: the prompt block, then every token but the last
        reference = rows.num_rows * (rows.prompt_width + max(rows.num_generated - 1, 0))
        cost = cost_tokens = None
        if p_small and p_large:
            cost = (p_small * small.positions + p_large * large_positions) / (p_large * reference)
            if total:
                cost_tokens = (p_small * self.tokens[SMALL] + p_large * self.tokens[LARGE]) / \
                    (p_large * total)
        ctx.extra_stats.update({
            "small_model": self.small_backend.model_id,
            "tokens_small": self.tokens[SMALL],
            "tokens_large": self.tokens[LARGE],
            "large_token_share": round(self.tokens[LARGE] / total, 4) if total else 0.0,
            "switches_to_large": self.switches[LARGE],
            "switches_to_small": self.switches[SMALL],
            "forward_passes_small": small.forward_passes,
            "forward_passes_large": large_passes,
            "catch_up_passes_small": self.catch_ups[SMALL],
            "catch_up_passes_large": self.catch_ups[LARGE],
            "positions_small": small.positions,
            "positions_large": large_positions,
            "parameters_small": p_small,
            "parameters_large": p_large,
            "estimated_cost": None if cost is None else round(cost, 4),
            "estimated_cost_tokens": None if cost_tokens is None else round(cost_tokens, 4),
        })
        return [[SequenceResult(rows.generated(r), float(self.scores[r]), rows.finish_reason[r],
                                rows.stop_text[r])] for r in range(rows.num_rows)]


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(EAD)
