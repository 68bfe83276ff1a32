"""Differential test: the lark engine's masks against llguidance's on the same grammars.

Both engines get the same lark text (JSON Schemas go through decodekit's converter first, so
the two engines see one language and only their token handling differs). Prefixes come from
valid documents, tokenised, and from seeded random walks that pick among the tokens the lark
engine allows; at every prefix the two masks must be equal, and both engines must accept or
refuse each walked token alike.

Normalisations (all inside the ``llguidance`` engine plugin, none here): EOS ids are allowed
exactly when the text is complete in both engines; llguidance's ``no_forcing`` option is on
(otherwise it narrows a mask to the canonical tokens of forced text); ``%ignore``'d text is
allowed before the first and after the last token, as lark does. The ``sql`` grammar is not
compared: lark's lexer breaks keyword/identifier ties by priority (``FROM`` is a keyword),
while llguidance's parser keeps both readings, so its language is larger there.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llguidance", reason="llguidance is not installed (pip install 'decodekit[llguidance]')")

from decodekit.grammars import compile as compile_grammar  # noqa: E402
from decodekit.grammars.jsonschema import schema_to_lark  # noqa: E402
from decodekit.plugins.llguidance_engine import LLGuidanceEngine  # noqa: E402

#: a grammar with ``%ignore`` (whitespace and comments) whose tokens span several terminals
ASSIGNMENTS = r"""
start: stmt+
stmt: NAME "=" expr ";"
?expr: term (OP term)*
?term: NAME | NUMBER | "(" expr ")"
OP: "+" | "-" | "*"
NAME: /[a-z_][a-z0-9_]*/
NUMBER: /[0-9]+(\.[0-9]+)?/
COMMENT: /#[^\n]*/
%ignore /[ \t\n]+/
%ignore COMMENT
"""

ASSIGNMENT_DOCS = ["x = 1;\ny=x+2 ; # two\nz = (x-y)*3.5;", "a=b;b=a;", "  total_2=(1+2)*(3-4) ;  # end"]

SCHEMAS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "person": ({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age"], "additionalProperties": False},
        ['{"name": "Ann", "age": 31}', '{"name": "Bo \\"B\\"", "age": 0, "email": "b@x.org", "tags": ["a", "b"]}']),
    "choice": ({"anyOf": [{"type": "number", "maximum": 10}, {"enum": ["red", "green", None]},
                          {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3}]},
               ['2.5e0', '"green"', 'null', '[true, false]', '-7']),
    "nested": ({"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"},
                                                 "when": {"type": "string", "format": "date"},
                                                 "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
                "required": ["id"], "$defs": {"item": {"type": "object", "properties": {
                    "sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku"]}}},
               ['{"id": "AB-12", "when": "2024-02-29", "items": [{"sku": "x", "qty": 2}, {"sku": "y"}]}']),
}

JSON_DOCS = [
    '{"name": "decodekit", "version": 1, "tags": ["a", "b"], "ok": true, "none": null}',
    '[1, -2.5e3, 0.25, {"nested": {"deep": [[], {}]}}, "esc\\"aped \\\\ \\u00e9", false]',
    '\n  {"k" :\t"v"}  ',
]


def _grammar_cases() -> list[tuple[str, str, list[str]]]:
    cases = [("json", "json", JSON_DOCS), ("assignments", ASSIGNMENTS, ASSIGNMENT_DOCS)]
    for name, (schema, docs) in SCHEMAS.items():
        cases.append((f"schema:{name}", schema_to_lark(schema), docs))
    return cases


CASES = _grammar_cases()


def _describe(tok: Any, ids: list[int]) -> list[str]:
    return [repr(tok.convert_ids_to_tokens(int(i))) for i in ids[:6]]


def compare(tok: Any, text: str, docs: list[str], walks: int, steps: int, seed: int,
            other: Any = None) -> tuple[int, list[str]]:
    """Walk both engines over the documents' prefixes and random walks; return the number of
    masks compared and a description of every disagreement. ``other`` replaces llguidance's
    compiled grammar."""
    lark = compile_grammar(text, tok)
    other = other or LLGuidanceEngine().compile(text, tok)
    assert lark.vocab_size == other.vocab_size
    eos = np.array(sorted(lark.eos_set), dtype=np.int64)
    problems: list[str] = []
    compared = 0

    def check(a: Any, b: Any, prefix: list[int]) -> np.ndarray:
        nonlocal compared
        x, y = a.mask(), b.mask()
        compared += 1
        if not np.array_equal(x, y):
            diff = np.nonzero(x != y)[0]
            problems.append(f"after {tok.decode(prefix)!r}: only lark allows {_describe(tok, diff[x[diff]])}, "
                            f"only llguidance allows {_describe(tok, diff[y[diff]])}")
        if a.is_complete() != b.is_complete():
            problems.append(f"after {tok.decode(prefix)!r}: is_complete differs")
        return x

    for doc in docs:
        ids = tok.encode(doc, add_special_tokens=False)
        a, b = lark.matcher(), other.matcher()
        for n, token in enumerate(ids):
            check(a, b, ids[:n])
            assert a.accept(token) and b.accept(token), f"{doc!r}: token {n} refused"
        check(a, b, ids)
        assert a.is_complete() and b.is_complete(), f"{doc!r} is not complete"
    rng = random.Random(seed)
    for _ in range(walks):
        a, b = lark.matcher(), other.matcher()
        prefix: list[int] = []
        for _ in range(steps):
            allowed = check(a, b, prefix).copy()
            allowed[eos] = False
            choices = np.flatnonzero(allowed)
            if not len(choices):
                break
            token = int(choices[rng.randrange(len(choices))])
            prefix.append(token)
            ok_a, ok_b = a.accept(token), b.accept(token)
            if ok_a != ok_b or not ok_a:
                problems.append(f"after {tok.decode(prefix[:-1])!r}: accept({token}) lark={ok_a} llguidance={ok_b}")
                break
    return compared, problems


@pytest.mark.parametrize("name,text,docs", CASES, ids=[c[0] for c in CASES])
def test_masks_agree_tiny_tokenizer(tiny_tok: Any, name: str, text: str, docs: list[str]) -> None:
    compared, problems = compare(tiny_tok, text, docs, walks=40, steps=40, seed=0)
    assert compared > 400
    assert not problems, f"{name}: {len(problems)} of {compared} masks differ:\n" + "\n".join(problems[:10])


@pytest.mark.parametrize("name", ["arithmetic", "csv", "sexpr"])
def test_library_grammars_agree_tiny_tokenizer(tiny_tok: Any, samples: dict[str, list[str]], name: str) -> None:
    compared, problems = compare(tiny_tok, name, samples[name], walks=20, steps=40, seed=1)
    assert not problems, f"{name}: {len(problems)} of {compared} masks differ:\n" + "\n".join(problems[:10])


@pytest.mark.e2e
@pytest.mark.parametrize("name,text,docs", CASES, ids=[c[0] for c in CASES])
def test_masks_agree_default_tokenizer(default_tok: Any, name: str, text: str, docs: list[str]) -> None:
    compared, problems = compare(default_tok, text, docs, walks=8, steps=30, seed=2)
    assert not problems, f"{name}: {len(problems)} of {compared} masks differ:\n" + "\n".join(problems[:10])


def test_compare_reports_a_boundary_bug(tiny_tok: Any) -> None:
    """A second engine that refuses one token the first allows after each quote is caught."""
    lark = compile_grammar("json", tiny_tok)
    quote = tiny_tok.convert_tokens_to_ids('"')

    class Broken:
        vocab_size = lark.vocab_size

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def matcher(self) -> Broken:
            return Broken(lark.matcher())

        def mask(self) -> np.ndarray:
            out = self.inner.mask().copy()
            out[quote] = False
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    compared, problems = compare(tiny_tok, "json", ['{"a": 1}'], walks=0, steps=0, seed=0,
                                 other=Broken(None))
    assert problems and "only lark allows" in problems[0]
