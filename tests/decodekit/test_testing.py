"""decodekit.testing: the tiny model and the fake backend offered to plugin authors."""

from __future__ import annotations

import pytest
import torch

import decodekit
from decodekit.testing import fake_backend, fake_model


def test_fake_backend_is_a_deterministic_bigram_model():
    backend = fake_backend(3)
    out, cache = backend.prefill(torch.tensor([[5, 6, 7], [0, 8, 7]]), torch.tensor([[1, 1, 1], [0, 1, 1]]))
    assert out.logits.shape == (2, backend.vocab_size)
    assert torch.equal(out.logits[0], out.logits[1])  # same last token, same distribution
    step = backend.decode(cache, torch.tensor([[9, 10], [9, 11]]), all_positions=True, return_hidden=True)
    assert step.logits.shape == (2, 2, backend.vocab_size)
    assert torch.equal(step.logits[0, 0], step.logits[1, 0])
    assert torch.allclose(backend.lm_head(step.hidden[:, -1]), step.logits[:, -1], atol=1e-5)
    assert cache.length == 5 and backend.forward_passes == 2
    fork = cache.fork()
    cache.select(torch.tensor([1, 1, 0]))
    cache.crop(4)
    assert fork.batch_size == 2 and fork.length == 5
    assert cache.batch_size == 3 and cache.tokens[:, -1].tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(9)
    emb = backend.decode_embeds(cache, backend.input_embeddings()[torch.tensor([[4], [4], [4]])])
    assert torch.allclose(emb.logits, backend.decode(fork, torch.tensor([4, 4])).logits[:1].expand(3, -1), atol=1e-5)


@pytest.mark.parametrize("strategy,options", [("greedy", {}), ("beam", {"num_beams": 3}),
                                              ("contrastive", {}), ("superposed", {})])
def test_strategies_run_on_the_fake_model(strategy, options):
    model = fake_model(0)
    g = decodekit.generate("The quick", model=model, strategy=strategy, options=options, max_new_tokens=6)
    assert 1 <= len(g.token_ids) <= 6
    again = decodekit.generate("The quick", model=model, strategy=strategy, options=options, max_new_tokens=6)
    assert again.token_ids == g.token_ids
    # greedy on a bigram model: every token is the arg-max after the previous one
    if strategy == "greedy":
        backend = model.backend
        prev = backend.tokenizer.encode("The quick", add_special_tokens=False)[-1]
        for tok in g.token_ids:
            assert tok == int(torch.argmax(backend.lm_head(backend.embeddings[prev][None]))), tok
            prev = tok
