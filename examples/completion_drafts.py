"""k completion drafts from one decoding run with superposed decoding.

    python examples/completion_drafts.py "def fibonacci(n):" --drafts 3
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser

import decodekit


def drafts(prefix: str, model: Any, k: int = 3, max_new_tokens: int = 24) -> list[str]:
    """``k`` different continuations of ``prefix``, decoded together (one forward pass per step)."""
    g = decodekit.generate(prefix, model=model, strategy="superposed", options={"k": k},
                           max_new_tokens=max_new_tokens)
    return [seq.text for seq in g.sequences]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("prefix", nargs="?", default="def fibonacci(n):")
    p.add_argument("--drafts", type=int, default=3, help="number of drafts (k)")
    p.set_defaults(max_new_tokens=24)
    args = p.parse_args(argv)
    for i, text in enumerate(drafts(args.prefix, load(args.model), args.drafts, args.max_new_tokens), 1):
        print(f"--- draft {i}\n{args.prefix}{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
