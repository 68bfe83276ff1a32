"""Typed options: validation errors that say what is valid, and option listings."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field, ValidationError

from decodekit.errors import OptionsError, UserError
from decodekit.options import NoOptions, Options, describe_options, format_valid, validate_options


class DemoOptions(Options):
    """Options of a demo object."""

    size: int = Field(3, ge=1, description="how many")
    mode: Literal["fast", "slow"] = Field("fast", description="speed")
    names: list[str] = Field(default_factory=list, description="some names")
    ratio: float | None = Field(None, description="optional ratio")


class Required(Options):
    must: int = Field(description="no default")


def test_defaults_and_values() -> None:
    opts = validate_options(DemoOptions, None, owner="demo")
    assert (opts.size, opts.mode, opts.names, opts.ratio) == (3, "fast", [], None)
    opts = validate_options(DemoOptions, {"size": 5, "mode": "slow"}, owner="demo")
    assert (opts.size, opts.mode) == (5, "slow")


def test_instance_passes_through() -> None:
    opts = DemoOptions(size=2)
    assert validate_options(DemoOptions, opts, owner="demo") is opts


def test_options_are_frozen() -> None:
    opts = DemoOptions()
    with pytest.raises(ValidationError, match="frozen"):
        opts.size = 4  # type: ignore[misc]


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(OptionsError) as info:
        validate_options(DemoOptions, {"sise": 2}, owner="strategy 'demo'")
    msg = str(info.value)
    assert "'sise'" in msg and "strategy 'demo'" in msg
    for key in ("size", "mode", "names", "ratio"):
        assert key in msg
    assert "default 3" in msg  # types and defaults are shown
    assert isinstance(info.value, UserError)


def test_several_unknown_keys_all_named() -> None:
    with pytest.raises(OptionsError, match="unknown options 'a', 'b'"):
        validate_options(DemoOptions, {"a": 1, "b": 2, "size": 1}, owner="demo")


def test_object_without_options_says_so() -> None:
    with pytest.raises(OptionsError, match="takes no options"):
        validate_options(NoOptions, {"x": 1}, owner="strategy 'greedy'")


@pytest.mark.parametrize("values, key", [
    ({"size": 0}, "size"),
    ({"size": "many"}, "size"),
    ({"mode": "medium"}, "mode"),
    ({"names": "abc"}, "names"),
])
def test_invalid_values_name_the_option_and_input(values: dict, key: str) -> None:
    with pytest.raises(OptionsError) as info:
        validate_options(DemoOptions, values, owner="demo")
    msg = str(info.value)
    assert f"option {key!r}" in msg and "invalid options for demo" in msg
    assert repr(values[key]) in msg


def test_missing_required_option() -> None:
    with pytest.raises(OptionsError, match="'must'"):
        validate_options(Required, {}, owner="demo")


def test_not_a_mapping() -> None:
    with pytest.raises(OptionsError, match="must be a mapping"):
        validate_options(DemoOptions, [("size", 1)], owner="demo")  # type: ignore[arg-type]


def test_wrong_options_class() -> None:
    with pytest.raises(OptionsError, match="expects DemoOptions, got Required"):
        validate_options(DemoOptions, Required(must=1), owner="demo")


def test_describe_options() -> None:
    infos = describe_options(DemoOptions)
    assert [i.name for i in infos] == ["size", "mode", "names", "ratio"]
    size, mode, names, ratio = infos
    assert (size.type, size.default, size.required, size.description) == ("int", 3, False, "how many")
    assert "fast" in mode.type and "slow" in mode.type
    assert names.default == [] and "str" in names.type
    assert ratio.default is None and "float" in ratio.type
    (must,) = describe_options(Required)
    assert must.required and must.default is None


def test_format_valid() -> None:
    text = format_valid(DemoOptions)
    assert text.startswith("size (int, default 3), mode (")
    assert "must (int, required)" == format_valid(Required)
    assert format_valid(NoOptions) == "(this takes no options)"


def test_builtin_options_are_described(system) -> None:
    # every builtin strategy and processor documents each option
    for kind in ("strategy", "processor", "backend"):
        for entry in system.registry.entries(kind):
            for info in describe_options(entry.obj.Options):
                assert info.description, f"{kind} {entry.name}: option {info.name} undocumented"
