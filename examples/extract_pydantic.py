"""Structured extraction: a pydantic model is the grammar, and the output parses back into it.

    python examples/extract_pydantic.py "Ada Lovelace was born in London in 1815."
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser

import decodekit

T = TypeVar("T", bound=BaseModel)


class Person(BaseModel):
    """What to extract from a sentence about a person."""

    model_config = ConfigDict(extra="forbid")  # no other keys: the grammar closes the object

    name: str = Field(max_length=40)
    birth_year: int = Field(ge=0, le=2100)
    city: str = Field(max_length=30)


def extract(text: str, model: Any, max_new_tokens: int = 96, schema: type[T] = Person) -> T:  # type: ignore[assignment]
    """Extract a ``schema`` instance (default :class:`Person`) from ``text``.

    The grammar makes every token keep the output valid for the schema; the only way to get
    invalid JSON is to hit ``max_new_tokens`` first, which raises a clear error.
    """
    fields = ", ".join(schema.model_fields)
    prompt = f"Extract the person's {fields} from the text as JSON.\nText: {text}"
    g = decodekit.generate(prompt, model=model, chat=True, grammar=schema,
                           max_new_tokens=max_new_tokens)
    if g.finish_reason in ("length", "incomplete"):
        raise SystemExit(f"the JSON was cut at {max_new_tokens} tokens: {g.text!r}; "
                         f"raise --max-new-tokens")
    return schema.model_validate_json(g.text)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("text", nargs="?", default="Ada Lovelace was born in London in 1815.")
    args = p.parse_args(argv)
    person = extract(args.text, load(args.model), args.max_new_tokens)
    print(person.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
