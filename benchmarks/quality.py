"""Text quality of the search strategies on the default model: repetition, diversity, coherence.

Prompts are the opening words of the prose paragraphs of a public-domain text shipped with the
benchmarks (``benchmarks/data/alice_ch1-3.txt``: chapters I-III of *Alice's Adventures in
Wonderland*, see ``benchmarks/data/README.md``). Every prompt is continued by ``greedy``,
``beam``, top-k sampling, nucleus sampling, ``contrastive`` and ``momentum``, up to
``--new-tokens`` tokens (EOS ends a continuation early), all prompts of a strategy decoded as
batches. The metrics follow Su et al. (SimCTG and "Contrastive Search Is What You Need"):

* rep-n (n = 2, 3, 4) = 100 * (1 - unique n-grams / all n-grams), word n-grams (the text split
  on whitespace), counts pooled over all continuations;
* diversity = 100 * (1 - rep-2/100) * (1 - rep-3/100) * (1 - rep-4/100);
* coherence = the mean log-probability of a continuation's tokens given the prompt and the
  tokens before them, averaged over continuations. The papers score it with a larger model
  (OPT-2.7B); here the scoring model is the default model itself, the one that generated the
  text, which favours the strategies that maximise that model's likelihood (greedy, beam);
* mean length = the mean number of generated tokens (a final EOS included).

Diverse beam search is compared with beam search of the same width, both returning all their
``--beams`` sequences: distinct-n (n = 1, 2, 3) = unique / all word n-grams over the returned
sequences of one prompt, averaged over prompts, and the best (first) sequence's log-probability
under the model, per token and in total.

Usage::

    python benchmarks/quality.py [--prompts 52] [--new-tokens 128] [--batch-size 26]
        [--threads N] [--workers 1] [--seed 0] [--plot docs/quality.png] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "benchmarks" / "data" / "alice_ch1-3.txt"

#: label -> (strategy, options); sampling options follow SimCTG's baselines (k = 40, p = 0.95)
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "greedy": ("greedy", {}),
    "beam (4)": ("beam", {"num_beams": 4, "num_return_sequences": 4}),
    "top-k (k=40)": ("sample", {"top_k": 40}),
    "nucleus (p=0.95)": ("sample", {"top_p": 0.95}),
    "contrastive (k=4, a=0.6)": ("contrastive", {"top_k": 4, "alpha": 0.6}),
    "momentum (defaults)": ("momentum", {}),
}


def load_prompts(path: Path, count: int, words: int, min_words: int) -> list[str]:
    """The first ``words`` words of the first ``count`` prose paragraphs of ``path``.

    Parameters
    ----------
    path
        The text file: paragraphs separated by blank lines.
    count
        Number of prompts wanted.
    words
        Words per prompt.
    min_words
        Paragraphs shorter than this are skipped, as are chapter titles, verse (indented) and
        the edition's sidenote, illustration and separator lines.

    Returns
    -------
    list[str]
        The prompts, whitespace normalised, italics marks removed.
    """
    prompts = []
    for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
        if not para.strip() or para.startswith((" ", "CHAPTER", "[")) or "*   " in para:
            continue
        tokens = para.replace("_", "").split()
        if len(tokens) >= min_words:
            prompts.append(" ".join(tokens[:words]))
    if len(prompts) < count:
        raise SystemExit(f"{path.name} has only {len(prompts)} paragraphs of >= {min_words} words; "
                         f"asked for {count} prompts")
    return prompts[:count]


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    """All n-grams of ``words``, in order."""
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repetition(texts: list[str]) -> dict[str, float]:
    """rep-2/3/4 and diversity (percent) of ``texts``, n-gram counts pooled over the texts."""
    out: dict[str, float] = {}
    diversity = 1.0
    for n in (2, 3, 4):
        unique = total = 0
        for text in texts:
            grams = ngrams(text.split(), n)
            unique += len(set(grams))
            total += len(grams)
        rep = 1.0 - unique / total if total else 0.0
        out[f"rep-{n}"] = 100.0 * rep
        diversity *= 1.0 - rep
    out["diversity"] = 100.0 * diversity
    return out


def distinct(texts: list[str], n: int) -> float:
    """Unique / all word n-grams over ``texts`` together (1.0 when there are none)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def continuation_logprobs(model: Any, pairs: list[tuple[list[int], list[int]]],
                          batch_size: int = 8) -> list[list[float]]:
    """Log-probability of every continuation token given everything before it.

    Parameters
    ----------
    model
        A transformers causal language model.
    pairs
        ``(prompt ids, continuation ids)`` per text.
    batch_size
        Texts per forward pass (right-padded).

    Returns
    -------
    list[list[float]]
        Per text, one log-probability per continuation token.
    """
    result: list[list[float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, (p, c) in enumerate(chunk):
            ids[i, :len(p) + len(c)] = torch.tensor(p + c)
            mask[i, :len(p) + len(c)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for i, (p, c) in enumerate(chunk):
            if not c:
                result.append([])
                continue
            rows = logprobs[i, len(p) - 1:len(p) + len(c) - 1]
            result.append(rows.gather(1, torch.tensor(c)[:, None])[:, 0].tolist())
    return result


def run_strategy(model: Any, prompts: list[str], strategy: str, options: dict[str, Any],
                 new_tokens: int, batch_size: int, seed: int) -> tuple[list[Any], float]:
    """All prompts through one strategy in batches; the generations and the wall seconds."""
    gens: list[Any] = []
    start = time.perf_counter()
    for b, first in enumerate(range(0, len(prompts), batch_size)):
        gens += model.generate(prompts[first:first + batch_size], strategy=strategy,
                               options=options, max_new_tokens=new_tokens, seed=seed + b)
    return gens, time.perf_counter() - start


def text_metrics(model: Any, gens: list[Any], eos: int | None) -> dict[str, float]:
    """rep-n, diversity, coherence and mean length of the best sequence of each generation."""
    best = [g.sequences[0] for g in gens]
    row = repetition([s.text for s in best])
    pairs = [(g.prompt_token_ids, [t for t in s.token_ids if t != eos]) for g, s in zip(gens, best)]
    scores = continuation_logprobs(model.backend.model, pairs)
    row["coherence"] = statistics.mean(statistics.mean(s) for s in scores if s)
    row["mean length"] = statistics.mean(len(s.token_ids) for s in best)
    return row


def beam_metrics(model: Any, gens: list[Any], eos: int | None) -> dict[str, float]:
    """distinct-1/2/3 over each prompt's returned sequences and the best sequence's log-prob."""
    row = {f"distinct-{n}": statistics.mean(distinct([s.text for s in g.sequences], n) for g in gens)
           for n in (1, 2, 3)}
    pairs = [(g.prompt_token_ids, [t for t in g.sequences[0].token_ids if t != eos]) for g in gens]
    scores = [s for s in continuation_logprobs(model.backend.model, pairs) if s]
    row["best log-prob / token"] = statistics.mean(statistics.mean(s) for s in scores)
    row["best log-prob (sum)"] = statistics.mean(sum(s) for s in scores)
    row["returned"] = statistics.mean(len(g.sequences) for g in gens)
    return row


#: columns printed with three decimals (the others get two)
FINE = {"coherence", "distinct-1", "distinct-2", "distinct-3", "best log-prob / token"}


def markdown(rows: dict[str, dict[str, float]], columns: list[str], first: str) -> str:
    """A markdown table, one row per entry of ``rows``."""
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label, row in rows.items():
        cells = [f"{row[c]:.3f}" if c in FINE else f"{row[c]:.2f}" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: Path, text_rows: dict[str, dict[str, float]],
         beam_rows: dict[str, dict[str, float]], title: str) -> None:
    """Three panels: rep-n per strategy, diversity vs coherence, beam vs diverse beam."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install 'decodekit[dev]'") from None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    labels = list(text_rows)
    width = 0.27
    for i, n in enumerate((2, 3, 4)):
        axes[0].bar([x + (i - 1) * width for x in range(len(labels))],
                    [text_rows[s][f"rep-{n}"] for s in labels], width, label=f"rep-{n}")
    axes[0].set_xticks(range(len(labels)), [s.split(" (")[0] for s in labels], rotation=30, ha="right")
    axes[0].set_ylabel("% repeated word n-grams (lower: less repetition)")
    axes[0].legend()
    for s in labels:
        axes[1].scatter(text_rows[s]["diversity"], text_rows[s]["coherence"], s=40)
        axes[1].annotate(s.split(" (")[0], (text_rows[s]["diversity"], text_rows[s]["coherence"]),
                         textcoords="offset points", xytext=(5, 4), fontsize=9)
    axes[1].set_xlabel("diversity (%)")
    axes[1].set_ylabel("coherence: mean log-prob under the same model")
    blabels = list(beam_rows)
    for i, n in enumerate((1, 2, 3)):
        axes[2].bar([x + (i - 1) * width for x in range(len(blabels))],
                    [beam_rows[s][f"distinct-{n}"] for s in blabels], width, label=f"distinct-{n}")
    axes[2].set_xticks(range(len(blabels)), blabels, rotation=10)
    axes[2].set_ylabel("distinct n-grams across the returned sequences")
    axes[2].set_ylim(0, 1)
    axes[2].legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


_MODEL: Any = None


def evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """Run one strategy on every prompt and compute its metrics (in a worker or in-process).

    Parameters
    ----------
    job
        ``label``, ``strategy``, ``options``, ``prompts``, ``new_tokens``, ``batch_size``,
        ``seed``, ``threads`` and ``metrics`` (a subset of ``{"text", "beams"}``).

    Returns
    -------
    dict
        ``label``, ``seconds`` (generation wall time), ``text`` and/or ``beams`` metric rows and
        ``texts`` (per prompt, the returned sequences' texts).
    """
    global _MODEL
    import decodekit

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    if _MODEL is None:
        _MODEL = decodekit.load("default")
    eos = _MODEL.tokenizer.eos_token_id
    gens, seconds = run_strategy(_MODEL, job["prompts"], job["strategy"], job["options"],
                                 job["new_tokens"], job["batch_size"], job["seed"])
    out: dict[str, Any] = {"label": job["label"], "seconds": seconds,
                           "texts": [[s.text for s in g.sequences] for g in gens]}
    if "text" in job["metrics"]:
        out["text"] = text_metrics(_MODEL, gens, eos)
    if "beams" in job["metrics"]:
        out["beams"] = beam_metrics(_MODEL, gens, eos)
    print(f"{job['label']}: {seconds:.0f} s generating", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=52, help="number of prompts (>= 1)")
    parser.add_argument("--prompt-words", type=int, default=24, help="words per prompt")
    parser.add_argument("--min-words", type=int, default=32, help="skip shorter paragraphs")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=26, help="prompts per generate call")
    parser.add_argument("--beams", type=int, default=4, help="width of beam and diverse beam")
    parser.add_argument("--groups", type=int, default=4, help="num_groups of diverse beam")
    parser.add_argument("--diversity-penalty", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: torch's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running strategies in parallel (each loads the model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling runs")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write metrics and texts here")
    args = parser.parse_args()
    if min(args.prompts, args.batch_size, args.new_tokens, args.workers) < 1:
        raise SystemExit("--prompts, --batch-size, --new-tokens and --workers must be >= 1")

    prompts = load_prompts(TEXT, args.prompts, args.prompt_words, args.min_words)
    strategies = dict(STRATEGIES)
    strategies["beam (4)"] = ("beam", {"num_beams": args.beams, "num_return_sequences": args.beams})
    dlabel = f"diverse beam B={args.beams} G={args.groups} l={args.diversity_penalty:g}"
    common = {"prompts": prompts, "new_tokens": args.new_tokens, "batch_size": args.batch_size,
              "seed": args.seed, "threads": args.threads}
    jobs = [{"label": label, "strategy": strategy, "options": options, **common,
             "metrics": {"text", "beams"} if strategy == "beam" else {"text"}}
            for label, (strategy, options) in strategies.items()]
    jobs.append({"label": dlabel, "strategy": "diverse_beam", **common, "metrics": {"beams"},
                 "options": {"num_beams": args.beams, "num_groups": args.groups,
                             "diversity_penalty": args.diversity_penalty,
                             "num_return_sequences": args.beams}})
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        heavy = {"beam", "diverse_beam", "contrastive"}  # the k-row strategies first
        order = sorted(jobs, key=lambda j: j["strategy"] not in heavy)
        with ProcessPoolExecutor(args.workers) as pool:
            done = {r["label"]: r for r in pool.map(evaluate, order)}
        results = [done[j["label"]] for j in jobs]
    else:
        results = [evaluate(job) for job in jobs]
    text_rows = {r["label"]: r["text"] for r in results if "text" in r}
    beam_rows = {(f"beam B={args.beams}" if r["label"] != dlabel else dlabel): r["beams"]
                 for r in results if "beams" in r}
    texts = {r["label"]: r["texts"] for r in results}

    title = (f"default model, {len(prompts)} prompts from {TEXT.name}, up to {args.new_tokens} "
             f"new tokens, seed {args.seed}")
    print(f"\n# {platform.processor() or platform.machine()}, torch {torch.__version__}, {title}\n")
    print(markdown(text_rows, ["rep-2", "rep-3", "rep-4", "diversity", "coherence", "mean length"],
                   "strategy"))
    print()
    print(markdown(beam_rows, ["distinct-1", "distinct-2", "distinct-3", "best log-prob / token",
                               "best log-prob (sum)"], "search"))
    if args.plot:
        plot(args.plot, text_rows, beam_rows, title)
    if args.json:
        args.json.write_text(json.dumps({"prompts": prompts, "metrics": text_rows, "beams": beam_rows,
                                         "texts": texts}, indent=1) + "\n")
    if any(math.isnan(v) for row in text_rows.values() for v in row.values()):
        raise SystemExit("a metric is NaN")


if __name__ == "__main__":
    main()
