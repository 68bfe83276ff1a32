"""Grammar-aligned sampling (ASAp) against plain constrained sampling (GCD) on finite grammars.

For each grammar, the exact target ``P(text | text in L)`` is computed by enumerating every
token sequence the grammar allows after the prompt (:func:`decodekit.aligned_exact.exact_distribution`).
Then ``--samples`` texts are drawn with ``sample`` + grammar (GCD) and with ``sample`` + grammar
+ ``aligned = true`` (ASAp, one fresh trie per grammar), both with ``--rows`` samples per
request (1, the default, is the reference algorithm's one-at-a-time setting), so their seconds
compare. Printed per checkpoint:

* GCD KL: ``KL(empirical || target)`` in nats of the first n GCD samples;
* ASAp KL: the same for the first n ASAp samples (cumulative), and for the samples drawn since
  the previous checkpoint (window), which shows where the sampler has got to;
* c(root) / P(L): ASAp's expected-future-grammaticality estimate at the root over the exact
  probability of the language (1.0 once the trie covers the language; never below 1 but for
  float rounding: the enumeration runs batched prefills, sampling runs cached decode steps).

Every draw is seeded (request i uses seed i), so a run is deterministic on a given machine.

Usage::

    python benchmarks/bench_asap.py [--samples 1000] [--rows 1] [--model tiny]
        [--prompt "The quick brown"] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter
from typing import Any

import torch

GRAMMARS = {
    "numbers": r"start: /(0|1|10|3\.14|-42)/",
    "letters": r"start: /[a-e]{1,2}/",
}
CHECKPOINTS = (25, 50, 100, 200, 500, 1000, 2000, 5000)


def draw(model: Any, prompt: str, grammar: str, n: int, rows: int, options: dict[str, Any],
         max_new_tokens: int, first_seed: int = 0) -> tuple[list[str], int]:
    """``n`` texts from ``sample`` with ``options``, ``rows`` per request, seeds counting up
    from ``first_seed``; also the number of generated tokens."""
    texts: list[str] = []
    tokens = 0
    seed = first_seed
    while len(texts) < n:
        k = min(rows, n - len(texts))
        gens = model.generate([prompt] * k, grammar=grammar, strategy="sample", options=options,
                              seed=seed, max_new_tokens=max_new_tokens)
        texts += [g.text for g in gens]
        tokens += sum(len(g.token_ids) for g in gens)
        seed += 1
    return texts, tokens


def run(model: Any, prompt: str, name: str, grammar: str, samples: int, rows: int,
        max_new_tokens: int) -> list[str]:
    """Markdown table rows for one grammar."""
    from decodekit.aligned import reset, store_for
    from decodekit.aligned_exact import exact_distribution, kl_divergence

    exact = exact_distribution(model, prompt, grammar, max_tokens=max_new_tokens)
    target = exact.probabilities
    start = time.perf_counter()
    gcd, gcd_tokens = draw(model, prompt, grammar, samples, rows, {}, max_new_tokens)
    gcd_s = time.perf_counter() - start
    reset(model)
    points = [c for c in CHECKPOINTS if c < samples] + [samples]
    asap: list[str] = []
    asap_tokens = 0
    ratios = []
    start = time.perf_counter()
    for point in points:
        more, count = draw(model, prompt, grammar, point - len(asap), rows, {"aligned": True},
                           max_new_tokens, first_seed=-(-len(asap) // rows))
        asap += more
        asap_tokens += count
        trie = next(iter(store_for(model)))
        ratios.append(trie.efg / exact.mass)
    asap_s = time.perf_counter() - start
    top = ", ".join(f"{t!r}: {p:.3f}" for t, p in sorted(target.items(), key=lambda kv: -kv[1])[:4])
    title = (f"\n**{name}** `{grammar}`: P(L) = {exact.mass:.3g}, {exact.sequences} token "
             f"sequences; target {top}\n")
    out = [title,
           "| samples | GCD KL | ASAp KL (cumulative) | ASAp KL (window) | c(root) / P(L) |",
           "|---:|---:|---:|---:|---:|"]
    previous = 0
    for point, ratio in zip(points, ratios):
        out.append(f"| {point} | {kl_divergence(Counter(gcd[:point]), target):.4f} "
                   f"| {kl_divergence(Counter(asap[:point]), target):.4f} "
                   f"| {kl_divergence(Counter(asap[previous:point]), target):.4f} | {ratio:.4f} |")
        previous = point
    gcd_top = Counter(gcd).most_common(3)
    asap_top = Counter(asap[samples // 2:]).most_common(3)
    nodes = next(iter(store_for(model))).nodes
    out.append(f"\nGCD's most frequent texts: {gcd_top}; ASAp's (second half): {asap_top}. "
               f"Time per generated token (EOS included): GCD {gcd_s / gcd_tokens * 1e3:.1f} ms "
               f"({gcd_tokens} tokens), ASAp {asap_s / asap_tokens * 1e3:.1f} ms ({asap_tokens} "
               f"tokens); ASAp trie: {nodes} nodes.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1, help="ASAp samples per request")
    parser.add_argument("--model", default="tiny", help="'tiny' (the seeded test model) or a "
                                                        "reference decodekit.load accepts")
    parser.add_argument("--prompt", default="The quick brown")
    parser.add_argument("--grammar", action="append", help="NAME=LARK (default: the builtin pair)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "tiny":
        from decodekit.testing import tiny_model

        model = tiny_model(0)
    else:
        import decodekit

        model = decodekit.load(args.model)
    grammars = dict(g.split("=", 1) for g in args.grammar) if args.grammar else GRAMMARS
    print(f"ASAp vs GCD: model {model.backend.model_id}, prompt {args.prompt!r}, "
          f"{args.samples} samples each, ASAp {args.rows} per request; "
          f"{platform.python_implementation()} {platform.python_version()}, torch {torch.__version__}")
    for name, grammar in grammars.items():
        print("\n".join(run(model, args.prompt, name, grammar, args.samples, args.rows,
                            args.max_new_tokens)))


if __name__ == "__main__":
    main()
