"""Shared fixtures: the tiny seeded Llama, an EOS-prone variant, fresh plugin systems and row helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Run torch single-threaded: the test models are so small that intra-op threads only add
    synchronisation, which costs an order of magnitude on a busy machine."""
    import torch

    torch.set_num_threads(1)


#: Prompts drawn from the tiny tokenizer's training corpus.
PROMPTS = ("The quick brown", "def add(a, b):\n", "SELECT id", "0 1 2", "To be, or", "A journey of")


def make_eos_model(seed: int = 0, alias: tuple[int, ...] = (142,), scale: float = 1.05) -> Any:
    """A tiny model whose EOS logit copies (scaled) the logits of frequent tokens.

    Wherever greedy decoding of the plain tiny model would pick one of ``alias`` with a positive
    logit, this model prefers EOS, so sequences end after a few tokens for some prompts.
    """
    import torch

    from decodekit.testing import tiny_model

    model = tiny_model(seed)
    head = model.backend.model.lm_head.weight
    with torch.no_grad():
        head[0] = sum(head[a] for a in alias) / len(alias) * scale
    return model


@pytest.fixture(scope="session")
def tiny() -> Any:
    """The tiny random Llama (seed 0) behind the ``torch`` backend. Do not modify it."""
    from decodekit.testing import tiny_model

    return tiny_model(0)


@pytest.fixture(scope="session")
def eos_model() -> Any:
    """A tiny model that ends some sequences with EOS early (see :func:`make_eos_model`)."""
    return make_eos_model()


@pytest.fixture(scope="session")
def encode(tiny: Any) -> Any:
    """Encode text with the tiny tokenizer (no special tokens)."""
    def _encode(text: str) -> list[int]:
        return tiny.tokenizer.encode(text, add_special_tokens=False)
    return _encode


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No plugin-selection variables from the outer environment; the process-wide plugin system
    is rebuilt before and after the test."""
    from decodekit.manager import BLOCK_ENV, ONLY_ENV, reset_plugin_system

    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(ONLY_ENV, raising=False)
    reset_plugin_system()
    yield
    reset_plugin_system()


@pytest.fixture
def system(clean_env: None) -> Any:
    """A fresh plugin system with the builtins and no entry-point plugins."""
    from decodekit.manager import PluginSystem

    return PluginSystem(entry_points=False)


def make_rows(prompts: list[list[int]], processors: list[Any] | None = None, *,
              max_new_tokens: int = 16, repeat: int = 1, vocab_size: int = 320) -> Any:
    """Rows for ``prompts`` with a set-up processor chain (tiny tokenizer, EOS and pad 0)."""
    from decodekit.processor import ProcessorChain, ProcessorContext
    from decodekit.rows import Rows
    from decodekit.testing import tiny_tokenizer

    chain = ProcessorChain(list(processors or []))
    chain.setup(ProcessorContext(tiny_tokenizer(), vocab_size, (0,), 0, max_new_tokens))
    return Rows.from_prompts(prompts, pad_token_id=0, max_new_tokens=max_new_tokens, chain=chain,
                             repeat=repeat)


@pytest.fixture(scope="session")
def rows_factory() -> Any:
    """:func:`make_rows` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_rows


@pytest.fixture(scope="session")
def eos_model_factory() -> Any:
    """:func:`make_eos_model` as a fixture."""
    return make_eos_model


@pytest.fixture(scope="session")
def prompts() -> tuple[str, ...]:
    """Prompts drawn from the tiny tokenizer's training corpus."""
    return PROMPTS
