"""Typed options for strategies, processors and backends.

Each plugin object declares its options as a subclass of :class:`Options` (a frozen pydantic
model that forbids unknown keys). :func:`validate_options` turns a user's mapping into that
model and reports problems as :class:`decodekit.errors.OptionsError` naming the owner, the key
and the valid keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict
from pydantic_core import PydanticUndefined

from decodekit.errors import OptionsError


class Options(pydantic.BaseModel):
    """Base class of every options namespace.

    Subclasses declare fields with types, defaults and ``Field(description=...)``. Instances
    are immutable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class NoOptions(Options):
    """Options of a plugin object that takes none."""


O = TypeVar("O", bound=Options)  # noqa: E741 - the options type


@dataclass(frozen=True)
class OptionInfo:
    """Description of one option, for listings and documentation."""

    name: str
    type: str
    default: Any
    required: bool
    description: str


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None)
    if text is None or getattr(annotation, "__args__", None):
        text = repr(annotation).replace("typing.", "")
    return text


def describe_options(cls: type[Options]) -> list[OptionInfo]:
    """List the options of an options class in declaration order."""
    infos = []
    for name, field in cls.model_fields.items():
        required = field.is_required()
        default = None if required or field.default is PydanticUndefined else field.default
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        infos.append(OptionInfo(name, _type_name(field.annotation), default, required,
                                field.description or ""))
    return infos


def format_valid(cls: type[Options]) -> str:
    """One-line listing of valid option names with their types and defaults."""
    parts = []
    for info in describe_options(cls):
        tail = "required" if info.required else f"default {info.default!r}"
        parts.append(f"{info.name} ({info.type}, {tail})")
    return ", ".join(parts) if parts else "(this takes no options)"


def validate_options(cls: type[O], values: Mapping[str, Any] | O | None, *, owner: str) -> O:
    """Validate ``values`` against ``cls``.

    Parameters
    ----------
    cls
        The options class.
    values
        A mapping of option names to values, an instance of ``cls`` (returned as is) or
        ``None`` (all defaults).
    owner
        Who the options are for, e.g. ``"strategy 'sample'"``, used in error messages.

    Raises
    ------
    OptionsError
        On an unknown key (the message lists the valid ones) or an invalid value.
    """
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if isinstance(values, Options):
        raise OptionsError(f"{owner} expects {cls.__name__}, got {type(values).__name__}")
    if not isinstance(values, Mapping):
        raise OptionsError(f"options for {owner} must be a mapping of names to values, "
                           f"got {type(values).__name__}")
    unknown = [k for k in values if k not in cls.model_fields]
    if unknown:
        raise OptionsError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(k) for k in unknown)} for {owner}; valid options: "
                           f"{format_valid(cls)}")
    try:
        return cls(**values)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if loc:
                problems.append(f"option {loc!r}: {msg} (got {err.get('input')!r})")
            else:  # a check across several options
                problems.append(msg)
        raise OptionsError(f"invalid options for {owner}: " + "; ".join(problems)) from None
