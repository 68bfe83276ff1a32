"""Superposed decoding speed: k drafts in one pass per step vs k separate greedy decodes.

Runs on the default model, in one process, for 15-token prompts and several draft lengths:

* ``superposed`` with the ``python-stdlib`` n-gram table (alpha 0.54, the defaults),
* ``superposed`` without a table (alpha 0: the cost of the superposition alone),
* ``k`` separate ``greedy`` decodes of the same length, one after another.

End-of-sequence is disabled (``stop.eos = false``) so every draft and every greedy decode has
exactly the requested length. Configurations are interleaved per prompt (A B C, A B C, ...) so
machine noise hits all alike; the table shows median wall times over prompts and repeats and
the ratio to the k greedy decodes. The paper's claim is a ratio below 1/2.44 = 0.41 for k >= 3.

Usage::

    python benchmarks/bench_superposed.py [--k 3] [--lengths 10 15 20] [--repeats 3] [--threads N] [--markdown]

The first run builds the python-stdlib n-gram table for the model's tokenizer (cached).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch

TEXTS = [
    "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz",
    "def read_config(path):\n    \"\"\"Read a configuration file and return a dictionary of settings.",
    "In a small village at the edge of the forest, there lived an old woodcutter and his daughter",
    "import os\nimport sys\n\n\ndef main(argv=None):\n    parser = argparse.ArgumentParser(description=",
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to",
]
PROMPT_TOKENS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3, help="drafts (and greedy decodes)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 15, 20])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import decodekit

    model = decodekit.load("default")
    tok = model.tokenizer
    prompts = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) < PROMPT_TOKENS:
            raise SystemExit(f"prompt too short ({len(ids)} tokens): {text!r}")
        prompts.append(ids[:PROMPT_TOKENS])
    no_eos = [("stop", {"eos": False})]
    k = args.k
    configs = {
        "superposed (python-stdlib n-grams)": {"k": k},
        "superposed (no table, alpha 0)": {"k": k, "alpha": 0.0},
    }
    baseline = f"{k} x greedy"

    def superposed(options: dict, ids: list[int], n: int) -> tuple[float, object]:
        began = time.perf_counter()
        g = decodekit.generate(ids, model=model, strategy="superposed", options=options,
                               max_new_tokens=n, processors=no_eos)
        elapsed = time.perf_counter() - began
        assert len(g.sequences) == k and all(len(s.token_ids) == n for s in g.sequences)
        return elapsed, g

    def greedy_k(ids: list[int], n: int) -> tuple[float, list[int]]:
        began = time.perf_counter()
        for _ in range(k):
            g = decodekit.generate(ids, model=model, strategy="greedy", max_new_tokens=n, processors=no_eos)
            assert len(g.token_ids) == n
        return time.perf_counter() - began, g.token_ids

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # warm-up (also builds the python-stdlib table on first use)
        superposed({"k": k}, prompts[0], 4)
        greedy_k(prompts[0], 4)
        times: dict[tuple[str, int], list[float]] = {}
        ratios: dict[tuple[str, int], list[float]] = {}
        lookup: list[float] = []
        same_as_greedy: dict[str, list[bool]] = {name: [] for name in configs}
        distinct: dict[str, list[int]] = {name: [] for name in configs}
        for rep in range(args.repeats):
            for ids in prompts:
                for n in args.lengths:
                    base, greedy_ids = greedy_k(ids, n)
                    times.setdefault((baseline, n), []).append(base)
                    for name, options in configs.items():
                        elapsed, g = superposed(options, ids, n)
                        times.setdefault((name, n), []).append(elapsed)
                        ratios.setdefault((name, n), []).append(elapsed / base)
                        if options.get("alpha", 0.54) > 0:
                            lookup.append(g.stats.extra["ngram_lookup_seconds"] / elapsed)
                        if rep == 0:
                            same_as_greedy[name].append(g.sequences[0].token_ids == greedy_ids)
                            distinct[name].append(len({tuple(s.token_ids) for s in g.sequences}))

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default model, k = {k}, {len(prompts)} prompts x "
          f"{PROMPT_TOKENS} tokens, median of {args.repeats} repeats x {len(prompts)} prompts")
    rows = []
    for n in args.lengths:
        rows.append((baseline, n, statistics.median(times[(baseline, n)]), 1.0))
        for name in configs:
            rows.append((name, n, statistics.median(times[(name, n)]), statistics.median(ratios[(name, n)])))
    target = 1 / 2.44
    if args.markdown:
        print("| decoding | new tokens | wall time (s) | time / k greedy | below 1/2.44? |")
        print("|---|---:|---:|---:|:---:|")
        for name, n, t, r in rows:
            verdict = "" if name == baseline else ("yes" if r < target else "no")
            print(f"| {name} | {n} | {t:.3f} | {r:.3f} | {verdict} |")
    else:
        print(f"{'decoding':<38}{'tokens':>7}{'seconds':>10}{'ratio':>8}")
        for name, n, t, r in rows:
            print(f"{name:<38}{n:>7}{t:>10.3f}{r:>8.3f}")
    print(f"target ratio < {target:.3f}; n-gram lookups: median {100 * statistics.median(lookup):.2f}% "
          f"of the superposed wall time")
    for name in configs:
        runs = len(same_as_greedy[name])
        print(f"{name}: best draft == greedy in {sum(same_as_greedy[name])}/{runs} runs; "
              f"distinct drafts per run: {statistics.mean(distinct[name]):.2f} of {k}")


if __name__ == "__main__":
    main()
