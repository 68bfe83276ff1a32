"""Search-strategy speed: greedy vs contrastive search vs momentum decoding, per new token.

Runs, in one process on the default model, each prompt through decodekit's ``greedy``,
``contrastive`` (``top_k=4``, ``alpha=0.6``) and ``momentum`` (defaults) strategies,
interleaved (A B C, B C A, C A B, ...: the order rotates every repeat) so that machine noise
hits all three alike, and prints the time per new token (median over repeats; the prefill is
included), its ratio to greedy's median, and the median over repeats of the ratio to greedy
within each repeat (less sensitive to load that changes between repeats). Every run generates
exactly ``--new-tokens`` tokens (``min_new_tokens`` holds EOS back).

With ``--reference-python PATH`` (a Python with torch and transformers<=4.55), each repeat
also runs transformers' own contrastive search (``generate(penalty_alpha=0.6, top_k=4)``)
and its greedy ``generate`` on the same model folder, token ids and settings, in a separate
process started with that interpreter; it reports the time of each ``generate`` call, so its
model loading is not counted. The script checks that decodekit's tokens equal transformers'.

Usage::

    python benchmarks/bench_search.py [--new-tokens 128] [--repeats 3] [--markdown]
        [--reference-python ref/bin/python] [--linear auto|onednn|aten]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]
TOP_K = 4
ALPHA = 0.6
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "greedy": ("greedy", {}),
    "contrastive": ("contrastive", {"top_k": TOP_K, "alpha": ALPHA}),
    "momentum": ("momentum", {}),
}


# -- the reference worker: runs under the other interpreter, torch and transformers only ---------

def reference_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time transformers' greedy and contrastive ``generate`` on ``spec``'s prompts."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    folder = spec["model_dir"]
    config = AutoConfig.from_pretrained(folder)
    rope = getattr(config, "rope_parameters", None)  # written by transformers 5; 4.x reads rope_theta
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.rope_theta = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config.rope_scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, torch_dtype=torch.float32).eval()
    n = spec["new_tokens"]
    modes = {"greedy": {}, "contrastive": {"penalty_alpha": spec["alpha"], "top_k": spec["top_k"]}}
    times = {mode: 0.0 for mode in modes}
    tokens: dict[str, list[list[int]]] = {mode: [] for mode in modes}
    with torch.inference_mode():
        warm = torch.tensor([spec["prompts"][0]])
        for kwargs in modes.values():
            model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=4,
                           do_sample=False, **kwargs)
        for ids in spec["prompts"]:
            x = torch.tensor([ids])
            for mode, kwargs in modes.items():
                t = time.perf_counter()
                out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                     min_new_tokens=n, do_sample=False, **kwargs)
                times[mode] += time.perf_counter() - t
                tokens[mode].append(out[0, x.shape[1]:].tolist())
    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "seconds": times, "tokens": tokens}


def run_reference(python: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`reference_worker` under ``python``; returns its result."""
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--worker"], input=json.dumps(spec),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed ({python}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--reference-python", default=None,
                        help="a Python with torch and transformers<=4.55 for the side-by-side run")
    parser.add_argument("--linear", default="auto", choices=["auto", "onednn", "aten"],
                        help="the torch backend's linear kernel for multi-row steps (default: auto)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(reference_worker(json.loads(sys.stdin.read()))))
        return

    import torch

    import decodekit
    from decodekit import default_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = decodekit.load("default", linear=args.linear)
    tok = model.tokenizer
    n = args.new_tokens
    prompts = [tok.encode(p, add_special_tokens=False) for p in PROMPTS]
    processors = [("min_new_tokens", {"count": n})]
    spec = {"model_dir": str(default_model.ensure_converted(verbose=False)), "prompts": prompts,
            "new_tokens": n, "top_k": TOP_K, "alpha": ALPHA, "threads": args.threads}

    per_token: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    outputs: dict[str, list[list[int]]] = {name: [] for name in STRATEGIES}
    reference: dict[str, list[float]] = {"greedy": [], "contrastive": []}
    ref_info: dict[str, Any] = {}
    for strategy, options in STRATEGIES.values():  # warm-up
        model.generate(prompts[0], strategy=strategy, options=options, max_new_tokens=4)
    for rep in range(args.repeats):
        spent = {name: 0.0 for name in STRATEGIES}
        names = list(STRATEGIES)
        order = names[rep % len(names):] + names[:rep % len(names)]
        for ids in prompts:
            for name in order:
                strategy, options = STRATEGIES[name]
                t = time.perf_counter()
                g = model.generate(ids, strategy=strategy, options=options, max_new_tokens=n,
                                   processors=processors)
                spent[name] += time.perf_counter() - t
                assert len(g.token_ids) == n, (name, len(g.token_ids))
                if rep == 0:
                    outputs[name].append(g.token_ids)
        for name in STRATEGIES:
            per_token[name].append(spent[name] / (n * len(prompts)))
        if args.reference_python:
            ref_info = run_reference(args.reference_python, spec)
            for mode, seconds in ref_info["seconds"].items():
                reference[mode].append(seconds / (n * len(prompts)))

    med = {name: statistics.median(v) for name, v in per_token.items()}

    def paired(times: list[float], base: list[float]) -> float:
        """Median over repeats of the ratio within each repeat."""
        return statistics.median(t / b for t, b in zip(times, base))

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default model, {len(prompts)} prompts x {n} new tokens, "
          f"median of {args.repeats}, linear kernel {args.linear!r} "
          f"({'oneDNN packed' if model.backend.packed is not None else 'torch default'})")
    greedy = per_token["greedy"]
    table = [(f"decodekit {name}", med[name], med[name] / med["greedy"], paired(per_token[name], greedy))
             for name in STRATEGIES]
    if reference["contrastive"]:
        ref_med = {mode: statistics.median(v) for mode, v in reference.items()}
        version = ref_info["transformers"]
        for mode in ("greedy", "contrastive"):
            table.append((f"transformers {version} {mode} (other process)", ref_med[mode],
                          ref_med[mode] / med["greedy"], paired(reference[mode], greedy)))
    if args.markdown:
        print("| implementation | ms / token | vs decodekit greedy | same, per repeat (median) |")
        print("|---|---:|---:|---:|")
        for label, seconds, ratio, per_rep in table:
            print(f"| {label} | {seconds * 1e3:.2f} | {ratio:.3f}x | {per_rep:.3f}x |")
    else:
        print(f"{'implementation':<52}{'ms/token':>10}{'vs greedy':>11}{'per repeat':>12}")
        for label, seconds, ratio, per_rep in table:
            print(f"{label:<52}{seconds * 1e3:>10.2f}{ratio:>10.3f}x{per_rep:>11.3f}x")
    if reference["contrastive"]:
        ref_med = {mode: statistics.median(v) for mode, v in reference.items()}
        print(f"transformers in its own process: contrastive / greedy = "
              f"{ref_med['contrastive'] / ref_med['greedy']:.3f}x (per repeat, median "
              f"{paired(reference['contrastive'], reference['greedy']):.3f}x); transformers' "
              f"contrastive time / decodekit's = {ref_med['contrastive'] / med['contrastive']:.3f}x "
              f"(per repeat, median {paired(reference['contrastive'], per_token['contrastive']):.3f}x; "
              f"{ref_info['threads']} threads there)")
        print(f"identical tokens: contrastive == transformers: "
              f"{outputs['contrastive'] == ref_info['tokens']['contrastive']}; "
              f"greedy == transformers: {outputs['greedy'] == ref_info['tokens']['greedy']}")
    print("all runs (ms/token):", {k: [round(x * 1e3, 2) for x in v] for k, v in per_token.items()},
          {f"transformers {k}": [round(x * 1e3, 2) for x in v] for k, v in reference.items() if v})


if __name__ == "__main__":
    main()
