"""The torch backend's linear kernels side by side: ``linear="onednn"`` vs ``linear="aten"``.

Loads the default model twice in one process, once with oneDNN-packed linear weights for
multi-row decode steps and once with torch's default kernel, and runs on both, interleaved
(the order alternates every repeat): greedy decoding of one prompt (one-row steps, where the
two must be the same speed and bit-identical), a batch of the 3 prompts with greedy decoding,
contrastive search (``top_k=4``) and beam search (4 beams). Prints the time per new token
(median over repeats, prefill included), the ratio ``aten / onednn`` (>1: packing is faster)
and whether the two kernels gave the same tokens. Every run generates exactly
``--new-tokens`` tokens per prompt (``min_new_tokens`` holds EOS back).

Usage::

    python benchmarks/bench_linear.py [--new-tokens 64] [--repeats 3] [--threads 1] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]
#: label -> (strategy, options, prompts used: "one" or "all")
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "greedy, 1 prompt": ("greedy", {}, "one"),
    "greedy, batch of 3": ("greedy", {}, "all"),
    "contrastive top_k=4": ("contrastive", {"top_k": 4, "alpha": 0.6}, "one"),
    "beam, 4 beams": ("beam", {"num_beams": 4}, "one"),
}
KERNELS = ("onednn", "aten")


def report_memory_and_rounding(models: dict[str, Any]) -> None:
    """Print the packed copies' size and how far one 4-row step's logits differ between kernels."""
    import torch

    from decodekit.backends._packed_linear import linear_bytes

    packed = models["onednn"].backend
    print(f"# packed weight copies: {linear_bytes(packed.model) / 2 ** 20:.0f} MiB (as much again as "
          "the float32 linear weights)")
    ids = models["onednn"].tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    logits = {}
    for kernel, model in models.items():
        _, cache = model.backend.prefill(torch.tensor([ids] * 4))
        logits[kernel] = model.backend.decode(cache, torch.tensor([11, 12, 13, 14])).logits
    diff = (logits["onednn"] - logits["aten"]).abs().max().item()
    scale = logits["aten"].abs().max().item()
    print(f"# one 4-row step: largest logit difference between kernels {diff:.3g} "
          f"(largest logit {scale:.3g}, relative {diff / scale:.2g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    import torch

    import decodekit

    if args.threads:
        torch.set_num_threads(args.threads)
    models = {kernel: decodekit.load("default", linear=kernel) for kernel in KERNELS}
    report_memory_and_rounding(models)
    n = args.new_tokens
    processors = [("min_new_tokens", {"count": n})]
    times: dict[tuple[str, str], list[float]] = {(c, k): [] for c in CASES for k in KERNELS}
    tokens: dict[tuple[str, str], Any] = {}
    for kernel in KERNELS:  # warm-up (packs the weights)
        for strategy, options, _ in CASES.values():
            models[kernel].generate(PROMPTS[:2], strategy=strategy, options=options, max_new_tokens=2)
    for rep in range(args.repeats):
        for case, (strategy, options, which) in CASES.items():
            prompts = PROMPTS if which == "all" else PROMPTS[:1]
            order = KERNELS if rep % 2 == 0 else KERNELS[::-1]
            for kernel in order:
                t = time.perf_counter()
                out = models[kernel].generate(prompts, strategy=strategy, options=options,
                                              max_new_tokens=n, processors=processors)
                times[case, kernel].append((time.perf_counter() - t) / n)
                tokens[case, kernel] = [g.token_ids for g in out]

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default model, {n} new tokens, median of {args.repeats}")
    rows = []
    for case in CASES:
        onednn = statistics.median(times[case, "onednn"])
        aten = statistics.median(times[case, "aten"])
        same = tokens[case, "onednn"] == tokens[case, "aten"]
        rows.append((case, onednn, aten, aten / onednn, same))
    if args.markdown:
        print("| run | onednn ms / step | aten ms / step | aten / onednn | same tokens |")
        print("|---|---:|---:|---:|---|")
        for case, onednn, aten, ratio, same in rows:
            print(f"| {case} | {onednn * 1e3:.2f} | {aten * 1e3:.2f} | {ratio:.3f}x | {'yes' if same else 'no'} |")
    else:
        for case, onednn, aten, ratio, same in rows:
            print(f"{case:<24}{onednn * 1e3:>10.2f}{aten * 1e3:>10.2f}{ratio:>9.3f}x  same tokens: {same}")
    print("all runs (ms/step):", {f"{c} [{k}]": [round(x * 1e3, 2) for x in v] for (c, k), v in times.items()})


if __name__ == "__main__":
    main()
