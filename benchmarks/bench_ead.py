"""Entropy adaptive decoding on the default model: a threshold sweep.

For every threshold (bits), each prompt is decoded greedily with the ``ead`` strategy (small
model: the default model's first ``--layers`` layers, an early exit; large model: the whole
default model) and compared with large-only greedy decoding of the same prompt. Reported per
threshold, over all prompts:

* large share: tokens chosen from the large model's logits / all tokens;
* cost (tokens): the paper's parameter-weighted token cost relative to large-only,
  ``(P_S * T_S + P_L * T_L) / (P_L * (T_S + T_L))``;
* cost (passes): parameter-weighted positions both models actually ran (prompt prefill and
  catch-up passes included) relative to the positions a large-only run feeds;
* agreement: fraction of positions where the output equals large-only greedy output
  (over the longer of the two), and the mean length of their common prefix;
* perplexity of the output under the large model (all tokens of all prompts pooled); it
  rewards repetition, so read it with
* distinct bigrams: unique / all token bigrams of each output, averaged (low = repetitive);
* seconds: wall time of the ``ead`` generations.

Usage::

    python benchmarks/bench_ead.py [--layers 8] [--new-tokens 48] [--threads 1]
        [--thresholds=-inf,1,2,3,inf] [--plot docs/ead_threshold.png] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch

PROMPTS = [
    "The history of the printing press begins",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Question: A train travels 60 miles in 1.5 hours. What is its average speed?\nAnswer:",
    "The three primary colors are",
    "Photosynthesis is the process by which",
    "import json\n\nwith open('config.json') as f:\n",
]
THRESHOLDS = [-math.inf, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, math.inf]


def large_nll(backend: object, prompt: list[int], output: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of ``output`` after ``prompt`` under ``backend``'s model."""
    if not output:
        return 0.0, 0
    ids = torch.tensor([prompt + output])
    logits = backend.model(ids).logits[0, len(prompt) - 1:-1].float()  # type: ignore[attr-defined]
    logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(output)[:, None])
    return float(-logp.sum()), len(output)


def agreement(a: list[int], b: list[int]) -> tuple[int, int, int]:
    """(positions where equal, longer length, common prefix length)."""
    same = sum(x == y for x, y in zip(a, b))
    prefix = 0
    for x, y in zip(a, b):
        if x != y:
            break
        prefix += 1
    return same, max(len(a), len(b)), prefix


