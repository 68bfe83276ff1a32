"""Several different JSON candidates: diverse beam search constrained by a JSON Schema.

    python examples/diverse_json.py "a product for a small bakery" --candidates 4
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser

import decodekit

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "price": {"type": "integer", "minimum": 0, "maximum": 1000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "price", "tags"],
    "additionalProperties": False,
}


def candidates(topic: str, model: Any, n: int = 4, max_new_tokens: int = 96) -> list[dict[str, Any]]:
    """``n`` schema-valid JSON objects about ``topic`` from ``n`` diverse beam groups."""
    prompt = f"Describe {topic} as a JSON object with a name, a price and tags."
    g = decodekit.generate(prompt, model=model, chat=True, grammar=SCHEMA, strategy="diverse_beam",
                           options={"num_beams": 2 * n, "num_groups": n, "diversity_penalty": 1.0,
                                    "num_return_sequences": n},
                           max_new_tokens=max_new_tokens)
    return [json.loads(seq.text) for seq in g.sequences]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("topic", nargs="?", default="a product for a small bakery")
    p.add_argument("--candidates", type=int, default=4, help="number of JSON objects")
    args = p.parse_args(argv)
    for obj in candidates(args.topic, load(args.model), args.candidates, args.max_new_tokens):
        print(json.dumps(obj))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
