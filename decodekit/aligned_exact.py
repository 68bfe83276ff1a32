"""The exact target of grammar-aligned sampling on a finite grammar, and the KL to it.

:func:`exact_distribution` enumerates every token sequence a finite grammar allows after a
prompt and scores it with the model, giving ``P(text | text in L)`` and ``P(L)``: what
:mod:`decodekit.aligned` converges to. :func:`kl_divergence` compares samples with it.
``benchmarks/bench_asap.py`` and the tests use both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from decodekit.errors import InputError


@dataclass(frozen=True)
class LanguageDistribution:
    """A finite grammar's texts under a model.

    Attributes
    ----------
    probabilities
        ``P(text | L)`` per text (summed over every tokenization the grammar allows).
    mass
        ``P(L)``: the probability that unconstrained sampling produces a sentence of the grammar.
    sequences
        How many token sequences (tokenizations followed by EOS) were enumerated.
    """

    probabilities: dict[str, float]
    mass: float
    sequences: int


def exact_distribution(model: Any, prompt: str | list[int], grammar: Any, *, max_tokens: int = 16,
                       temperature: float = 1.0, max_sequences: int = 20000) -> LanguageDistribution:
    """Enumerate a finite grammar's language with the model: the exact target of ASAp.

    Walks every token sequence the grammar allows after ``prompt`` (every tokenization of every
    sentence, then an end-of-sequence token), scoring it with the model's plain distribution
    (divided by ``temperature``; no other processor).

    Parameters
    ----------
    model
        A :class:`decodekit.Model` (or a backend).
    prompt
        Text (encoded without special tokens) or token ids.
    grammar
        Anything :func:`decodekit.grammars.compile` accepts.
    max_tokens
        Longest token sequence, end-of-sequence token included (``max_new_tokens``).
    temperature
        Divide the logits by this.
    max_sequences
        Give up beyond this many prefixes.

    Raises
    ------
    InputError
        If the language has sequences longer than ``max_tokens`` or more than ``max_sequences``
        prefixes.
    """
    from decodekit.grammars import compile as compile_grammar

    backend = getattr(model, "backend", model)
    tok = backend.tokenizer
    ids = tok.encode(prompt, add_special_tokens=False) if isinstance(prompt, str) else list(prompt)
    eos = tuple(backend.eos_token_ids)
    compiled = compile_grammar(grammar, tok, eos_token_ids=eos)
    frontier: list[tuple[list[int], float, Any]] = [([], 0.0, compiled.matcher())]
    found: dict[str, float] = {}
    count = seen = 0
    for depth in range(max_tokens + 1):
        if not frontier:
            break
        if depth == max_tokens:
            raise InputError(f"the grammar allows token sequences longer than max_tokens={max_tokens}; "
                             "give a finite grammar, or a larger max_tokens")
        nxt: list[tuple[list[int], float, Any]] = []
        for start in range(0, len(frontier), 256):
            chunk = frontier[start:start + 256]
            batch = torch.tensor([ids + prefix for prefix, _, _ in chunk], dtype=torch.long)
            with torch.inference_mode():
                logits = backend.prefill(batch)[0].logits
            logp = torch.log_softmax(logits.double() / temperature, dim=-1)
            for (prefix, lp, matcher), row in zip(chunk, logp):
                for token in matcher.allowed_tokens().tolist():
                    score = lp + float(row[token])
                    if token in eos:
                        text = tok.decode(prefix, skip_special_tokens=True)
                        found[text] = found.get(text, 0.0) + math.exp(score)
                        count += 1
                        continue
                    child = matcher.fork()
                    child.accept(token)
                    nxt.append((prefix + [token], score, child))
                    seen += 1
            if seen > max_sequences:
                raise InputError(f"the grammar has more than {max_sequences} token prefixes; "
                                 "give a smaller language or a larger max_sequences")
        frontier = nxt
    mass = sum(found.values())
    if mass <= 0.0:
        raise InputError("the model gives the grammar's language zero probability")
    return LanguageDistribution({t: p / mass for t, p in found.items()}, mass, count)


def kl_divergence(counts: dict[str, int], target: dict[str, float]) -> float:
    """``KL(empirical || target)`` in nats, for sample counts per text. A text the target gives
    no probability makes it infinite."""
    total = sum(counts.values())
    if total <= 0:
        raise InputError("no samples to compare")
    kl = 0.0
    for text, n in counts.items():
        if n == 0:
            continue
        q = n / total
        p = target.get(text, 0.0)
        if p <= 0.0:
            return math.inf
        kl += q * math.log(q / p)
    return kl