def distinct_bigrams(ids: list[int]) -> float:
    """Unique token bigrams / all token bigrams (1.0 for fewer than two tokens)."""
    pairs = list(zip(ids, ids[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def fmt_threshold(t: float) -> str:
    return "+inf" if t == math.inf else "-inf" if t == -math.inf else f"{t:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="layers of the early-exit small model")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--min-dwell", type=int, default=None)
    parser.add_argument("--thresholds", type=lambda v: [float(x) for x in v.split(",")],
                        default=THRESHOLDS, help="comma-separated bits, e.g. -inf,1,2,inf")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--plot", type=Path, default=None, help="save the curves to this image")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import decodekit

    model = decodekit.load("default")
    tok = model.tokenizer
    n = args.new_tokens
    prompt_ids = [tok.encode(p, add_special_tokens=False) for p in PROMPTS]
    rows = []
    with torch.inference_mode():
        reference = [decodekit.generate(p, model=model, max_new_tokens=n).token_ids for p in prompt_ids]
        nll = [large_nll(model.backend, p, r) for p, r in zip(prompt_ids, reference)]
        large_only = {"perplexity": math.exp(sum(x for x, _ in nll) / sum(c for _, c in nll)),
                      "distinct": sum(map(distinct_bigrams, reference)) / len(PROMPTS)}
        for threshold in args.thresholds:
            options = {"layers": args.layers, "threshold": threshold, "window": args.window,
                       "min_dwell": args.min_dwell}
            totals = {"small": 0, "large": 0, "same": 0, "longer": 0, "prefix": 0, "nll": 0.0,
                      "count": 0, "switches": 0, "seconds": 0.0, "distinct": 0.0}
            cost_num = cost_den = 0.0
            for ids, ref in zip(prompt_ids, reference):
                start = time.perf_counter()
                g = decodekit.generate(ids, model=model, strategy="ead", options=options, max_new_tokens=n)
                totals["seconds"] += time.perf_counter() - start
                extra = g.stats.extra
                totals["small"] += extra["tokens_small"]
                totals["large"] += extra["tokens_large"]
                totals["switches"] += extra["switches_to_large"] + extra["switches_to_small"]
                ps, pl = extra["parameters_small"], extra["parameters_large"]
                cost_num += ps * extra["positions_small"] + pl * extra["positions_large"]
                # what large-only greedy feeds: the prompt, then every token but the last
                cost_den += pl * (len(ids) + max(len(g.token_ids) - 1, 0))
                same, longer, prefix = agreement(g.token_ids, ref)
                totals["same"] += same
                totals["longer"] += longer
                totals["prefix"] += prefix
                totals["distinct"] += distinct_bigrams(g.token_ids)
                nll, count = large_nll(model.backend, ids, g.token_ids)
                totals["nll"] += nll
                totals["count"] += count
            tokens = totals["small"] + totals["large"]
            cost_tokens = (ps * totals["small"] + pl * totals["large"]) / (pl * tokens)
            rows.append({
                "threshold": threshold,
                "large_share": totals["large"] / tokens,
                "cost_tokens": cost_tokens,
                "cost_passes": cost_num / cost_den,
                "agreement": totals["same"] / totals["longer"],
                "prefix": totals["prefix"] / len(PROMPTS),
                "perplexity": math.exp(totals["nll"] / totals["count"]),
                "distinct": totals["distinct"] / len(PROMPTS),
                "switches": totals["switches"] / len(PROMPTS),
                "seconds": totals["seconds"],
            })
            r = rows[-1]
            print(f"threshold {fmt_threshold(threshold):>5}: large share {r['large_share']:.3f}, "
                  f"cost {r['cost_tokens']:.3f} / {r['cost_passes']:.3f}, agreement {r['agreement']:.3f}, "
                  f"ppl {r['perplexity']:.3f}", flush=True)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; default model, small = first {args.layers} layers "
          f"(P_S/P_L = {ps / pl:.3f}); {len(PROMPTS)} prompts x {n} new tokens, greedy, "
          f"window {args.window}, min_dwell {args.min_dwell if args.min_dwell is not None else args.window}")
    header = ["threshold (bits)", "large share", "cost (tokens)", "cost (passes)", "agreement",
              "common prefix", "perplexity (large)", "distinct bigrams", "switches / prompt", "seconds"]
    cells = [[fmt_threshold(r["threshold"]), f"{r['large_share']:.3f}", f"{r['cost_tokens']:.3f}",
              f"{r['cost_passes']:.3f}", f"{r['agreement']:.3f}", f"{r['prefix']:.1f}",
              f"{r['perplexity']:.3f}", f"{r['distinct']:.3f}", f"{r['switches']:.1f}",
              f"{r['seconds']:.1f}"] for r in rows]
    cells.append(["large only", "1.000", "1.000", "1.000", "1.000",
                  f"{sum(map(len, reference)) / len(PROMPTS):.1f}",
                  f"{large_only['perplexity']:.3f}", f"{large_only['distinct']:.3f}", "-", "-"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" for _ in header) + "|")
        for c in cells:
            print("| " + " | ".join(c) + " |")
    else:
        print("  ".join(f"{h:>14}" for h in header))
        for c in cells:
            print("  ".join(f"{x:>14}" for x in c))
    if args.plot:
        from decodekit.early_exit import num_layers

        title = (f"EAD on {model.backend.model_id}: small = first {args.layers} of "
                 f"{num_layers(model.backend.model)} layers (early exit)")
        plot(rows, args.plot, title, large_only)
        print(f"plot saved to {args.plot}")


def plot(rows: list[dict[str, float]], path: Path, title: str, large_only: dict[str, float]) -> None:
    """Large share, costs and agreement against the threshold; perplexity against cost."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise SystemExit("the plot needs matplotlib: pip install 'decodekit[dev]'") from None
    finite = [r for r in rows if math.isfinite(r["threshold"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [r["threshold"] for r in finite]
    for key, label in (("large_share", "large-model token share"), ("cost_tokens", "cost (tokens)"),
                       ("cost_passes", "cost (passes)"), ("agreement", "agreement with large greedy")):
        left.plot(xs, [r[key] for r in finite], marker="o", label=label)
    left.set_xlabel("threshold (bits, rolling mean entropy)")
    left.set_ylim(0, max(1.05, max(r["cost_passes"] for r in finite) + 0.05))
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot([r["cost_tokens"] for r in rows], [r["perplexity"] for r in rows], marker="o")
    for r in rows:
        right.annotate(fmt_threshold(r["threshold"]), (r["cost_tokens"], r["perplexity"]),
                       fontsize=7, xytext=(3, 3), textcoords="offset points")
    right.plot([1.0], [large_only["perplexity"]], marker="s", color="black")
    right.annotate("large only", (1.0, large_only["perplexity"]), fontsize=7, xytext=(-40, 6),
                   textcoords="offset points")
    right.set_xlabel("estimated cost relative to large-only (tokens)")
    right.set_ylabel("perplexity of the output under the large model")
    right.grid(alpha=0.3)
    right.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
