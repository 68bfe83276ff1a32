"""decodekit: composable LLM decoding strategies, grammar constraints and model backends.

Importing :mod:`decodekit` is cheap: torch, transformers and lark are imported only when a
model is loaded or a generation runs.

Quick start::

    import decodekit
    g = decodekit.generate("The capital of France is", strategy="greedy", max_new_tokens=8)
    print(g.text)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from decodekit.errors import (
    CapabilityError,
    ConfigError,
    DecodekitError,
    InputError,
    MissingDependencyError,
    OptionsError,
    PluginConflictError,
    PluginError,
    UnknownNameError,
    UserError,
)
from decodekit.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "load": "decodekit.api",
    "generate": "decodekit.api",
    "Model": "decodekit.api",
    "Pipeline": "decodekit.pipeline",
    "Generation": "decodekit.generation",
    "Sequence": "decodekit.generation",
    "Stats": "decodekit.generation",
    "TextDelta": "decodekit.generation",
    "Strategy": "decodekit.strategy",
    "TokenByToken": "decodekit.strategy",
    "LogitsProcessor": "decodekit.processor",
    "Backend": "decodekit.backend",
    "Capability": "decodekit.backend",
    "Options": "decodekit.options",
    "get_plugin_system": "decodekit.manager",
}

__all__ = [
    "CapabilityError", "ConfigError", "DecodekitError", "InputError", "MissingDependencyError",
    "OptionsError", "PluginConflictError", "PluginError", "UnknownNameError", "UserError",
    "__version__", "hookimpl", *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.api import Model, generate, load
    from decodekit.backend import Backend, Capability
    from decodekit.generation import Generation, Sequence, Stats, TextDelta
    from decodekit.manager import get_plugin_system
    from decodekit.options import Options
    from decodekit.pipeline import Pipeline
    from decodekit.processor import LogitsProcessor
    from decodekit.strategy import Strategy, TokenByToken


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'decodekit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
