"""Named objects contributed by plugins (strategies, processors, backends, grammar engines, commands)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from decodekit.errors import PluginConflictError, PluginError, UnknownNameError

KINDS = ("strategy", "processor", "backend", "grammar_engine", "command")


@dataclass(frozen=True)
class Entry:
    """One registered object.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    name
        The name users refer to it by.
    obj
        The registered object (a class for strategies, processors and backends).
    plugin
        The name of the plugin that registered it.
    extra
        Kind-specific data (e.g. a command's help text).
    """

    kind: str
    name: str
    obj: Any
    plugin: str
    extra: Any = None


class Registry:
    """Holds what plugins registered, by kind and name. Lookups never call a hook."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, name: str, obj: Any, plugin: str, extra: Any = None) -> None:
        """Add an entry, refusing a name already taken for ``kind``."""
        if not isinstance(name, str) or not name:
            raise PluginError(plugin, f"registered a {kind} without a valid name: {obj!r}")
        table = self._entries[kind]
        if name in table:
            raise PluginConflictError(kind, name, table[name].plugin, plugin)
        table[name] = Entry(kind, name, obj, plugin, extra)

    def entry(self, kind: str, name: str) -> Entry:
        """Return the entry for ``name``; raise :class:`UnknownNameError` listing valid names."""
        try:
            return self._entries[kind][name]
        except KeyError:
            raise UnknownNameError(kind.replace("_", " "), name, self._entries[kind]) from None

    def get(self, kind: str, name: str) -> Any:
        """Return the object registered as ``name``."""
        return self.entry(kind, name).obj

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> Iterator[Entry]:
        """Entries of ``kind`` sorted by name."""
        for name in self.names(kind):
            yield self._entries[kind][name]

    def by_plugin(self, plugin: str) -> list[Entry]:
        """Everything one plugin registered."""
        return [e for table in self._entries.values() for e in table.values() if e.plugin == plugin]
