"""The plugin system: builtins, run-time and entry-point plugins, blocking, conflicts, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field

import decodekit
from decodekit.api import Model
from decodekit.errors import PluginConflictError, PluginError, UnknownNameError
from decodekit.hookspecs import hookimpl
from decodekit.manager import (
    BLOCK_ENV,
    BUILTIN_PLUGINS,
    ONLY_ENV,
    PluginSystem,
    get_plugin_system,
    reset_plugin_system,
)
from decodekit.options import Options
from decodekit.processor import LogitsProcessor
from decodekit.strategy import DecodeContext, TokenByToken

BUILTIN_STRATEGIES = {"greedy", "sample", "beam"}
BUILTIN_PROCESSORS = {"stop", "repetition_penalty", "no_repeat_ngram", "bad_words", "min_new_tokens"}


class ConstantOptions(Options):
    token: int = Field(5, description="the token to emit")


class Constant(TokenByToken):
    """Emits the same token every step."""

    name = "constant"
    Options = ConstantOptions

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        return torch.full((logits.shape[0],), self.options.token, dtype=torch.long)


class ForceOptions(Options):
    token: int = Field(7, description="the only allowed token")


class Force(LogitsProcessor):
    """Allows one token only."""

    name = "force"
    Options = ForceOptions

    def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
        keep = logits[:, self.options.token].clone()
        logits.fill_(float("-inf"))
        logits[:, self.options.token] = keep
        return logits


class DemoPlugin:
    """A third-party-style plugin object."""

    @hookimpl
    def decodekit_register_strategies(self, register: Any) -> None:
        register(Constant)

    @hookimpl
    def decodekit_register_processors(self, register: Any) -> None:
        register(Force)


def test_builtins_registered(system: PluginSystem) -> None:
    reg = system.registry
    assert set(reg.names("strategy")) >= BUILTIN_STRATEGIES
    assert set(reg.names("processor")) >= BUILTIN_PROCESSORS
    assert "torch" in reg.names("backend")
    assert system.builtin_names == set(BUILTIN_PLUGINS)
    assert reg.entry("strategy", "beam").plugin == "decodekit.plugins.beam"
    assert reg.entry("backend", "torch").plugin == "decodekit.backends.pytorch"


def test_builtins_can_be_turned_off(clean_env: None) -> None:
    bare = PluginSystem(builtins=False, entry_points=False)
    assert bare.registry.names("strategy") == []
    bare.register(DemoPlugin(), name="demo")
    assert bare.registry.names("strategy") == ["constant"]


def test_runtime_plugin_usable_by_name(system: PluginSystem, tiny: Any) -> None:
    model = Model(tiny.backend, "tiny", system)
    with pytest.raises(UnknownNameError):
        model.generate("The quick", strategy="constant", max_new_tokens=2)
    assert system.register(DemoPlugin(), name="demo") == "demo"
    g = model.generate("The quick", strategy="constant", options={"token": 9}, max_new_tokens=4)
    assert g.token_ids == [9, 9, 9, 9] and g.strategy == "constant"
    g = model.generate("The quick", processors=[("force", {"token": 11})], max_new_tokens=3)
    assert g.token_ids == [11, 11, 11]
    assert system.registry.entry("processor", "force").plugin == "demo"
    system.unregister("demo")
    assert "constant" not in system.registry.names("strategy")


def test_module_plugin(system: PluginSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dk_module_plugin.py").write_text(textwrap.dedent("""
        from decodekit import hookimpl
        from decodekit.strategy import TokenByToken

        class Last(TokenByToken):
            name = "last_token"
            def choose(self, logits, ctx):
                return logits.new_full((logits.shape[0],), logits.shape[1] - 1).long()

        @hookimpl
        def decodekit_register_strategies(register):
            register(Last)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import dk_module_plugin

    system.register(dk_module_plugin, name="module-plugin")
    assert system.registry.entry("strategy", "last_token").plugin == "module-plugin"


