"""SQL generation constrained by the builtin ``sql`` grammar.

    python examples/sql_generation.py "the names of users older than 30, by name"
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser

import decodekit

SCHEMA = "CREATE TABLE users (id INTEGER, name TEXT, age INTEGER, city TEXT);"


def write_sql(question: str, model: Any, max_new_tokens: int = 96) -> str:
    """A SQL query answering ``question`` over :data:`SCHEMA`; always parses as SQL."""
    prompt = f"{SCHEMA}\nWrite one SQL query for: {question}. Answer with the query only."
    g = decodekit.generate(prompt, model=model, chat=True, grammar="sql", max_new_tokens=max_new_tokens)
    return g.text


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("question", nargs="?", default="the names of users older than 30, by name")
    args = p.parse_args(argv)
    print(write_sql(args.question, load(args.model), args.max_new_tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
