"""Reference fixtures for the ``diverse_beam`` strategy, from transformers' group beam search.

transformers up to 4.55 implements diverse ("group") beam search in ``generate(num_beams=B,
num_beam_groups=G, diversity_penalty=l)``; later releases dropped it. This script records its
outputs on a tiny model with fixed weights so that the tests can check decodekit's
``diverse_beam`` against them without that old release installed.

Two steps, each run once by hand:

1. ``python benchmarks/make_diverse_beam_fixtures.py model`` (with decodekit installed) writes
   the model directory ``tests/fixtures/diverse_beam/model``: the seeded tiny Llama of
   :mod:`decodekit.testing` and its tokenizer, with the EOS row of the output head replaced by
   1.05 times the row of a frequent token, so that some beams end with EOS early and the
   finished-hypotheses bookkeeping is exercised.
2. ``<python with transformers<=4.55> benchmarks/make_diverse_beam_fixtures.py fixtures`` runs
   group beam search in that environment (only ``torch`` and ``transformers`` are imported) and
   writes ``tests/fixtures/diverse_beam/reference.json``.

The JSON holds, per case, the prompts' token ids, the settings and, per prompt, the returned
sequences (generated token ids, up to and including EOS) with their scores. Cases cover several
(num_beams, num_groups, diversity_penalty, length_penalty, early_stopping,
num_return_sequences), 16-32 new tokens, a left-padded batch and a case with a repetition
penalty and an n-gram block (applied after the diversity penalty, as transformers orders them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "diverse_beam"
MODEL_DIR = FIXTURES / "model"
REFERENCE = FIXTURES / "reference.json"

#: Prompts drawn from the tiny tokenizer's training corpus.
PROMPTS = ["The quick brown", "def add(a, b):\n", "SELECT id", "0 1 2", "To be, or", "A journey of"]

#: (name, settings, prompt indices, batched). ``batched`` runs the prompts as one left-padded batch.
CASES: list[tuple[str, dict, list[int], bool]] = [
    ("b4_g2", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.5, "max_new_tokens": 24},
     [0, 1, 2, 3, 4, 5], False),
    ("b4_g4_all", {"num_beams": 4, "num_groups": 4, "diversity_penalty": 1.0,
                   "num_return_sequences": 4, "max_new_tokens": 24}, [0, 1, 2, 3, 4, 5], False),
    ("b6_g3", {"num_beams": 6, "num_groups": 3, "diversity_penalty": 0.7,
               "num_return_sequences": 3, "max_new_tokens": 20}, [0, 1, 2, 4], False),
    ("b8_g4_long", {"num_beams": 8, "num_groups": 4, "diversity_penalty": 0.3,
                    "num_return_sequences": 4, "max_new_tokens": 32}, [1, 2, 5], False),
    ("lp2_early", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.5, "length_penalty": 2.0,
                   "early_stopping": True, "num_return_sequences": 2, "max_new_tokens": 24},
     [0, 1, 2, 3], False),
    ("lp_neg_never", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 1.5,
                      "length_penalty": -0.5, "early_stopping": "never",
                      "num_return_sequences": 2, "max_new_tokens": 16}, [1, 2, 4], False),
    ("never_lp1", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.6,
                   "early_stopping": "never", "num_return_sequences": 4, "max_new_tokens": 20},
     [1, 2, 4, 5], False),
    ("lp0", {"num_beams": 6, "num_groups": 2, "diversity_penalty": 0.4, "length_penalty": 0.0,
             "num_return_sequences": 6, "max_new_tokens": 20}, [1, 2], False),
    ("huge_penalty", {"num_beams": 3, "num_groups": 3, "diversity_penalty": 100.0,
                      "num_return_sequences": 3, "max_new_tokens": 24}, [0, 3], False),
    ("batch_padded", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.8,
                      "num_return_sequences": 2, "max_new_tokens": 24}, [0, 1, 2, 3, 4, 5], True),
    ("batch_padded_g4", {"num_beams": 4, "num_groups": 4, "diversity_penalty": 0.5,
                         "num_return_sequences": 3, "max_new_tokens": 16}, [1, 5, 2], True),
    ("processors", {"num_beams": 4, "num_groups": 2, "diversity_penalty": 0.5,
                    "num_return_sequences": 2, "max_new_tokens": 24,
                    "repetition_penalty": 1.3, "no_repeat_ngram_size": 3}, [0, 3, 4], False),
]

EOS_ALIAS, EOS_SCALE, MODEL_SEED = 142, 1.05, 0


def write_model() -> None:
    """Save the seeded tiny Llama (EOS-prone head) and its tokenizer (needs decodekit)."""
    import torch

    from decodekit.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(MODEL_SEED)
    with torch.no_grad():
        model.lm_head.weight[0] = model.lm_head.weight[EOS_ALIAS] * EOS_SCALE
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(MODEL_DIR)
    tiny_tokenizer().save_pretrained(MODEL_DIR)
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    print(f"wrote {MODEL_DIR.relative_to(ROOT)} ({size / 1e6:.2f} MB)")


def _generated(seq: list[int], width: int, eos: int) -> list[int]:
    """Generated ids after the padded prompt block, up to and including the first EOS."""
    out = seq[width:]
    return out[:out.index(eos) + 1] if eos in out else out


def run_case(model, prompts: list[list[int]], settings: dict, batched: bool) -> list[list[dict]]:
    """transformers group beam search; per prompt, its returned sequences and scores."""
    import torch

    opts = dict(settings)
    kwargs = {
        "max_new_tokens": opts.pop("max_new_tokens"),
        "num_beams": opts.pop("num_beams"),
        "num_beam_groups": opts.pop("num_groups"),
        "diversity_penalty": opts.pop("diversity_penalty"),
        "length_penalty": opts.pop("length_penalty", 1.0),
        "early_stopping": opts.pop("early_stopping", False),
        "num_return_sequences": opts.pop("num_return_sequences", 1),
        "repetition_penalty": opts.pop("repetition_penalty", None),
        "no_repeat_ngram_size": opts.pop("no_repeat_ngram_size", None),
    }
    assert not opts, opts
    n = kwargs["num_return_sequences"]
    groups = [prompts] if batched else [[p] for p in prompts]
    results = []
    for batch in groups:
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, p in enumerate(batch):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=0, eos_token_id=0,
                                 **kwargs)
        seqs = out.sequences.tolist()
        scores = out.sequences_scores.tolist()
        for i in range(len(batch)):
            results.append([{"token_ids": _generated(seqs[i * n + j], width, 0),
                             "score": scores[i * n + j]} for j in range(n)])
    return results


def write_fixtures() -> None:
    """Run every case with transformers' group beam search and write the JSON fixtures."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if (major, minor) > (4, 55):
        sys.exit(f"transformers {transformers.__version__} has no group beam search in generate(); "
                 "run this step with transformers <= 4.55")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, torch_dtype=torch.float32).eval()
    # the tokenizer config names a class of later releases: read the tokenizer file itself
    tok = PreTrainedTokenizerFast(tokenizer_file=str(MODEL_DIR / "tokenizer.json"))
    prompt_ids = [tok.encode(p, add_special_tokens=False) for p in PROMPTS]
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([prompt_ids[0]])).logits[0, -1], dim=-1)
    top = torch.topk(first, 10)
    cases = []
    for name, settings, which, batched in CASES:
        prompts = [prompt_ids[i] for i in which]
        outputs = run_case(model, prompts, settings, batched)
        cases.append({"name": name, "settings": settings, "batched": batched, "prompts": prompts,
                      "outputs": outputs})
        print(f"{name}: {sum(len(o) for o in outputs)} sequences", flush=True)
    data = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "model": str(MODEL_DIR.relative_to(ROOT)),
        "first_step": {"prompt": prompt_ids[0], "top_ids": top.indices.tolist(),
                       "top_logprobs": top.values.tolist()},
        "cases": cases,
    }
    REFERENCE.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["model", "fixtures"],
                        help="'model': save the tiny model (needs decodekit); 'fixtures': run "
                             "transformers <= 4.55 group beam search and write the JSON")
    args = parser.parse_args()
    write_model() if args.step == "model" else write_fixtures()


if __name__ == "__main__":
    main()
