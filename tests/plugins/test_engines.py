"""The optional ``llguidance`` and ``xgrammar`` grammar engines (plugins/*_engine.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import numpy as np
import pytest

import decodekit
from decodekit.errors import MissingDependencyError, OptionsError
from decodekit.grammars import compile as compile_grammar
from decodekit.manager import get_plugin_system
from decodekit.plugins.llguidance_engine import portable_lark, to_llguidance_lark

ENGINES = [
    pytest.param("llguidance", marks=pytest.mark.skipif(
        importlib.util.find_spec("llguidance") is None,
        reason="llguidance is not installed (pip install 'decodekit[llguidance]')")),
    pytest.param("xgrammar", marks=pytest.mark.skipif(
        importlib.util.find_spec("xgrammar") is None,
        reason="xgrammar is not installed (pip install 'decodekit[xgrammar]'; it pulls in torch "
               "and triton, so the dev extra leaves it out)")),
]

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
          "required": ["name", "ok"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tok() -> Any:
    from decodekit.testing import tiny_tokenizer

    return tiny_tokenizer()


def _ids(tok: Any, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_engines_are_registered() -> None:
    names = get_plugin_system().registry.names("grammar_engine")
    assert {"lark", "llguidance", "xgrammar"} <= set(names)


@pytest.mark.parametrize("engine", ENGINES)
def test_matcher_lifecycle(tok: Any, engine: str) -> None:
    g = compile_grammar("json", tok, engine=engine)
    m = g.matcher()
    mask = m.mask()
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (len(tok),)
    assert not mask[tok.eos_token_id] and not m.is_complete()
    ids = _ids(tok, '{"a": [1, true]}')
    for t in ids:
        assert m.mask()[t]
        assert m.accept(t)
    assert m.position == len(ids) and m.is_complete() and m.mask()[tok.eos_token_id]
    closing = _ids(tok, "}")[0]
    assert not m.mask()[closing] and not m.accept(closing)  # refused, state unchanged
    assert m.position == len(ids) and m.is_complete()
    other = m.fork()
    assert other.accept(tok.eos_token_id) and other.is_complete()
    assert np.flatnonzero(other.mask()).tolist() == [tok.eos_token_id]
    assert not other.accept(ids[0])
    other.rollback(2)  # the EOS and the last "}"
    assert other.position == len(ids) - 1 and not other.is_complete()
    assert m.position == len(ids)  # the fork is independent
    m.rollback(len(ids))
    assert m.position == 0 and np.array_equal(m.mask(), g.matcher().mask())
    with pytest.raises(decodekit.grammars.GrammarError, match="cannot roll back"):
        m.rollback(1)
    assert m.accept_tokens(ids + ids) == len(ids)


@pytest.mark.parametrize("engine", ENGINES)
def test_masks_equal_the_lark_engine(tok: Any, engine: str) -> None:
    lark, other = compile_grammar("json", tok), compile_grammar("json", tok, engine=engine)
    a, b = lark.matcher(), other.matcher()
    for t in _ids(tok, '  {"key": [-1.5e3, "x\\n", null]}  '):
        assert np.array_equal(a.mask(), b.mask())
        assert a.accept(t) and b.accept(t)
    assert np.array_equal(a.mask(), b.mask()) and b.is_complete()


@pytest.mark.parametrize("engine", ENGINES)
def test_json_schema_and_forced_tokens(tok: Any, engine: str) -> None:
    g = compile_grammar(SCHEMA, tok, engine=engine)
    m = g.matcher()
    forced = m.forced_tokens()
    assert forced and tok.decode(forced) in '{"name": "'
    head = _ids(tok, '{"name": "x"')
    assert m.accept_tokens(head) == len(head)
    mid = m.forced_tokens()
    assert mid and tok.decode(mid) in ', "ok": '
    rest = _ids(tok, ', "ok": true}')
    assert m.accept_tokens(rest) == len(rest) and m.is_complete()
    assert m.forced_tokens() == []
    bad = g.matcher()
    text = '{"name": "x", "ok": 1}'
    assert bad.accept_tokens(_ids(tok, text)) < len(_ids(tok, text))
    # the same schema as JSON text, and compact whitespace by default
    m2 = compile_grammar(json.dumps(SCHEMA), tok, engine=engine).matcher()
    spaced = '{"name" : "x", "ok": true}'
    assert m2.accept_tokens(_ids(tok, spaced)) < len(_ids(tok, spaced))


@pytest.mark.parametrize("engine", ENGINES)
def test_lark_text_with_start_rule_and_priorities(tok: Any, engine: str) -> None:
    text = 'pair: WORD "=" NUM\nWORD.2: /[a-z]+/\nNUM: /[0-9]+/\n%ignore " "\n'
    g = compile_grammar(text, tok, engine=engine, start="pair")
    m = g.matcher()
    ids = _ids(tok, " ab = 12 ")
    assert m.accept_tokens(ids) == len(ids) and m.is_complete()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_processor_engine_option(engine: str, strategy: str) -> None:
    from decodekit.testing import tiny_model

    model = tiny_model(0)
    schema = {"enum": ["yes", "no", "maybe"]}
    outs = {}
    for name in ("lark", engine):
        gen = decodekit.generate("Answer:", model=model, strategy=strategy, seed=3, max_new_tokens=12,
                                 processors=[("grammar", {"grammar": schema, "engine": name})])
        outs[name] = gen.text
        assert gen.text in ('"yes"', '"no"', '"maybe"'), gen.text
    assert outs["lark"] == outs[engine]  # equal masks, equal choices


@pytest.mark.parametrize("engine,package", [("llguidance", "llguidance"), ("xgrammar", "xgrammar")])
def test_missing_package_names_the_extra(tok: Any, monkeypatch: pytest.MonkeyPatch, engine: str,
                                         package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes "import <package>" fail
    with pytest.raises(MissingDependencyError, match=rf"decodekit\[{engine}\]"):
        compile_grammar("json", tok, engine=engine)


def test_bad_options_are_named(tok: Any) -> None:
    pytest.importorskip("llguidance")
    with pytest.raises(OptionsError, match="schema_frontend"):
        compile_grammar(SCHEMA, tok, engine="llguidance", schema_frontend="nope")
    with pytest.raises(OptionsError, match="whitespace"):
        compile_grammar(SCHEMA, tok, engine="llguidance", schema_options={"whitespace": "wide"})
    with pytest.raises(decodekit.grammars.GrammarError, match="start"):
        compile_grammar('start: "a"\nb: "b"\n', tok, engine="llguidance", start="b")


def test_lark_rewrites() -> None:
    text = "start: A B\nA.2: /a+/\nB: \"b\"\n%ignore WS\nWS: /[ ]+/\n"
    out = portable_lark(text)
    assert "A.2" not in out and "A: /a+/" in out
    assert "dk_start: A B" in out and "start: [dk_ignored] dk_start [dk_ignored]" in out
    assert "dk_ignored: (WS)+" in out
    assert portable_lark('start: "a"\n') == 'start: "a"\n'
    assert portable_lark('x: "a"\n', start="x").endswith("start: x\n")
    assert to_llguidance_lark('start: "a"\n').startswith('%llguidance {"no_forcing": true}')
