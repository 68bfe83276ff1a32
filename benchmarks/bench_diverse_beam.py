"""Per-step cost of diverse beam search against beam search of the same width.

Runs, in one process on the default model, each prompt through ``beam`` (``num_beams=B``) and
``diverse_beam`` (``num_beams=B``, ``num_groups=G``), interleaved run by run (the order
rotates every repeat) so that machine noise hits all alike. EOS is disabled so that all run
exactly ``--new-tokens`` steps with ``B`` rows per step. For every run it records, per step
(forward pass):

* the wall time and the process CPU time of the whole call;
* the part of it spent outside the model (``prefill``/``decode`` of the backend are timed):
  the search itself: log-softmax, penalties, top-k, row bookkeeping, cache reordering.

It prints medians over all runs, the ratio diverse / beam of the medians and the median of the
ratios of paired runs (same prompt, back to back). On a machine shared with other work the CPU
clock with ``--threads 1`` is the steadier measure; the search-time column is independent of
how fast the model runs.

Usage::

    python benchmarks/bench_diverse_beam.py [--beams 4] [--groups 2 4] [--new-tokens 24]
        [--repeats 3] [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Any

import torch

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]


class ModelClock:
    """Wraps a backend's ``prefill`` and ``decode`` to add up the CPU time spent in them."""

    def __init__(self, backend: Any) -> None:
        self.seconds = 0.0
        for name in ("prefill", "decode"):
            setattr(backend, name, self._wrap(getattr(backend, name)))

    def _wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start
        return timed


def run_once(model: Any, clock: ModelClock, prompt: str, strategy: str, options: dict,
             n: int) -> dict[str, float]:
    """One generation; per-step wall, CPU and search (CPU outside the model) seconds."""
    import decodekit

    clock.seconds = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    gen = decodekit.generate(prompt, model=model, strategy=strategy, options=options,
                             max_new_tokens=n, processors=[("stop", {"eos": False})])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = gen.stats.forward_passes
    return {"wall": wall / steps, "cpu": cpu / steps, "search": (cpu - clock.seconds) / steps,
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, default=4, help="num_beams of both strategies")
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4], help="num_groups to test")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    import decodekit

    if args.threads:
        torch.set_num_threads(args.threads)
    model = decodekit.load("default")
    clock = ModelClock(model.backend)
    n, nb = args.new_tokens, args.beams
    configs = [("beam", "beam", {"num_beams": nb})] + [
        (f"diverse_beam G={g}", "diverse_beam", {"num_beams": nb, "num_groups": g,
                                                 "diversity_penalty": 0.5}) for g in args.groups]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in configs}
    run_once(model, clock, PROMPTS[0], "beam", {"num_beams": nb}, 4)  # warm-up
    for rep in range(args.repeats):
        print(f"repeat {rep + 1}/{args.repeats}", file=sys.stderr, flush=True)
        shift = rep % len(configs)
        order = configs[shift:] + configs[:shift]  # rotate so that no strategy always runs first
        for prompt in PROMPTS:
            for label, strategy, options in order:
                runs[label].append(run_once(model, clock, prompt, strategy, options, n))

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    def paired(label: str, key: str) -> float:
        return statistics.median(a[key] / b[key] for a, b in zip(runs[label], runs["beam"]))

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default model, num_beams={nb}, {n} new tokens, "
          f"{len(PROMPTS)} prompts x {args.repeats} repeats, medians")
    header = ["strategy", "passes", "wall ms/step", "vs beam (paired)", "CPU ms/step",
              "vs beam (paired)", "search CPU ms/step"]
    table = []
    for label, _, _ in configs:
        table.append([label, f"{int(med(label, 'steps'))}", f"{med(label, 'wall') * 1e3:.1f}",
                      f"{med(label, 'wall') / med('beam', 'wall'):.3f}x "
                      f"({paired(label, 'wall'):.3f}x)",
                      f"{med(label, 'cpu') * 1e3:.1f}",
                      f"{med(label, 'cpu') / med('beam', 'cpu'):.3f}x ({paired(label, 'cpu'):.3f}x)",
                      f"{med(label, 'search') * 1e3:.2f}"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
        for row in [header, *table]:
            print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    print("all runs (wall ms/step):",
          {k: [round(r["wall"] * 1e3, 1) for r in v] for k, v in runs.items()})


if __name__ == "__main__":
    main()
