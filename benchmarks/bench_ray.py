"""Batch-run throughput: the local engine vs the Ray engine with 1 and 2 model replicas.

Decodes the same prompt set with :func:`decodekit.scale.run` on the default model (greedy, no
EOS stop, so every prompt gets exactly ``--new-tokens`` tokens) three ways: in this process,
and on a local Ray instance (started once, with this machine's cores) with 1 and 2 replicas.
For each it prints prompts/s over the whole run (for Ray: replica start and model loading
included, Ray's own start not), when the first batch was written, and the time spent decoding
(the ``seconds`` of each batch's records, summed: with several replicas it exceeds the wall
time by as much as they ran in parallel), and checks that all runs produced the same tokens.

Usage::

    nice -n 5 python benchmarks/bench_ray.py [--prompts 64] [--new-tokens 32] [--batch-size 8] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOPICS = ["rivers", "bread", "clocks", "bees", "glass", "maps", "salt", "bridges"]
FORMS = ["Write one sentence about {}.", "Name three facts about {}.", "Describe {} to a child.",
         "Why do people care about {}?", "A short poem about {}:", "The history of {} began",
         "List two uses of {}.", "Explain how {} work."]


def make_prompts(count: int) -> list[str]:
    """``count`` short, distinct prompts (topics x forms, cycling)."""
    pairs = [form.format(topic) for form in FORMS for topic in TOPICS]
    return [pairs[i % len(pairs)] + ("" if i < len(pairs) else f" ({i // len(pairs)})") for i in range(count)]


def timed_run(pipeline: Any, prompts: list[str], output: Path, **kwargs: Any) -> dict[str, float]:
    """Run once; wall time, and the time of the first written batch."""
    from decodekit import scale

    marks: list[float] = []
    start = time.perf_counter()
    summary = scale.run(pipeline, prompts, output, progress=lambda n: marks.append(time.perf_counter()),
                        **kwargs)
    end = time.perf_counter()
    print(f"  {kwargs.get('engine', 'local')} x{kwargs.get('replicas', 1)}: {end - start:.1f} s",
          file=sys.stderr, flush=True)
    assert summary.written == len(prompts) and not summary.errors, summary
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    size = pipeline.spec.batch_size
    decode = sum(r["stats"]["seconds"] for r in records if r["index"] % size == 0)  # one per batch
    return {"seconds": end - start, "prompts_per_s": len(prompts) / (end - start),
            "first_batch_s": marks[0] - start, "decode_s": decode}


def tokens(path: Path) -> list[list[int]]:
    return [json.loads(line)["token_ids"] for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the local run and CPUs (threads) per Ray replica "
                             "(default: all cores locally, cores / replicas on Ray)")
    args = parser.parse_args()

    import ray
    import torch

    from decodekit.pipeline import Pipeline

    pipeline = Pipeline.from_dict({"model": "default", "max_new_tokens": args.new_tokens,
                                   "batch_size": args.batch_size,
                                   "processors": [{"name": "stop", "options": {"eos": False}}]})
    prompts = make_prompts(args.prompts)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        pipeline.load()
        load_s = time.perf_counter() - start
        rows.append(("local (model loaded before)", timed_run(pipeline, prompts, folder / "local.jsonl")))
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="WARNING")
        init_s = time.perf_counter() - start
        try:
            for replicas in (1, 2):
                out = folder / f"ray{replicas}.jsonl"
                rows.append((f"ray, {replicas} replica{'s' * (replicas > 1)}",
                             timed_run(pipeline, prompts, out, engine="ray", replicas=replicas,
                                       num_cpus=args.threads)))
                assert tokens(out) == tokens(folder / "local.jsonl"), "Ray and local runs differ"
        finally:
            ray.shutdown()
    print(f"# {args.prompts} prompts, {args.new_tokens} new tokens each, batch_size {args.batch_size}, "
          f"greedy, default model; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads per run/replica: {args.threads or 'default'}")
    print(f"# model load (local): {load_s:.1f} s; ray.init: {init_s:.1f} s; all runs gave the same tokens")
    print("| run | wall s | prompts/s | first batch written after s | decoding s (sum over batches) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {r['prompts_per_s']:.2f} | {r['first_batch_s']:.1f} | "
              f"{r['decode_s']:.1f} |")


if __name__ == "__main__":
    main()
