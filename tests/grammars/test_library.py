"""The grammar library: names, resolution of user grammars, agreement with lark's parser."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from decodekit.grammars import GrammarError, compile, library_names
from decodekit.grammars.library import get, names, resolve


def test_library_names() -> None:
    assert names() == ["arithmetic", "csv", "json", "sexpr", "sql"] == library_names()
    for name in names():
        grammar = get(name)
        assert grammar.description and "start" in grammar.text


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(GrammarError, match="builtin grammars: arithmetic, csv, json, sexpr, sql"):
        get("yaml")
    with pytest.raises(GrammarError, match="neither a builtin grammar"):
        resolve("yaml")


def test_resolve_kinds(tmp_path: Path) -> None:
    path = tmp_path / "g.lark"
    path.write_text('start: "a"+\n')
    assert resolve(path).text == 'start: "a"+\n'
    assert resolve(str(path)).text == 'start: "a"+\n'
    assert resolve("json").origin == "builtin grammar 'json'"
    assert resolve('start: "x"').origin == "lark text"
    with pytest.raises(GrammarError, match="not found"):
        resolve(str(tmp_path / "missing.lark"))
    with pytest.raises(GrammarError, match="cannot use a int"):
        resolve(3)
    with pytest.raises(GrammarError, match="empty"):
        resolve("  ")


def _mutate(rng: random.Random, text: str, alphabet: list[str]) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.4 and text:
            text = text[:i] + text[i + 1:]
        elif op < 0.8:
            text = text[:i] + rng.choice(alphabet) + text[i:]
        else:
            text = text[:i] + rng.choice(alphabet) + text[i + 1:]
    return text


@pytest.mark.parametrize("name", names())
def test_accepts_exactly_what_lark_parses(name: str, tiny_tok: Any, samples: dict[str, list[str]]) -> None:
    """Edited sample documents: the engine accepts a text iff lark's own LALR parser does."""
    import lark

    parser = lark.Lark(get(name).text, parser="lalr")
    compiled = compile(name, tiny_tok)
    docs = samples[name]
    for doc in docs:
        parser.parse(doc)
        assert compiled.matches(doc), doc
    rng = random.Random(11)
    alphabet = sorted(set("".join(docs)))
    accepted = 0
    for _ in range(400):
        text = _mutate(rng, rng.choice(docs), alphabet)
        try:
            parser.parse(text)
            by_lark = True
        except lark.exceptions.LarkError:
            by_lark = False
        assert compiled.matches(text) == by_lark, text
        accepted += by_lark
    assert 0 < accepted < 400


@pytest.mark.parametrize("name", names())
def test_random_walks_end_in_lark_parseable_text(name: str, tiny_tok: Any) -> None:
    import lark

    parser = lark.Lark(get(name).text, parser="lalr")
    compiled = compile(name, tiny_tok)
    rng = random.Random(5)
    finished = 0
    for _ in range(30):
        m = compiled.matcher()
        tokens: list[int] = []
        for _ in range(40):
            allowed = m.allowed_tokens().tolist()
            if m.is_complete() and (rng.random() < 0.3 or allowed == [0]):
                break
            tokens.append(rng.choice([t for t in allowed if t != 0]))
            assert m.accept(tokens[-1])
        if m.is_complete():
            parser.parse(tiny_tok.decode(tokens))
            finished += 1
    assert finished >= 5