def test_conflicting_names_name_both_plugins(system: PluginSystem) -> None:
    class Clash:
        @hookimpl
        def decodekit_register_strategies(self, register: Any) -> None:
            class Greedy2(Constant):
                name = "greedy"
            register(Greedy2)

    system.register(Clash(), name="clash-plugin")
    with pytest.raises(PluginConflictError) as info:
        system.registry  # noqa: B018
    msg = str(info.value)
    assert "clash-plugin" in msg and "decodekit.plugins.greedy" in msg and "'greedy'" in msg


def test_two_runtime_plugins_conflict(system: PluginSystem) -> None:
    system.register(DemoPlugin(), name="demo-one")
    system.register(DemoPlugin(), name="demo-two")
    with pytest.raises(PluginConflictError) as info:
        system.registry  # noqa: B018
    assert {info.value.first, info.value.second} == {"demo-one", "demo-two"}


def test_block_env_removes_builtin(clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny: Any) -> None:
    monkeypatch.setenv(BLOCK_ENV, "decodekit.plugins.sample, decodekit.plugins.bad_words")
    system = PluginSystem(entry_points=False)
    assert "sample" not in system.registry.names("strategy")
    assert "greedy" in system.registry.names("strategy")
    assert "bad_words" not in system.registry.names("processor")
    model = Model(tiny.backend, "tiny", system)
    with pytest.raises(UnknownNameError, match="unknown strategy 'sample'"):
        model.generate("The", strategy="sample", max_new_tokens=1)
    # a blocked plugin cannot be registered at run time either
    import decodekit.plugins.sample as sample_module

    with pytest.raises(PluginError, match="blocked"):
        system.register(sample_module, name="decodekit.plugins.sample")


def test_block_argument(clean_env: None) -> None:
    system = PluginSystem(block=["decodekit.plugins.beam"], entry_points=False)
    assert "beam" not in system.registry.names("strategy")


def test_process_wide_system_honours_env(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "sample" in get_plugin_system().registry.names("strategy")
    monkeypatch.setenv(BLOCK_ENV, "decodekit.plugins.sample")
    assert "sample" in get_plugin_system().registry.names("strategy")  # cached until reset
    reset_plugin_system()
    assert "sample" not in get_plugin_system().registry.names("strategy")
    assert get_plugin_system() is get_plugin_system()


# -- entry points --------------------------------------------------------------------------

def _install_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: dict[str, str]) -> None:
    """Make a fake installed distribution with ``decodekit`` entry points ``name -> module``."""
    dist = tmp_path / "dk_fake_plugins-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dk-fake-plugins\nVersion: 1.2.3\n")
    lines = ["[decodekit]"]
    for name, source in body.items():
        module = f"dk_ep_{name}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _strategy_source(name: str) -> str:
    return f"""
        from decodekit import hookimpl
        from decodekit.strategy import TokenByToken

        class S(TokenByToken):
            name = {name!r}
            def choose(self, logits, ctx):
                return logits.argmax(-1)

        @hookimpl
        def decodekit_register_strategies(register):
            register(S)
    """


