"""One test per hookspec, showing when decodekit calls it and with which arguments.

:data:`COVERED` must list every hookspec in :mod:`decodekit.hookspecs`, so that a new hook
without a test here fails :func:`test_every_hookspec_is_covered`.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

import pytest

import decodekit
from decodekit import hookspecs
from decodekit.api import Model
from decodekit.backend import Backend
from decodekit.generation import Generation, GenerationRequest, StepEvent
from decodekit.hookspecs import hookimpl
from decodekit.manager import PluginSystem
from decodekit.processor import LogitsProcessor
from decodekit.strategy import Strategy

COVERED = {
    "decodekit_register_strategies",
    "decodekit_register_processors",
    "decodekit_register_backends",
    "decodekit_register_grammar_engines",
    "decodekit_register_commands",
    "decodekit_resolve_model",
    "decodekit_generation_start",
    "decodekit_step",
    "decodekit_generation_end",
}


def _hookspec_names() -> set[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, marker)}


def test_every_hookspec_is_covered() -> None:
    names = _hookspec_names()
    assert len(names) >= 9
    assert names == COVERED, f"hookspecs without a test: {names - COVERED}; stale: {COVERED - names}"


def test_every_hookspec_is_documented() -> None:
    for name in _hookspec_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert name.startswith("decodekit_") and "Parameters" in doc, name


def test_resolve_model_is_firstresult() -> None:
    spec = PluginSystem(builtins=False, entry_points=False).pm.hook.decodekit_resolve_model.spec
    assert spec.opts["firstresult"]


# -- registration hooks --------------------------------------------------------------------

def test_register_strategies(system: PluginSystem, tiny: Any) -> None:
    from decodekit.plugins.greedy import Greedy

    class Argmax2(Greedy):
        name = "argmax2"

    seen = []

    class P:
        @hookimpl
        def decodekit_register_strategies(self, register: Any) -> None:
            seen.append(register)
            register(Argmax2)

    system.register(P(), name="p")
    assert system.registry.get("strategy", "argmax2") is Argmax2
    assert len(seen) == 1 and callable(seen[0])
    system.registry  # noqa: B018  (built once, not per access)
    assert len(seen) == 1
    assert issubclass(Argmax2, Strategy)
    g = Model(tiny.backend, "tiny", system).generate("The", strategy="argmax2", max_new_tokens=3)
    assert g.strategy == "argmax2"


def test_register_processors(system: PluginSystem) -> None:
    class Noop(LogitsProcessor):
        name = "noop"

    class P:
        @hookimpl
        def decodekit_register_processors(self, register: Any) -> None:
            register(Noop)

    system.register(P(), name="p")
    assert system.registry.get("processor", "noop") is Noop
    assert system.registry.entry("processor", "noop").plugin == "p"


def test_register_backends(system: PluginSystem) -> None:
    from decodekit.backends.pytorch import TorchBackend

    class Other(TorchBackend):
        name = "other-torch"

    class P:
        @hookimpl
        def decodekit_register_backends(self, register: Any) -> None:
            register(Other)

    system.register(P(), name="p")
    assert system.registry.get("backend", "other-torch") is Other
    assert issubclass(system.registry.get("backend", "torch"), Backend)


def test_register_grammar_engines(system: PluginSystem) -> None:
    engine = object()
    received = []

    class P:
        @hookimpl
        def decodekit_register_grammar_engines(self, register: Any) -> None:
            received.append(register)
            register("demo-engine", engine)

    system.register(P(), name="p")
    assert system.registry.get("grammar_engine", "demo-engine") is engine
    assert system.registry.entry("grammar_engine", "demo-engine").plugin == "p"
    assert len(received) == 1


def test_register_commands(system: PluginSystem) -> None:
    ran = []

    def setup(parser: argparse.ArgumentParser) -> Any:
        parser.add_argument("--times", type=int, default=1)
        return lambda args: ran.append(args.times) or 0

    class P:
        @hookimpl
        def decodekit_register_commands(self, register: Any) -> None:
            register("hello", setup, "say hello")

    system.register(P(), name="p")
    entry = system.registry.entry("command", "hello")
    assert entry.obj is setup and entry.extra == "say hello" and entry.plugin == "p"
    parser = argparse.ArgumentParser()
    run = entry.obj(parser)
    assert run(parser.parse_args(["--times", "3"])) == 0 and ran == [3]


# -- resolver ------------------------------------------------------------------------------

def test_resolve_model_first_result_wins(system: PluginSystem, tiny: Any) -> None:
    calls: list[tuple[str, Any, str, dict]] = []

    class Decline:
        @hookimpl
        def decodekit_resolve_model(self, reference: Any, backend: str, options: dict) -> Any:
            calls.append(("decline", reference, backend, options))
            return None

    class Accept:
        @hookimpl
        def decodekit_resolve_model(self, reference: Any, backend: str, options: dict) -> Any:
            calls.append(("accept", reference, backend, options))
            return tiny.backend if reference == "tiny-ref" else None

    system.register(Accept(), name="accept")
    system.register(Decline(), name="decline")  # registered last: called first
    model = decodekit.load("tiny-ref", system=system, cache=False, device="cpu")
    assert model.backend is tiny.backend and model.system is system
    assert [c[0] for c in calls] == ["decline", "accept"]  # the torch resolver never ran
    assert calls[0][1:] == ("tiny-ref", "torch", {"device": "cpu"})


def test_resolve_model_none_everywhere(system: PluginSystem, tmp_path: Any) -> None:
    class Other:
        @hookimpl
        def decodekit_register_backends(self, register: Any) -> None:
            from decodekit.backends.pytorch import TorchBackend

            register(type("Unloadable", (TorchBackend,), {"name": "unloadable"}))

    system.register(Other(), name="other")
    with pytest.raises(decodekit.UserError, match="no installed plugin can load model"):
        decodekit.load(str(tmp_path), backend="unloadable", system=system, cache=False)


# -- observers -----------------------------------------------------------------------------

class Observer:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    @hookimpl
    def decodekit_generation_start(self, request: GenerationRequest) -> None:
        self.log.append(("start", request))

    @hookimpl
    def decodekit_step(self, event: StepEvent) -> None:
        self.log.append(("step", event))

    @hookimpl
    def decodekit_generation_end(self, request: GenerationRequest, generations: list[Generation]) -> None:
        self.log.append(("end", (request, generations)))


@pytest.fixture
def observed(system: PluginSystem, tiny: Any) -> tuple[Observer, Model]:
    obs = Observer()
    system.register(obs, name="observer")
    return obs, Model(tiny.backend, "tiny", system)


def test_generation_start(observed: tuple[Observer, Model], encode: Any) -> None:
    obs, model = observed
    model.generate(["The quick", "SELECT"], max_new_tokens=3, processors=["repetition_penalty"])
    starts = [payload for kind, payload in obs.log if kind == "start"]
    assert len(starts) == 1 and obs.log[0][0] == "start"
    request = starts[0]
    assert isinstance(request, GenerationRequest)
    assert request.prompts == ["The quick", "SELECT"]
    assert request.prompt_token_ids == [encode("The quick"), encode("SELECT")]
    assert request.strategy == "greedy" and request.max_new_tokens == 3
    assert [p.name for p in request.processors] == ["repetition_penalty", "stop"]


def test_step_called_once_per_step_with_committed_tokens(observed: tuple[Observer, Model]) -> None:
    obs, model = observed
    gens = model.generate(["The quick brown", "0 1"], max_new_tokens=6)
    events = [payload for kind, payload in obs.log if kind == "step"]
    assert [e.step for e in events] == list(range(1, 7))
    # prefill, then one decode per step except after the last token
    assert [e.forward_passes for e in events] == [2, 3, 4, 5, 6, 6]
    for i, gen in enumerate(gens):
        committed = [t for e in events for t in e.tokens.get(i, [])]
        assert committed == gen.token_ids
    assert all(e.elapsed >= 0 for e in events)


def test_step_stops_committing_for_finished_rows(system: PluginSystem, eos_model: Any,
                                                 encode: Any) -> None:
    obs = Observer()
    system.register(obs, name="observer")
    model = Model(eos_model.backend, "eos", system)
    gens = model.generate(["SELECT id", "The quick brown"], max_new_tokens=8)
    assert gens[0].finish_reason == "eos" and gens[1].finish_reason == "length"
    events = [payload for kind, payload in obs.log if kind == "step"]
    assert len(events) == 8
    for i, gen in enumerate(gens):
        assert [t for e in events for t in e.tokens.get(i, [])] == gen.token_ids
    assert all(0 not in e.tokens for e in events[len(gens[0].token_ids):])


def test_generation_end(observed: tuple[Observer, Model]) -> None:
    obs, model = observed
    result = model.generate("The quick", max_new_tokens=2)
    kind, (request, generations) = obs.log[-1]
    assert kind == "end"
    assert generations == [result] and generations[0] is result
    assert request is obs.log[0][1]
    assert sum(1 for k, _ in obs.log if k == "end") == 1


def test_observers_see_every_generation(observed: tuple[Observer, Model]) -> None:
    obs, model = observed
    model.generate("The", max_new_tokens=1)
    model.generate("The", max_new_tokens=1, strategy="beam", options={"num_beams": 2})
    kinds = [k for k, _ in obs.log]
    assert kinds.count("start") == 2 and kinds.count("end") == 2
