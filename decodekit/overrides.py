"""``--set key.path=value`` overrides of pipeline settings.

A key path names a setting of a pipeline file with dots: ``max_new_tokens``,
``strategy.name``, ``strategy.options.top_k``, ``backend.options.device``,
``processors.0.options.penalty`` (an index, or the name of a processor in the list),
``plugins.block``. Paths are checked against the settings and against the typed options of
the strategy, processor or backend they reach; an unknown path is an error naming the valid
keys. Values are read as TOML values, else JSON, else plain text.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import tomllib

from decodekit.errors import ConfigError, UnknownNameError
from decodekit.registry import Registry

#: Settings that hold a name or free text: their value is never read as a number or boolean.
_TEXT_KEYS = {("model",), ("system_prompt",)}
_NAMED = {"strategy": ("strategy", "greedy"), "backend": ("backend", "torch")}


def parse_value(text: str) -> Any:
    """Read a ``--set`` value: a TOML value, else JSON (e.g. ``null``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _fail(assignment: str, message: str) -> ConfigError:
    return ConfigError(f"--set {assignment}: {message}")


def _named(value: Any, default: str) -> dict[str, Any]:
    """A strategy/backend/processor entry as a table (``"greedy"`` -> ``{"name": "greedy"}``)."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return dict(value)
    return {"name": default}


def _option_path(parts: list[str], kind: str, name: Any, registry: Registry, assignment: str,
                 where: str) -> tuple[Any, ...]:
    """Check ``name``/``options[.option...]`` below a strategy, backend or processor entry."""
    if parts[0] not in ("name", "options"):
        raise _fail(assignment, f"unknown key {parts[0]!r} of {where}; valid keys: name, options")
    if parts[0] == "name" or len(parts) == 1:
        if parts[0] == "name" and len(parts) > 1:
            raise _fail(assignment, f"{where}.name takes a value, not sub-keys")
        return tuple(parts)
    try:
        cls = registry.get(kind, name)
    except UnknownNameError as exc:
        raise _fail(assignment, str(exc)) from None
    fields = cls.Options.model_fields
    if parts[1] not in fields:
        valid = ", ".join(fields) or "(it takes no options)"
        raise _fail(assignment, f"unknown option {parts[1]!r} for {kind} {name!r}; valid options: {valid}")
    return tuple(parts)


def _resolve(parts: list[str], data: dict[str, Any], registry: Registry, assignment: str) -> tuple[Any, ...]:
    from decodekit.pipeline import PipelineSpec  # late: pipeline imports this module

    head, rest = parts[0], parts[1:]
    fields = PipelineSpec.model_fields
    if head not in fields:
        raise _fail(assignment, f"unknown setting {head!r}; valid keys: {', '.join(fields)}")
    if not rest:
        return (head,)
    if head in _NAMED:
        kind, default = _NAMED[head]
        entry = _named(data.get(head), default)
        data[head] = entry
        return (head, *_option_path(rest, kind, entry.get("name"), registry, assignment, head))
    if head == "processors":
        procs = data.get("processors")
        if not isinstance(procs, list):
            procs = []
        names = [p.get("name") if isinstance(p, Mapping) else p for p in procs]
        if rest[0].isdigit() and int(rest[0]) < len(procs):
            index = int(rest[0])
        elif rest[0] in names:
            index = names.index(rest[0])
        else:
            choices = ", ".join([str(i) for i in range(len(procs))] + [str(n) for n in names])
            raise _fail(assignment, f"no processor {rest[0]!r} in this pipeline; give an index or a "
                                    f"name of its processors: {choices or '(none)'}; to replace the "
                                    f"list, --set processors=[...]")
        entry = _named(procs[index], "")
        procs[index] = entry
        if len(rest) == 1:
            return ("processors", index)
        where = f"processors.{index}"
        return ("processors", index,
                *_option_path(rest[1:], "processor", entry.get("name"), registry, assignment, where))
    if head == "plugins":
        if rest[0] not in ("block", "only") or len(rest) > 1:
            raise _fail(assignment, f"unknown key {'.'.join(rest)!r} of plugins; valid keys: block, only")
        return ("plugins", rest[0])
    if head == "grammar":
        return tuple(parts)
    raise _fail(assignment, f"{head} takes a value, not sub-keys")


def _assign(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    cur: Any = data
    for part in path[:-1]:
        if isinstance(cur, list):
            cur = cur[part]
            continue
        nxt = cur.get(part)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[path[-1]] = value


def apply_overrides(data: Mapping[str, Any], assignments: list[str],
                    registry: Registry) -> tuple[dict[str, Any], dict[tuple[Any, ...], str]]:
    """Apply ``key.path=value`` assignments to a copy of pipeline settings, in order.

    Parameters
    ----------
    data
        The settings as read from a file.
    assignments
        ``KEY=VALUE`` strings.
    registry
        The plugin registry, to check option names.

    Returns
    -------
    tuple
        The new settings and, per assigned key path, the assignment that set it.

    Raises
    ------
    ConfigError
        For a malformed assignment or an unknown key path.
    """
    out = copy.deepcopy(dict(data))
    touched: dict[tuple[Any, ...], str] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _fail(assignment, "expected KEY=VALUE, e.g. strategy.options.top_k=5")
        parts = key.split(".")
        if any(not p for p in parts):
            raise _fail(assignment, f"empty part in key path {key!r}")
        path = _resolve(parts, out, registry, assignment)
        value = parse_value(raw.strip())
        is_text = path in _TEXT_KEYS or (path[-1] == "name" and "options" not in path)
        if is_text and not isinstance(value, str):
            value = raw.strip()
        _assign(out, path, value)
        touched[path] = assignment
    return out, touched
