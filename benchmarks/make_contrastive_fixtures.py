"""Reference fixtures for contrastive search: transformers' own implementation on a tiny model.

transformers removed contrastive search from its core in 4.56, so the references come from an
environment with transformers 4.52-4.55 (and torch); decodekit is not needed there. Two steps::

    # 1. with decodekit installed: write the tiny model (seeded random Llama) to the fixture folder
    python benchmarks/make_contrastive_fixtures.py model

    # 2. in an environment with transformers<=4.55 and torch only: write references.json
    python -m venv ref && ref/bin/pip install "transformers==4.55.4" torch
    ref/bin/python benchmarks/make_contrastive_fixtures.py references

Step 2 loads the model folder in float32, tokenises a few prompts with the model's
``tokenizer.json`` (the ``tokenizers`` library), and records the new tokens of
``generate(penalty_alpha=alpha, top_k=k, max_new_tokens=N)`` for several ``(alpha, k)``,
each prompt alone and all prompts together in one left-padded batch.

The padding token's input embedding of the tiny model is all zeros (``padding_idx``), so the
final hidden state at padding positions is the zero vector; transformers normalises it into
NaN, which its additive padding mask cannot remove, and every padded row falls back to its
top-1 candidate (greedy). The batched cases are therefore recorded twice: with the model as
saved (``"model": "saved"``, reproducing that behaviour) and with ``PAD_EMBEDDING`` written
into the padding token's embedding row (``"model": "pad_embedding"``), where the mask works.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "contrastive"
MODEL_DIR = FIXTURES / "model"
REFERENCES = FIXTURES / "references.json"

#: prompts (text; the ids come from the model's tokenizer); different lengths, so a batch pads
PROMPTS = [
    "The quick brown fox",
    "def add(a, b):\n",
    "SELECT id, name FROM users WHERE",
    "To be, or not to be, that is",
    "0 1 2",
]
#: (alpha, top_k) pairs: the decodekit default, the paper's range and its code's setting
SETTINGS = [(0.6, 4), (0.4, 3), (0.5, 5), (0.8, 8)]
#: settings also run as one left-padded batch of all prompts
BATCH_SETTINGS = [(0.6, 4), (0.5, 5)]
MAX_NEW_TOKENS = 40
SEED = 0


def pad_embedding(hidden_size: int) -> list[float]:
    """A fixed non-zero embedding for the padding token (float32 values, exact in JSON)."""
    import torch

    return torch.linspace(-0.05, 0.05, hidden_size, dtype=torch.float32).tolist()


def write_model(out: Path) -> None:
    """Save ``decodekit.testing.tiny_llama(SEED)`` and its tokenizer to ``out``."""
    from decodekit.testing import tiny_llama, tiny_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tiny_llama(SEED).save_pretrained(out, safe_serialization=True)
    tiny_tokenizer().save_pretrained(out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KiB)")


def legacy_config(model_dir: Path) -> object:
    """The folder's config for transformers 4.x: transformers 5 writes the RoPE settings as
    ``rope_parameters``, which 4.x does not read (it would fall back to its default theta)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.rope_theta = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config.rope_scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    return config


def write_references(model_dir: Path, out: Path) -> None:
    """Run transformers' contrastive search on every case and save the new tokens as JSON."""
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) > (4, 55):
        raise SystemExit(f"transformers {transformers.__version__} has no built-in contrastive search; "
                         "run this step with transformers<=4.55")
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=legacy_config(model_dir),
                                                 torch_dtype=torch.float32).eval()
    tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pad = int(model.generation_config.pad_token_id)
    prompts = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]

    def run(batch: list[list[int]], alpha: float, k: int) -> list[list[int]]:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, penalty_alpha=alpha, top_k=k,
                                 max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=pad)
        return out[:, width:].tolist()

    cases = []
    for alpha, k in SETTINGS:
        for i, prompt in enumerate(prompts):
            cases.append({"model": "saved", "alpha": alpha, "top_k": k, "prompts": [i],
                          "outputs": run([prompt], alpha, k)})
    index = list(range(len(prompts)))
    for alpha, k in BATCH_SETTINGS:
        cases.append({"model": "saved", "alpha": alpha, "top_k": k, "prompts": index,
                      "outputs": run(prompts, alpha, k)})
    embedding = pad_embedding(model.config.hidden_size)
    with torch.no_grad():
        model.get_input_embeddings().weight[pad] = torch.tensor(embedding, dtype=torch.float32)
    for alpha, k in BATCH_SETTINGS:
        cases.append({"model": "pad_embedding", "alpha": alpha, "top_k": k, "prompts": index,
                      "outputs": run(prompts, alpha, k)})
    data = {
        "generator": "benchmarks/make_contrastive_fixtures.py references",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_id": int(model.generation_config.eos_token_id),
        "pad_token_id": pad,
        "prompt_text": PROMPTS,
        "prompt_ids": prompts,
        "pad_embedding": embedding,
        "cases": cases,
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}: {len(cases)} cases, transformers {transformers.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["model", "references"],
                        help="'model': save the tiny model (needs decodekit); 'references': run "
                             "transformers<=4.55 on it")
    args = parser.parse_args()
    if args.step == "model":
        write_model(MODEL_DIR)
    else:
        write_references(MODEL_DIR, REFERENCES)


if __name__ == "__main__":
    main()
