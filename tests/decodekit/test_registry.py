"""The registry: names per kind, conflicts, unknown names."""

from __future__ import annotations

import pytest

from decodekit.errors import PluginConflictError, PluginError, UnknownNameError, UserError
from decodekit.registry import KINDS, Registry


class Thing:
    name = "thing"


def test_add_and_get() -> None:
    reg = Registry()
    reg.add("strategy", "thing", Thing, "plug-a")
    assert reg.get("strategy", "thing") is Thing
    entry = reg.entry("strategy", "thing")
    assert (entry.kind, entry.name, entry.plugin) == ("strategy", "thing", "plug-a")
    assert reg.names("strategy") == ["thing"]
    assert reg.names("processor") == []


def test_kinds_are_separate_namespaces() -> None:
    reg = Registry()
    reg.add("strategy", "x", 1, "a")
    reg.add("processor", "x", 2, "b")
    assert reg.get("strategy", "x") == 1
    assert reg.get("processor", "x") == 2
    assert set(KINDS) == {"strategy", "processor", "backend", "grammar_engine", "command"}


def test_conflict_names_both_plugins() -> None:
    reg = Registry()
    reg.add("processor", "dup", 1, "first-plugin")
    with pytest.raises(PluginConflictError) as info:
        reg.add("processor", "dup", 2, "second-plugin")
    msg = str(info.value)
    assert "first-plugin" in msg and "second-plugin" in msg and "'dup'" in msg
    assert info.value.first == "first-plugin" and info.value.second == "second-plugin"
    assert isinstance(info.value, UserError) and isinstance(info.value, PluginError)
    assert reg.get("processor", "dup") == 1  # the first registration stays


def test_unknown_name_lists_valid_names() -> None:
    reg = Registry()
    for name in ("beta", "alpha"):
        reg.add("strategy", name, object(), "p")
    with pytest.raises(UnknownNameError) as info:
        reg.get("strategy", "gamma")
    assert info.value.valid == ["alpha", "beta"]
    assert "gamma" in str(info.value) and "alpha, beta" in str(info.value)


def test_unknown_name_with_nothing_registered() -> None:
    with pytest.raises(UnknownNameError, match="none registered"):
        Registry().get("grammar_engine", "lark")


def test_unknown_kind_label_is_readable() -> None:
    with pytest.raises(UnknownNameError, match="unknown grammar engine 'x'"):
        Registry().get("grammar_engine", "x")


@pytest.mark.parametrize("bad", [None, "", 3])
def test_invalid_name_blames_plugin(bad: object) -> None:
    with pytest.raises(PluginError, match="'nameless'"):
        Registry().add("strategy", bad, object, "nameless")  # type: ignore[arg-type]


def test_entries_sorted_and_by_plugin() -> None:
    reg = Registry()
    reg.add("strategy", "b", 1, "p1")
    reg.add("strategy", "a", 2, "p2")
    reg.add("processor", "c", 3, "p1")
    assert [e.name for e in reg.entries("strategy")] == ["a", "b"]
    assert sorted(e.name for e in reg.by_plugin("p1")) == ["b", "c"]
    assert [e.name for e in reg.by_plugin("p2")] == ["a"]


def test_extra_is_kept() -> None:
    reg = Registry()
    reg.add("command", "hello", print, "p", extra="say hello")
    assert reg.entry("command", "hello").extra == "say hello"
