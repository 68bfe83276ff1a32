"""The core decode loop: resolve plugins once, then call them.

Nothing here knows any particular strategy, processor or backend. :func:`prepare` turns a
user's request into resolved objects (validated strategy, set-up processors, token ids);
:func:`drive` runs the strategy, calling observer hooks, and yields step events; its return
value is the list of :class:`decodekit.generation.Generation`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator as PyGenerator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from decodekit.backend import Backend
from decodekit.errors import CapabilityError, InputError, OptionsError, UserError
from decodekit.generation import (
    INCOMPLETE,
    INVALID,
    Generation,
    GenerationRequest,
    Sequence,
    Stats,
    StepEvent,
)
from decodekit.manager import PluginSystem
from decodekit.processor import LogitsProcessor, ProcessorChain, ProcessorContext
from decodekit.strategy import DecodeContext, ModelRunner, Strategy

log = logging.getLogger(__name__)

ProcessorSpec = str | LogitsProcessor | tuple[str, Mapping[str, Any]] | Mapping[str, Any]


@dataclass
class Prepared:
    """A request with everything resolved; run it with :func:`drive`."""

    request: GenerationRequest
    strategy: Strategy
    chain: ProcessorChain
    stop_keep: bool


def build_strategy(system: PluginSystem, strategy: str | Strategy,
                   options: Mapping[str, Any] | None) -> Strategy:
    """Instantiate a strategy by name (validating its options) or accept an instance."""
    if isinstance(strategy, Strategy):
        if options:
            raise OptionsError("options= cannot be combined with a Strategy instance; pass the "
                               "options to its constructor")
        return type(strategy)(strategy.options)  # fresh per-generation state
    if not isinstance(strategy, str):
        raise OptionsError(f"strategy must be a name or a Strategy instance, got {type(strategy).__name__}")
    cls = system.registry.get("strategy", strategy)
    return cls(options)


def adopt_processor(system: PluginSystem, obj: Any) -> LogitsProcessor | None:
    """The first registered processor class whose :meth:`LogitsProcessor.adopt` takes ``obj``."""
    for entry in system.registry.entries("processor"):
        adopt = getattr(entry.obj, "adopt", None)
        made = adopt(obj) if adopt is not None else None
        if made is not None:
            return made
    return None


def build_processors(system: PluginSystem, specs: Iterable[ProcessorSpec] | None) -> list[LogitsProcessor]:
    """Instantiate processors from names, ``(name, options)`` pairs, ``{name: options}`` mappings
    or instances, in order."""
    result: list[LogitsProcessor] = []
    for spec in specs or ():
        if isinstance(spec, LogitsProcessor):
            result.append(spec)
        elif isinstance(spec, str):
            result.append(system.registry.get("processor", spec)())
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            result.append(system.registry.get("processor", spec[0])(spec[1]))
        elif isinstance(spec, Mapping):
            for name, opts in spec.items():
                result.append(system.registry.get("processor", name)(opts))
        elif (adopted := adopt_processor(system, spec)) is not None:
            result.append(adopted)
        else:
            raise OptionsError(f"cannot make a processor from {spec!r}; give a name, a (name, "
                               f"options) pair, a {{name: options}} mapping or a LogitsProcessor")
    return result


def tokenize_prompts(backend: Backend, prompts: list[str | list[int]], *, chat: bool,
                     system_prompt: str | None = None) -> list[list[int]]:
    """Token ids per prompt; applies the chat template when ``chat``. Validates ids."""
    tok = backend.tokenizer
    out = []
    for i, prompt in enumerate(prompts):
        label = f"prompt {i}" if len(prompts) > 1 else "the prompt"
        if isinstance(prompt, str):
            if not prompt:
                raise InputError(f"{label} is empty; give some text or token ids")
            if chat:
                if getattr(tok, "chat_template", None) is None:
                    raise InputError(f"chat=True but model {backend.model_id!r} has no chat template")
                messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
                    [{"role": "user", "content": prompt}]
                ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):
                    ids = ids["input_ids"]
                ids = list(ids)
            else:
                ids = tok.encode(prompt, add_special_tokens=False)
            if not ids:
                raise InputError(f"{label} tokenises to no tokens")
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool)
                                                        for t in prompt):
            if chat:
                raise InputError("chat=True needs text prompts, not token ids")
            if not prompt:
                raise InputError(f"{label} is an empty list of token ids")
            bad = [t for t in prompt if t < 0 or t >= backend.vocab_size]
            if bad:
                raise InputError(f"{label} has token ids outside the vocabulary [0, "
                                 f"{backend.vocab_size}): {bad[:10]}")
            ids = list(prompt)
        else:
            raise InputError(f"{label} must be a string or a list of token ids, got {type(prompt).__name__}")
        out.append(ids)
    return out


def prepare(system: PluginSystem, backend: Backend, prompts: list[str | list[int]], *,
            strategy: str | Strategy = "greedy", options: Mapping[str, Any] | None = None,
            processors: Iterable[ProcessorSpec] | None = None, max_new_tokens: int = 64,
            seed: int | None = None, chat: bool = False, system_prompt: str | None = None) -> Prepared:
    """Resolve a request: strategy, processors, token ids, limits. Raises user errors early."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not prompts:
        raise InputError("no prompts given")
    strat = build_strategy(system, strategy, options)
    missing = set(strat.requires) - set(backend.capabilities)
    if missing:
        raise CapabilityError(strat.name, backend.name, missing)
    procs = build_processors(system, processors)
    stop_cls = system.registry.get("processor", "stop") if "stop" in system.registry.names("processor") else None
    if stop_cls is not None and not any(p.name == "stop" for p in procs):
        procs.append(stop_cls())
    prompt_ids = tokenize_prompts(backend, prompts, chat=chat, system_prompt=system_prompt)
    if backend.max_context is not None:
        for i, ids in enumerate(prompt_ids):
            if len(ids) + max_new_tokens > backend.max_context:
                label = f"prompt {i}" if len(prompt_ids) > 1 else "the prompt"
                raise InputError(f"{label} has {len(ids)} tokens; with max_new_tokens="
                                 f"{max_new_tokens} that exceeds the model's context of "
                                 f"{backend.max_context} tokens")
    if seed is None:
        seed = strat.seed()
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    chain = ProcessorChain(procs)
    chain.setup(ProcessorContext(backend.tokenizer, backend.vocab_size, tuple(backend.eos_token_ids),
                                 backend.pad_token_id, max_new_tokens))
    request = GenerationRequest(backend, strat.name, strat.options, procs, list(prompts), prompt_ids,
                                max_new_tokens, seed)
    keep = any(getattr(getattr(p, "options", None), "include_stop_string", False) for p in procs
               if p.name == "stop")
    return Prepared(request, strat, chain, keep)


