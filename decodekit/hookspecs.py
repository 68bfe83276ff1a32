"""The extension points of decodekit.

Every builtin strategy, processor and backend is a plugin that implements these hooks, exactly
as a third-party package does through the ``decodekit`` entry-point group. Each function below is
a specification: it does nothing, and its docstring says when decodekit calls it, with what, and
what it expects back.

Hooks are called by keyword; an implementation may accept any subset of the arguments.
Registration hooks run once per plugin system (lazily, on first use). Observer hooks run once
per generation (start, end) or once per decoding step; the per-token path never goes through a
hook call for each candidate token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.backend import Backend
    from decodekit.generation import Generation, GenerationRequest, StepEvent

PROJECT = "decodekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def decodekit_register_strategies(register: Callable[[type], None]) -> None:
    """Register decoding strategies.

    Called once when the plugin system builds its registry.

    Parameters
    ----------
    register
        Call ``register(StrategyClass)`` for each strategy. The class derives from
        :class:`decodekit.strategy.Strategy` and names itself with its ``name`` attribute;
        its typed options are its ``Options`` class. Registering a name that another plugin
        already registered raises :class:`decodekit.errors.PluginConflictError`.
    """


@hookspec
def decodekit_register_processors(register: Callable[[type], None]) -> None:
    """Register logits processors.

    Called once when the plugin system builds its registry.

    Parameters
    ----------
    register
        Call ``register(ProcessorClass)`` for each processor, a subclass of
        :class:`decodekit.processor.LogitsProcessor` with a unique ``name``.
    """


@hookspec
def decodekit_register_backends(register: Callable[[type], None]) -> None:
    """Register model backends.

    Called once when the plugin system builds its registry.

    Parameters
    ----------
    register
        Call ``register(BackendClass)`` for each backend, a subclass of
        :class:`decodekit.backend.Backend` with a unique ``name`` and its ``capabilities``.
    """


@hookspec
def decodekit_register_grammar_engines(register: Callable[[str, Any], None]) -> None:
    """Register grammar engines (compilers of grammars into token masks).

    Called once when the plugin system builds its registry.

    Parameters
    ----------
    register
        Call ``register(name, engine)`` for each engine. ``engine`` is an object with a
        ``compile(grammar, tokenizer)`` method returning a compiled grammar whose
        ``matcher()`` creates per-sequence matchers.
    """


@hookspec
def decodekit_register_commands(register: Callable[[str, Callable[..., Any], str], None]) -> None:
    """Register subcommands of the ``decodekit`` command line.

    Called once when the CLI starts.

    Parameters
    ----------
    register
        Call ``register(name, setup, help)``. ``setup(parser)`` receives an
        :class:`argparse.ArgumentParser` for the subcommand, adds its arguments and returns
        the function ``run(args) -> int | None`` that executes it.
    """


@hookspec(firstresult=True)
def decodekit_resolve_model(reference: Any, backend: str, options: dict[str, Any]) -> Backend | None:
    """Turn a model reference into a loaded backend model.

    Called by :func:`decodekit.load` (and by ``generate`` for a model given by name) with the
    first implementation to return something other than ``None`` winning.

    Parameters
    ----------
    reference
        What the user passed as ``model``: ``"default"``, a local path, a ``.gguf`` file, a
        Hub id, or an already-built model object.
    backend
        The name of the backend the user chose (e.g. ``"torch"``).
    options
        Backend options (device, dtype, ...), already checked to be a dict.

    Returns
    -------
    Backend or None
        A loaded backend instance, or ``None`` if this plugin does not handle the reference or
        the backend.
    """


@hookspec
def decodekit_generation_start(request: GenerationRequest) -> None:
    """Observe the start of a generation.

    Called once per call of ``generate`` (once per batch), after options were validated and the
    prompts tokenised, before the first forward pass.

    Parameters
    ----------
    request
        The resolved request: model, strategy and processors, prompt token ids and limits.
        Treat it as read-only.
    """


@hookspec
def decodekit_step(event: StepEvent) -> None:
    """Observe one decoding step (streaming, tracing, metrics).

    Called after each step of the strategy, with the tokens committed in that step. Keep it
    cheap: it runs once per generated token position.

    Parameters
    ----------
    event
        The step number, the committed token ids per prompt, and running statistics.
        Read-only.
    """


@hookspec
def decodekit_generation_end(request: GenerationRequest, generations: list[Generation]) -> None:
    """Observe the end of a generation.

    Called once per call of ``generate``, after the strategy finished and the results were
    built, before they are returned.

    Parameters
    ----------
    request
        The request that ran.
    generations
        One :class:`decodekit.generation.Generation` per prompt, in prompt order. Read-only.
    """
