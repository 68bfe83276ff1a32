"""Per-step cost of diverse beam search against beam search of the same width.

Runs, in one process on the default model, each prompt through ``beam`` (``num_beams=B``) and
``diverse_beam`` (``num_beams=B``, ``num_groups=G``), interleaved run by run so that machine
noise hits both alike. EOS is disabled so that both run exactly ``--new-tokens`` steps with
``B`` rows per step; the time per step is the call's wall time divided by its forward passes.
Prints the median over runs of the time per step, the ratio of the medians, and the median of
the ratios of paired runs (same prompt, back to back).

Usage::

    python benchmarks/bench_diverse_beam.py [--beams 4] [--groups 2 4] [--new-tokens 32]
        [--repeats 5] [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]


def timed(model, prompt: str, strategy: str, options: dict, n: int) -> tuple[float, int]:
    """Seconds per step (wall time / forward passes) of one generation, and its step count."""
    import decodekit

    start = time.perf_counter()
    gen = decodekit.generate(prompt, model=model, strategy=strategy, options=options,
                             max_new_tokens=n, processors=[("stop", {"eos": False})])
    seconds = time.perf_counter() - start
    return seconds / gen.stats.forward_passes, gen.stats.forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, default=4, help="num_beams of both strategies")
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4], help="num_groups to test")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    import decodekit

    if args.threads:
        torch.set_num_threads(args.threads)
    model = decodekit.load("default")
    n, nb = args.new_tokens, args.beams
    configs = [("beam", "beam", {"num_beams": nb})] + [
        (f"diverse_beam G={g}", "diverse_beam", {"num_beams": nb, "num_groups": g,
                                                 "diversity_penalty": 0.5}) for g in args.groups]
    times: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    steps: dict[str, int] = {}
    timed(model, PROMPTS[0], "beam", {"num_beams": nb}, 4)  # warm-up
    for rep in range(args.repeats):
        print(f"repeat {rep + 1}/{args.repeats}", file=sys.stderr, flush=True)
        for prompt in PROMPTS:
            for label, strategy, options in configs:
                per_step, passes = timed(model, prompt, strategy, options, n)
                times[label].append(per_step)
                steps[label] = passes
    med = {label: statistics.median(v) for label, v in times.items()}
    base = med["beam"]
    paired = {label: statistics.median(a / b for a, b in zip(v, times["beam"]))
              for label, v in times.items()}
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default model, num_beams={nb}, {n} new tokens, "
          f"{len(PROMPTS)} prompts x {args.repeats} repeats, median")
    if args.markdown:
        print("| strategy | forward passes | ms / step | vs beam | paired ratio |")
        print("|---|---:|---:|---:|---:|")
        for label, _, _ in configs:
            print(f"| {label} | {steps[label]} | {med[label] * 1e3:.2f} | {med[label] / base:.3f}x "
                  f"| {paired[label]:.3f}x |")
    else:
        print(f"{'strategy':<22}{'passes':>8}{'ms/step':>10}{'vs beam':>10}{'paired':>10}")
        for label, _, _ in configs:
            print(f"{label:<22}{steps[label]:>8}{med[label] * 1e3:>10.2f}{med[label] / base:>9.3f}x"
                  f"{paired[label]:>9.3f}x")
    print("all runs (ms/step):", {k: [round(x * 1e3, 2) for x in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