def decode_text(backend: Backend, token_ids: list[int], stop_text: str | None, keep_stop: bool) -> str:
    """Text of generated ids, with the stop string and anything after it removed unless kept."""
    text = backend.tokenizer.decode(token_ids, skip_special_tokens=True)
    if stop_text and not keep_stop:
        cut = text.find(stop_text)
        if cut >= 0:
            text = text[:cut]
    elif stop_text and keep_stop:
        cut = text.find(stop_text)
        if cut >= 0:
            text = text[:cut + len(stop_text)]
    return text


def completeness_checks(chain: ProcessorChain) -> list[Any]:
    """The ``is_complete(token_ids) -> bool`` methods of the processors that define one.

    A processor that can tell whether generated ids form a finished text (``grammar`` does)
    defines ``is_complete``; the loop asks every such processor about every returned sequence.
    """
    checks = []
    for proc in chain:
        check = getattr(proc, "is_complete", None)
        if callable(check):
            checks.append(check)
    return checks


def finalize_sequence(backend: Backend, prepared: Prepared, result: Any) -> Sequence:
    """The :class:`Sequence` of a strategy's :class:`SequenceResult`: its text, and whether the
    processors that check completeness accept it (``finish_reason`` becomes ``"incomplete"``
    when one does not, unless the strategy already reported ``"invalid"``)."""
    text = decode_text(backend, result.token_ids, result.stop_text, prepared.stop_keep)
    reason = result.finish_reason
    checks = completeness_checks(prepared.chain)
    if not checks:
        return Sequence(text, result.token_ids, result.score, reason)
    ids = list(result.token_ids)
    if result.stop_text and text != backend.tokenizer.decode(ids, skip_special_tokens=True):
        # the text was cut at a stop string: judge the text that is returned
        ids = backend.tokenizer.encode(text, add_special_tokens=False)
    complete = all(bool(check(ids)) for check in checks)
    if not complete and reason != INVALID:
        reason = INCOMPLETE
    return Sequence(text, result.token_ids, result.score, reason, complete)


def drive(system: PluginSystem, prepared: Prepared) -> PyGenerator[StepEvent, None, list[Generation]]:
    """Run a prepared request; yields a :class:`StepEvent` per step, returns the generations."""
    request = prepared.request
    backend = request.backend
    generator = torch.Generator().manual_seed(request.seed)
    ctx = DecodeContext(ModelRunner(backend), prepared.chain, request.prompt_token_ids,
                        request.max_new_tokens, generator, request.seed)
    system.call("decodekit_generation_start", request=request)
    observe_steps = system.has_impls("decodekit_step")
    strategy = prepared.strategy
    start = time.perf_counter()
    ctx.started = start
    step = 0
    with torch.inference_mode():
        strategy.start(ctx)
        while not strategy.done(ctx):
            committed = strategy.step(ctx)
            step += 1
            event = StepEvent(step, committed, ctx.model.forward_passes, time.perf_counter() - start)
            if observe_steps:
                system.call("decodekit_step", event=event)
            yield event
        results = strategy.finish(ctx)
    seconds = time.perf_counter() - start
    generations = []
    for i, seqs in enumerate(results):
        if not seqs:
            raise UserError(f"strategy {strategy.name!r} returned no sequence for prompt {i}")
        sequences = [finalize_sequence(backend, prepared, s) for s in seqs]
        stats = Stats(ctx.model.forward_passes, ctx.model.positions, len(request.prompt_token_ids[i]),
                      len(sequences[0].token_ids), seconds, len(results),
                      {"seed": request.seed, **ctx.extra_stats})
        generations.append(Generation(request.prompts[i], request.prompt_token_ids[i], sequences,
                                      stats, strategy.name))
    log.debug("%s: %d prompt(s), %d step(s), %d forward pass(es), %.3f s", strategy.name,
              len(results), step, ctx.model.forward_passes, seconds)
    system.call("decodekit_generation_end", request=request, generations=generations)
    return generations
