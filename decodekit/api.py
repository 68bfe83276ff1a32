"""The public API: :func:`load`, :func:`generate` and the reusable :class:`Model` handle."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from decodekit.backend import Backend
from decodekit.errors import OptionsError, UserError
from decodekit.generation import Generation
from decodekit.loop import ProcessorSpec, drive, prepare
from decodekit.manager import PluginSystem, get_plugin_system
from decodekit.strategy import Strategy
from decodekit.streaming import IncrementalDecoder, Stream

log = logging.getLogger(__name__)

_CACHE: OrderedDict[tuple[Any, ...], Model] = OrderedDict()
_CACHE_SIZE = 2
_CACHE_LOCK = threading.Lock()


class Model:
    """A loaded model, reusable across generations.

    Parameters
    ----------
    backend
        The loaded backend instance.
    reference
        What the user asked for (for display).
    system
        The plugin system used for its generations.
    """

    def __init__(self, backend: Backend, reference: Any = None,
                 system: PluginSystem | None = None) -> None:
        self.backend = backend
        self.reference = reference
        self.system = system

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.backend.tokenizer

    def __repr__(self) -> str:
        return f"Model({self.backend.model_id!r}, backend={self.backend.name!r})"

    def generate(self, prompt: Any, **kwargs: Any) -> Any:
        """Same as :func:`decodekit.generate` with ``model=self``."""
        return generate(prompt, model=self, **kwargs)


def _cache_key(model: Any, backend: str, options: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if not isinstance(model, str):
        return None
    try:
        return (model, backend, tuple(sorted((k, repr(v)) for k, v in options.items())))
    except TypeError:
        return None


def load(model: Any = "default", backend: str = "torch", *, system: PluginSystem | None = None,
         cache: bool = True, **backend_options: Any) -> Model:
    """Load a model once for many generations.

    Parameters
    ----------
    model
        ``"default"`` (the embedded SmolLM2-135M-Instruct), a local model directory, a
        ``.gguf`` file, a Hub id (when online or cached), or an already-built model object
        (e.g. a transformers ``PreTrainedModel``; pass ``tokenizer=`` too).
    backend
        Backend name (``decodekit plugins`` lists them).
    system
        Plugin system to use (default: the process-wide one).
    cache
        Reuse an already-loaded model for the same string reference and options.
    **backend_options
        Options of the backend (e.g. ``device``, ``dtype``), validated against its typed options.

    Returns
    -------
    Model
    """
    system = system or get_plugin_system()
    backend_cls = system.registry.get("backend", backend)
    # validate early so that typos fail before any loading work
    from decodekit.options import validate_options

    tokenizer = backend_options.pop("tokenizer", None)
    validate_options(backend_cls.Options, backend_options, owner=f"backend {backend!r}")
    key = _cache_key(model, backend, backend_options) if cache and tokenizer is None else None
    if key is not None:
        key = (id(system), *key)  # a pipeline's own plugin system gets its own models
    if key is not None:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    options = dict(backend_options)
    if tokenizer is not None:
        options["tokenizer"] = tokenizer
    started = time.perf_counter()
    loaded = system.call("decodekit_resolve_model", reference=model, backend=backend, options=options)
    if loaded is None:
        raise UserError(f"no installed plugin can load model {model!r} with backend {backend!r}")
    log.info("loaded model %s with backend %r in %.2f s", getattr(loaded, "model_id", model), backend,
             time.perf_counter() - started)
    handle = Model(loaded, model, system)
    if key is not None:
        with _CACHE_LOCK:
            _CACHE[key] = handle
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return handle


def generate(prompt: str | list[int] | list[str] | list[list[int]], *,
             model: Any = "default", backend: str = "torch", strategy: str | Strategy = "greedy",
             options: Mapping[str, Any] | None = None, processors: Iterable[ProcessorSpec] | None = None,
             grammar: Any = None, max_new_tokens: int = 64, seed: int | None = None,
             stream: bool = False, chat: bool = False, system_prompt: str | None = None) -> Any:
    """Generate a continuation of ``prompt``.

    Parameters
    ----------
    prompt
        A string, a list of token ids, or a list of either (a batch).
    model
        A :class:`Model` from :func:`load`, or anything :func:`load` accepts.
    backend
        Backend name when ``model`` is not a :class:`Model`.
    strategy
        Strategy name (``decodekit strategies``) or a :class:`decodekit.strategy.Strategy`.
    options
        The strategy's options; unknown keys are an error listing the valid ones.
    processors
        Logits processors in order: names, ``(name, options)`` pairs, ``{name: options}``
        mappings or instances. The ``stop`` processor (EOS) is added when absent.
    grammar
        A grammar constraint, compiled by an installed grammar engine.
    max_new_tokens
        Maximum number of generated tokens per sequence (> 0).
    seed
        Seed of the request's random generator (sampling strategies); overrides an option seed.
    stream
        Return a :class:`decodekit.streaming.Stream` of text increments instead of results.
    chat
        Wrap text prompts in the model's chat template as a user message.
    system_prompt
        A system message for the chat template.

    Returns
    -------
    Generation, list[Generation] or Stream
        A :class:`Generation` for one prompt, a list for a batch, a ``Stream`` if ``stream``.
    """
    handle = model if isinstance(model, Model) else load(model, backend)
    system = handle.system or get_plugin_system()
    batch = isinstance(prompt, (list, tuple)) and bool(prompt) and not all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    prompts: list[Any] = list(prompt) if batch else [prompt]
    procs = list(processors or [])
    if grammar is not None:
        procs.append(_grammar_processor(system, grammar))
    prepared = prepare(system, handle.backend, prompts, strategy=strategy, options=options,
                       processors=procs, max_new_tokens=max_new_tokens, seed=seed, chat=chat,
                       system_prompt=system_prompt)
    events = drive(system, prepared)
    if stream:
        stops: tuple[str, ...] = ()
        for proc in prepared.chain:
            if proc.name == "stop":
                stops = tuple(proc.options.strings)  # type: ignore[attr-defined]
        decoders = [IncrementalDecoder(handle.backend.tokenizer, stops, include_stop=prepared.stop_keep)
                    for _ in prompts]
        return Stream(events, decoders)
    while True:
        try:
            next(events)
        except StopIteration as stop:
            generations: list[Generation] = stop.value
            break
    return generations if batch else generations[0]


def _grammar_processor(system: PluginSystem, grammar: Any) -> Any:
    names = system.registry.names("grammar_engine")
    if not names:
        raise OptionsError("grammar= needs a grammar engine, and no installed plugin registers one")
    if "grammar" not in system.registry.names("processor"):
        raise OptionsError("grammar= needs the 'grammar' processor, which no installed plugin registers")
    return system.registry.get("processor", "grammar")({"grammar": grammar})
