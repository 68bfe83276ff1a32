"""Greedy decoding speed: decodekit vs transformers ``generate`` vs a bare forward loop.

Runs, in one process on the default model, each prompt through three implementations of
greedy decoding with a KV cache, interleaved (A B C, A B C, ...) so that machine noise hits
all three alike, and prints tokens/s (median over repeats) and the ratios. It checks that the
three produce identical tokens.

Usage::

    python benchmarks/bench_greedy.py [--new-tokens 128] [--repeats 3] [--markdown]

The bare loop is the floor: prefill, then ``argmax`` and one forward per token, nothing else.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]


def bare_loop(model, ids: torch.Tensor, n: int) -> list[int]:
    """Prefill, then one forward pass per token with a DynamicCache; argmax; no EOS check."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    tokens = []
    for _ in range(n):
        tok = out.logits[:, -1].argmax(-1)
        tokens.append(int(tok))
        out = model(input_ids=tok[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    import decodekit

    model = decodekit.load("default")
    hf = model.backend.model
    tok = model.tokenizer
    n = args.new_tokens
    # no EOS stop in any of the three, so all generate exactly n tokens
    no_eos = [("stop", {"eos": False})]
    times: dict[str, list[float]] = {"decodekit": [], "transformers": [], "bare": []}
    outputs: dict[str, list[list[int]]] = {k: [] for k in times}
    with torch.inference_mode():
        # warm-up
        ids0 = torch.tensor([tok.encode(PROMPTS[0], add_special_tokens=False)])
        bare_loop(hf, ids0, 8)
        for rep in range(args.repeats):
            per = {k: 0.0 for k in times}
            for prompt in PROMPTS:
                ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
                t = time.perf_counter()
                g = decodekit.generate(prompt, model=model, max_new_tokens=n, processors=no_eos)
                per["decodekit"] += time.perf_counter() - t
                t = time.perf_counter()
                ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False)
                per["transformers"] += time.perf_counter() - t
                t = time.perf_counter()
                bare = bare_loop(hf, ids, n)
                per["bare"] += time.perf_counter() - t
                if rep == 0:
                    outputs["decodekit"].append(g.token_ids)
                    outputs["transformers"].append(ref[0, ids.shape[1]:].tolist())
                    outputs["bare"].append(bare)
            for k in times:
                times[k].append(len(PROMPTS) * n / per[k])
    identical = outputs["decodekit"] == outputs["bare"]
    # transformers' min_new_tokens masks EOS, which bare/decodekit do not: compare where no EOS won
    identical_hf = outputs["decodekit"] == outputs["transformers"]
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        ("decodekit greedy", med["decodekit"], med["decodekit"] / med["transformers"], med["decodekit"] / med["bare"]),
        ("transformers generate", med["transformers"], 1.0, med["transformers"] / med["bare"]),
        ("bare forward loop", med["bare"], med["bare"] / med["transformers"], 1.0),
    ]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {len(PROMPTS)} prompts x {n} new tokens, "
          f"median of {args.repeats}")
    if args.markdown:
        print("| implementation | tokens/s | vs transformers | vs bare loop |")
        print("|---|---:|---:|---:|")
        for name, tps, vs_hf, vs_bare in rows:
            print(f"| {name} | {tps:.2f} | {vs_hf:.3f}x | {vs_bare:.3f}x |")
    else:
        print(f"{'implementation':<24}{'tokens/s':>10}{'vs hf':>10}{'vs bare':>10}")
        for name, tps, vs_hf, vs_bare in rows:
            print(f"{name:<24}{tps:>10.2f}{vs_hf:>9.3f}x{vs_bare:>9.3f}x")
    print(f"identical tokens: decodekit == bare loop: {identical}; decodekit == transformers: {identical_hf}")
    print("all runs (tokens/s):", {k: [round(x, 2) for x in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
