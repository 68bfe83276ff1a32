"""The plugin system: a pluggy manager with builtin and entry-point plugins, and its registry.

Builtin plugins are modules registered exactly like third-party ones, which come from the
``decodekit`` entry-point group. Plugins can be blocked by name:

* ``DECODEKIT_BLOCK_PLUGINS=a,b`` blocks plugins ``a`` and ``b`` (builtins included);
* ``DECODEKIT_PLUGINS=x,y`` loads only the entry-point plugins ``x`` and ``y``
  (an empty value loads none); builtins are unaffected unless blocked;
* a pipeline file's ``[plugins] block = [...]`` / ``only = [...]`` does the same for one pipeline.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pluggy

from decodekit import hookspecs
from decodekit.errors import DecodekitError, MissingDependencyError, PluginError
from decodekit.registry import Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "decodekit"
BLOCK_ENV = "DECODEKIT_BLOCK_PLUGINS"
ONLY_ENV = "DECODEKIT_PLUGINS"

#: Builtin plugin modules, registered under their module name.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "decodekit.plugins.greedy",
    "decodekit.plugins.sample",
    "decodekit.plugins.beam",
    "decodekit.plugins.diverse_beam",
    "decodekit.plugins.superposed",
    "decodekit.plugins.contrastive",
    "decodekit.plugins.momentum",
    "decodekit.plugins.cntp",
    "decodekit.plugins.ead",
    "decodekit.plugins.stop",
    "decodekit.plugins.repetition_penalty",
    "decodekit.plugins.no_repeat_ngram",
    "decodekit.plugins.bad_words",
    "decodekit.plugins.min_new_tokens",
    "decodekit.plugins.grammar",
    "decodekit.plugins.llguidance_engine",
    "decodekit.plugins.xgrammar_engine",
    "decodekit.plugins.hf_processor",
    "decodekit.backends.pytorch",
    "decodekit.backends.onnxruntime",
    "decodekit.backends.tensorrt",
)

_REGISTER_HOOKS = {
    "strategy": "decodekit_register_strategies",
    "processor": "decodekit_register_processors",
    "backend": "decodekit_register_backends",
}


@dataclass(frozen=True)
class PluginInfo:
    """What ``decodekit plugins`` shows for one plugin."""

    name: str
    version: str
    hooks: tuple[str, ...]
    builtin: bool


def _split_env(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def blame(exc: BaseException, hook: pluggy.HookCaller) -> str | None:
    """Name the plugin whose hook implementation raised ``exc``, by walking its traceback."""
    codes = {}
    for impl in hook.get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    tb: TracebackType | None = exc.__traceback__
    culprit = None
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            culprit = codes[tb.tb_frame.f_code]
        tb = tb.tb_next
    return culprit


class PluginSystem:
    """A pluggy manager with decodekit's hookspecs, its loaded plugins and their registry.

    Parameters
    ----------
    block
        Plugin names not to load, added to ``DECODEKIT_BLOCK_PLUGINS``.
    only
        If given, the only entry-point plugins to load (overrides ``DECODEKIT_PLUGINS``).
    builtins
        Whether to register the builtin plugins (tests may turn this off).
    entry_points
        Whether to load plugins from the ``decodekit`` entry-point group.
    """

    def __init__(self, *, block: Iterable[str] = (), only: Iterable[str] | None = None,
                 builtins: bool = True, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.blocked = set(block) | set(_split_env(BLOCK_ENV) or [])
        env_only = _split_env(ONLY_ENV)
        self.only = set(only) if only is not None else (set(env_only) if env_only is not None else None)
        self.builtin_names: set[str] = set()
        self._versions: dict[str, str] = {}
        self._registry: Registry | None = None
        self._lock = threading.Lock()
        for name in self.blocked:
            self.pm.set_blocked(name)
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                if module_name in self.blocked:
                    continue
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as exc:
                    if exc.name in ("torch", "transformers"):
                        raise MissingDependencyError(exc.name, extra="torch",
                                                     feature=f"builtin plugin {module_name}") from exc
                    raise
                self.pm.register(module, name=module_name)
                self.builtin_names.add(module_name)
        if entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.blocked or (self.only is not None and ep.name not in self.only):
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must be named
                raise PluginError(ep.name, f"failed to load entry point {ep.value!r}: {exc}") from exc
            self.pm.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            self._versions[ep.name] = dist.version if dist is not None else "unknown"
            log.debug("loaded plugin %r from entry point %r", ep.name, ep.value)

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (module or instance) at run time; returns its name."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(name or repr(plugin), "is blocked and cannot be registered")
        self._registry = None
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin by name."""
        self.pm.unregister(name=name)
        self._registry = None

    # -- registry -----------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The registry, built on first access by calling every ``register_*`` hook."""
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind, hookname in _REGISTER_HOOKS.items():
            for impl in reversed(getattr(self.pm.hook, hookname).get_hookimpls()):
                def register(obj: type, _kind: str = kind, _plugin: str = impl.plugin_name) -> None:
                    registry.add(_kind, getattr(obj, "name", None), obj, _plugin)  # type: ignore[arg-type]
                self._call_impl(impl, hookname, register=register)
        for impl in reversed(self.pm.hook.decodekit_register_grammar_engines.get_hookimpls()):
            def register_engine(name: str, engine: Any, _plugin: str = impl.plugin_name) -> None:
                registry.add("grammar_engine", name, engine, _plugin)
            self._call_impl(impl, "decodekit_register_grammar_engines", register=register_engine)
        for impl in reversed(self.pm.hook.decodekit_register_commands.get_hookimpls()):
            def register_command(name: str, setup: Any, help: str = "",
                                 _plugin: str = impl.plugin_name) -> None:
                registry.add("command", name, setup, _plugin, extra=help)
            self._call_impl(impl, "decodekit_register_commands", register=register_command)
        return registry

    @staticmethod
    def _call_impl(impl: Any, hookname: str, **kwargs: Any) -> Any:
        args = {k: v for k, v in kwargs.items() if k in impl.argnames}
        try:
            return impl.function(**args)
        except DecodekitError:
            raise
        except Exception as exc:
            raise PluginError(impl.plugin_name, f"raised in {hookname}: "
                                                f"{type(exc).__name__}: {exc}") from exc

    # -- hook calls ---------------------------------------------------------------------------

    def call(self, hookname: str, **kwargs: Any) -> Any:
        """Call a hook; an exception raised by an implementation is re-raised as
        :class:`PluginError` naming the plugin."""
        hook = getattr(self.pm.hook, hookname)
        try:
            return hook(**kwargs)
        except DecodekitError:
            raise
        except Exception as exc:
            culprit = blame(exc, hook) or "<unknown>"
            raise PluginError(culprit, f"raised in {hookname}: {type(exc).__name__}: {exc}") from exc

    def has_impls(self, hookname: str) -> bool:
        """Whether any plugin implements ``hookname`` (lets the loop skip empty per-step calls)."""
        return bool(getattr(self.pm.hook, hookname).get_hookimpls())

    # -- listing ------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Loaded plugins with version and implemented hooks, builtins first."""
        from decodekit import __version__

        versions = self._versions
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
            builtin = name in self.builtin_names
            version = __version__ if builtin else versions.get(name, "unknown")
            infos.append(PluginInfo(name, version, hooks, builtin))
        infos.sort(key=lambda i: (not i.builtin, i.name))
        return infos


_DEFAULT: PluginSystem | None = None
_DEFAULT_LOCK = threading.Lock()


def get_plugin_system() -> PluginSystem:
    """The process-wide plugin system (created on first use, honouring the environment)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = PluginSystem()
    return _DEFAULT


def reset_plugin_system() -> None:
    """Forget the process-wide plugin system; the next use reloads plugins and environment."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = None