def test_entry_points_loaded_and_restricted(clean_env: None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _install_entry_points(tmp_path, monkeypatch, {"alpha": _strategy_source("alpha_strategy"),
                                                   "beta": _strategy_source("beta_strategy")})
    both = PluginSystem()
    names = both.registry.names("strategy")
    assert "alpha_strategy" in names and "beta_strategy" in names
    info = {p.name: p for p in both.plugins()}
    assert info["alpha"].version == "1.2.3" and not info["alpha"].builtin
    assert info["alpha"].hooks == ("decodekit_register_strategies",)
    assert info["decodekit.plugins.greedy"].builtin

    monkeypatch.setenv(ONLY_ENV, "beta")
    only_beta = PluginSystem()
    names = only_beta.registry.names("strategy")
    assert "beta_strategy" in names and "alpha_strategy" not in names
    assert "greedy" in names  # builtins are unaffected by DECODEKIT_PLUGINS

    monkeypatch.setenv(ONLY_ENV, "")
    none = PluginSystem()
    assert not {"alpha_strategy", "beta_strategy"} & set(none.registry.names("strategy"))

    monkeypatch.delenv(ONLY_ENV)
    monkeypatch.setenv(BLOCK_ENV, "alpha")
    blocked = PluginSystem()
    assert "alpha_strategy" not in blocked.registry.names("strategy")
    assert "beta_strategy" in blocked.registry.names("strategy")
    # the environment's block list applies even to a plugin asked for explicitly
    assert "alpha_strategy" not in PluginSystem(only=["alpha"]).registry.names("strategy")


def test_broken_entry_point_names_plugin(clean_env: None, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _install_entry_points(tmp_path, monkeypatch, {"broken": "raise RuntimeError('boom at import')\n"})
    with pytest.raises(PluginError) as info:
        PluginSystem()
    assert info.value.plugin == "broken" and "boom at import" in str(info.value)


# -- errors inside hooks -------------------------------------------------------------------

def test_register_hook_raising_names_plugin(system: PluginSystem) -> None:
    class Faulty:
        @hookimpl
        def decodekit_register_processors(self, register: Any) -> None:
            raise KeyError("no such table")

    system.register(Faulty(), name="faulty-register")
    with pytest.raises(PluginError) as info:
        system.registry  # noqa: B018
    assert info.value.plugin == "faulty-register"
    assert "decodekit_register_processors" in str(info.value) and "KeyError" in str(info.value)


@pytest.mark.parametrize("hook", ["decodekit_generation_start", "decodekit_step",
                                  "decodekit_generation_end"])
def test_observer_hook_raising_names_plugin(system: PluginSystem, tiny: Any, hook: str) -> None:
    def fail(**kwargs: Any) -> None:
        raise ValueError(f"broken observer in {hook}")

    plugin = type("Observer", (), {hook: staticmethod(hookimpl(specname=hook)(fail))})
    system.register(plugin, name="faulty-observer")
    model = Model(tiny.backend, "tiny", system)
    with pytest.raises(PluginError) as info:
        model.generate("The quick", max_new_tokens=2)
    assert info.value.plugin == "faulty-observer"
    assert hook in str(info.value) and "broken observer" in str(info.value)


def test_culprit_found_among_several_observers(system: PluginSystem, tiny: Any) -> None:
    calls = []

    class Fine:
        @hookimpl
        def decodekit_generation_start(self, request: Any) -> None:
            calls.append("fine")

    class Bad:
        @hookimpl
        def decodekit_generation_start(self, request: Any) -> None:
            helper()

    def helper() -> None:
        raise ZeroDivisionError("deep inside")

    system.register(Bad(), name="bad-one")
    system.register(Fine(), name="fine-one")
    with pytest.raises(PluginError) as info:
        Model(tiny.backend, "tiny", system).generate("The", max_new_tokens=1)
    assert info.value.plugin == "bad-one"


def test_user_errors_from_hooks_pass_through(system: PluginSystem) -> None:
    class Picky:
        @hookimpl
        def decodekit_resolve_model(self, reference: Any) -> Any:
            raise decodekit.InputError("this reference is not acceptable")

    system.register(Picky(), name="picky")
    with pytest.raises(decodekit.InputError, match="not acceptable"):
        decodekit.load("anything", system=system, cache=False)


def test_plugins_listing(system: PluginSystem) -> None:
    system.register(DemoPlugin(), name="demo")
    infos = system.plugins()
    names = [i.name for i in infos]
    assert names[:len(BUILTIN_PLUGINS)] == sorted(BUILTIN_PLUGINS)  # builtins first
    demo = infos[names.index("demo")]
    assert demo.hooks == ("decodekit_register_processors", "decodekit_register_strategies")
    assert demo.version == "unknown" and not demo.builtin
    torch_info = infos[names.index("decodekit.backends.pytorch")]
    assert "decodekit_resolve_model" in torch_info.hooks and torch_info.version == decodekit.__version__


def test_has_impls(system: PluginSystem) -> None:
    assert not system.has_impls("decodekit_step")

    class Stepper:
        @hookimpl
        def decodekit_step(self, event: Any) -> None:
            pass

    system.register(Stepper(), name="stepper")
    assert system.has_impls("decodekit_step")
