"""Helpers for testing decodekit and its plugins without downloads.

:func:`tiny_model` builds a small, randomly initialised (seeded) Llama model with a byte-level
BPE tokenizer trained in-process, wrapped in the ``torch`` backend, in well under a second.
It is the model plugin authors and decodekit's own unit tests run on.
"""

from __future__ import annotations

import functools
from typing import Any

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
