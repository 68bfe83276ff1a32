"""Helpers for testing decodekit and its plugins without downloads.

:func:`tiny_model` builds a small, randomly initialised (seeded) Llama model with a byte-level
BPE tokenizer trained in-process, wrapped in the ``torch`` backend, in well under a second.
It is the model plugin authors and decodekit's own unit tests run on.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

CORPUS = (
    "The quick brown fox jumps over the lazy dog. "
    "A journey of a thousand miles begins with a single step. "
    "To be, or not to be, that is the question. "
    "def add(a, b):\n    return a + b\n"
    '{"name": "decodekit", "version": 1, "tags": ["a", "b"], "ok": true, "none": null}\n'
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;\n"
    "0 1 2 3 4 5 6 7 8 9 10 3.14 -42 1e10\n"
)


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer (fast) trained on a small built-in corpus.

    Special tokens: ``<|endoftext|>`` (id 0, EOS and padding) and ``<|im_start|>`` /
    ``<|im_end|>`` (ids 1, 2) with a ChatML chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token="<|im_start|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def tiny_llama(seed: int = 0, *, vocab_size: int | None = None, hidden_size: int = 64,
               layers: int = 2, heads: int = 4, kv_heads: int = 2, max_positions: int = 512) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (float32, eval mode), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    vocab = vocab_size or len(tok)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
        # larger-than-default init so the distribution is far from uniform (ties are rare)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, 0.5)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 0
    return model.eval()


def tiny_model(seed: int = 0, **kwargs: Any) -> Any:
    """A :class:`decodekit.Model` around :func:`tiny_llama` and :func:`tiny_tokenizer`."""
    from decodekit.api import Model
    from decodekit.backends.pytorch import TorchBackend

    backend = TorchBackend(tiny_llama(seed, **kwargs), tiny_tokenizer(), model_id=f"tiny-llama-{seed}")
    return Model(backend, reference=backend.model_id)


def reference_greedy(model: Any, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers ``generate(do_sample=False)`` new tokens for one prompt (for parity tests)."""
    import torch

    hf = model.backend.model
    ids = torch.tensor([prompt_ids])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=model.backend.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


# -- a fake backend for plugin authors --------------------------------------------------------------


def _fake_classes() -> tuple[type, type]:
    """Define the fake cache and backend classes (deferred so this module imports without torch)."""
    import torch

    from decodekit.backend import Backend, Capability, KVCache, StepOutput
    from decodekit.options import NoOptions

    class FakeCache(KVCache):
        """Token history ``[rows, length]`` and its attention mask; all operations supported."""

        def __init__(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
            self.tokens = tokens
            self.mask = mask

        @property
        def batch_size(self) -> int:
            return int(self.tokens.shape[0])

        @property
        def length(self) -> int:
            return int(self.tokens.shape[1])

        def select(self, rows: torch.Tensor) -> None:
            self.tokens = self.tokens.index_select(0, rows)
            self.mask = self.mask.index_select(0, rows)

        def fork(self) -> FakeCache:
            return FakeCache(self.tokens.clone(), self.mask.clone())

        def crop(self, length: int) -> None:
            if length < 1 or length > self.length:
                raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
            self.tokens = self.tokens[:, :length]
            self.mask = self.mask[:, :length]

    class FakeBackend(Backend):
        """A bigram "language model" in a few tensors: no transformers model, no weights file.

        The final hidden state of a position is the embedding of its token, and the logits are
        that embedding times a seeded random output matrix, so the next-token distribution
        depends only on the last token. It has every capability (hidden states, input
        embeddings, multi-token decode, cache operations) and counts forward passes in
        :attr:`forward_passes`, which makes it a fast, deterministic stand-in for testing
        strategies and processors.

        Parameters
        ----------
        seed
            Seed of the embedding and output matrices.
        tokenizer
            A Hugging Face tokenizer (default: :func:`tiny_tokenizer`); the vocabulary is its size.
        hidden_size
            Width of the hidden states.
        eos_token_id
            End-of-sequence id (default: the tokenizer's).
        """

        name = "fake"
        capabilities = Capability.ALL
        Options = NoOptions

        def __init__(self, seed: int = 0, *, tokenizer: Any = None, hidden_size: int = 16,
                     eos_token_id: int | None = None) -> None:
            self.tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
            self.vocab_size = len(self.tokenizer)
            eos = eos_token_id if eos_token_id is not None else self.tokenizer.eos_token_id
            self.eos_token_ids = (int(eos),) if eos is not None else ()
            pad = self.tokenizer.pad_token_id
            self.pad_token_id = int(pad if pad is not None else (eos or 0))
            self.bos_token_id = self.tokenizer.bos_token_id
            self.max_context = None
            self.model_id = f"fake-bigram-{seed}"
            gen = torch.Generator().manual_seed(seed)
            self.embeddings = torch.randn(self.vocab_size, hidden_size, generator=gen)
            self.head = torch.randn(self.vocab_size, hidden_size, generator=gen)
            self.forward_passes = 0

        def _out(self, hidden: torch.Tensor, return_hidden: bool | str) -> StepOutput:
            return StepOutput(hidden @ self.head.T, hidden if return_hidden else None)

        def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, FakeCache]:
            self.forward_passes += 1
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            hidden = self.embeddings[input_ids]
            cache = FakeCache(input_ids.clone(), mask.clone())
            out = self._out(hidden[:, -1], return_hidden)
            if return_hidden == "all":
                out.hidden = hidden
            return out, cache

        def _extend(self, cache: Any, tokens: torch.Tensor, hidden: torch.Tensor,
                    return_hidden: bool, all_positions: bool) -> StepOutput:
            self.forward_passes += 1
            cache.tokens = torch.cat([cache.tokens, tokens], dim=1)
            cache.mask = torch.cat([cache.mask, torch.ones_like(tokens)], dim=1)
            return self._out(hidden if all_positions else hidden[:, -1], return_hidden)

        def decode(self, cache: Any, token_ids: torch.Tensor, *, return_hidden: bool = False,
                   all_positions: bool = False) -> StepOutput:
            tokens = token_ids if token_ids.dim() == 2 else token_ids[:, None]
            return self._extend(cache, tokens, self.embeddings[tokens], return_hidden, all_positions)

        def decode_embeds(self, cache: Any, embeds: torch.Tensor, *, return_hidden: bool = False,
                          all_positions: bool = False) -> StepOutput:
            filler = torch.full(embeds.shape[:2], self.pad_token_id, dtype=torch.long)
            return self._extend(cache, filler, embeds, return_hidden, all_positions)

        def input_embeddings(self) -> torch.Tensor:
            return self.embeddings

        def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
            return hidden @ self.head.T

        def parameter_count(self) -> int:
            return int(self.embeddings.numel() + self.head.numel())

    return FakeCache, FakeBackend


@functools.cache
def _classes() -> tuple[type, type]:
    return _fake_classes()


def fake_backend(seed: int = 0, **kwargs: Any) -> Any:
    """A ``FakeBackend``: a seeded bigram model with every backend capability, for plugin tests.

    Parameters
    ----------
    seed
        Seed of its random matrices.
    **kwargs
        ``tokenizer``, ``hidden_size``, ``eos_token_id`` (see the class).
    """
    return _classes()[1](seed, **kwargs)


def fake_model(seed: int = 0, **kwargs: Any) -> Any:
    """A :class:`decodekit.Model` around :func:`fake_backend`: generation without a neural network."""
    from decodekit.api import Model

    backend = fake_backend(seed, **kwargs)
    return Model(backend, reference=backend.model_id)
