"""Greedy decoding speed of the backends on the default model: PyTorch vs ONNX Runtime (vs TensorRT).

Loads the default model on each backend (the ONNX export is made once and cached; on a CUDA
machine ``--device cuda`` also builds a TensorRT engine from it), then runs each prompt through
``decodekit.generate(strategy="greedy")`` on every backend, interleaved (A B, A B, ...) so that
machine noise hits all alike, and prints tokens/s (median over repeats) and the ratio to PyTorch.
It checks that all backends produce identical tokens.

Usage::

    python benchmarks/bench_backends.py [--new-tokens 64] [--repeats 5] [--threads 2] [--markdown]
    python benchmarks/bench_backends.py --device cuda      # torch on CUDA, ORT CUDA provider, TensorRT
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import decodekit

PROMPTS = [
    "The history of the printing press begins",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "In a small village at the edge of the forest, there lived",
]


def load_backends(device: str, threads: int | None, engine: Path | None) -> dict[str, Any]:
    """name -> loaded Model, for the device."""
    models: dict[str, Any] = {}
    if device == "cpu":
        models["torch"] = decodekit.load("default", threads=threads)
        models["onnxruntime"] = decodekit.load("default", backend="onnxruntime", threads=threads)
        return models
    models["torch"] = decodekit.load("default", device=device)
    models["onnxruntime-cuda"] = decodekit.load("default", backend="onnxruntime", providers=["cuda"])
    from decodekit.backends.onnxruntime import default_export_dir
    from decodekit.backends.tensorrt import build_engine

    engine = engine or default_export_dir().parent / "default-fp32.engine"
    if not engine.is_file():
        build_engine(default_export_dir(), engine, max_batch=8, max_seq=256, max_past=512)
    models["tensorrt"] = decodekit.load(str(engine), backend="tensorrt", device=device)
    return models


def run_one(model: Any, prompt: str, new_tokens: int) -> tuple[list[int], float]:
    """Token ids and seconds of one greedy generation (EOS ignored: a fixed number of tokens)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    gen = decodekit.generate(prompt, model=model, strategy="greedy", max_new_tokens=new_tokens,
                             processors=[("stop", {"eos": False})])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return list(gen.token_ids), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every backend")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--engine", type=Path, default=None, help="TensorRT engine (cuda; built if absent)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    models = load_backends(args.device, args.threads, args.engine)
    for model in models.values():  # warm-up
        run_one(model, PROMPTS[0], 4)
    per_run: dict[str, list[float]] = {name: [] for name in models}  # tokens/s
    mismatches = 0
    for _ in range(args.repeats):
        for prompt in PROMPTS:
            outputs = {}
            for name, model in models.items():
                ids, seconds = run_one(model, prompt, args.new_tokens)
                outputs[name] = ids
                per_run[name].append(len(ids) / seconds)
            reference = outputs["torch"]
            mismatches += sum(ids != reference for ids in outputs.values())
    rates = {name: statistics.median(values) for name, values in per_run.items()}
    # ratio of each interleaved pair of runs (same prompt, same repeat): robust to load changes
    pairs = {name: [a / b for a, b in zip(values, per_run["torch"])] for name, values in per_run.items()}
    threads = args.threads or torch.get_num_threads()
    where = f"{platform.processor() or platform.machine()}, {threads} threads" if args.device == "cpu" else \
        torch.cuda.get_device_name()
    same = "yes" if not mismatches else f"NO ({mismatches} runs differ)"
    print(f"greedy, default model (float32), {args.new_tokens} new tokens, {len(PROMPTS)} prompts x "
          f"{args.repeats} repeats, {where}; identical tokens: {same}")
    if args.markdown:
        print("\n| backend | tokens/s (median) | vs torch (medians) | vs torch per run: median (min-max) |")
        print("|---|---:|---:|---:|")
        for name, rate in rates.items():
            p = pairs[name]
            print(f"| {name} | {rate:.2f} | {rate / rates['torch']:.2f}x | "
                  f"{statistics.median(p):.2f}x ({min(p):.2f}-{max(p):.2f}) |")
    else:
        for name, rate in rates.items():
            p = pairs[name]
            print(f"{name:>18}: {rate:8.2f} tokens/s  {rate / rates['torch']:.2f}x torch "
                  f"(per run: median {statistics.median(p):.2f}x, {min(p):.2f}-{max(p):.2f})")


if __name__ == "__main__":
    main()
