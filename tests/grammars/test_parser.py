"""lark grammars to LALR tables: errors, interned stacks, truncated stacks."""

from __future__ import annotations

import pytest

from decodekit.grammars.errors import GrammarNotLALRError, GrammarSyntaxError
from decodekit.grammars.parser import StackStore, StackTooShallow, load_grammar

LIST = 'start: "[" [item ("," item)*] "]"\nitem: "x" | start\n'


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(GrammarSyntaxError) as info:
        load_grammar('start: "a"\nrule: "b" ]\n')
    assert info.value.line == 2 and info.value.column == 11
    assert "grammar line 2, column 11" in str(info.value)


def test_undefined_rule_is_located() -> None:
    with pytest.raises(GrammarSyntaxError, match="foo") as info:
        load_grammar('start: "a" b\nb: foo\n')
    assert info.value.line == 2 and info.value.column == 4


def test_grammar_needing_earley_is_refused() -> None:
    with pytest.raises(GrammarNotLALRError, match="not LALR"):
        load_grammar('start: a | b\na: "x"\nb: "x"\n')


def _term(tables, text: str) -> int:  # type: ignore[no-untyped-def]
    import re

    return next(i for i, t in enumerate(tables.terminals) if re.fullmatch(t.regex, text))


def test_stack_store_feeds_and_accepts() -> None:
    tables = load_grammar(LIST)
    stacks = StackStore(tables)
    lsqb, rsqb, x, comma = (_term(tables, c) for c in "[]x,")
    sid = 0
    for term in (lsqb, x, comma, lsqb, rsqb, rsqb):
        assert not stacks.accepts_end(sid)
        sid = stacks.feed(sid, term)
        assert sid >= 0
    assert stacks.accepts_end(sid)
    assert stacks.feed(sid, x) == -1
    # equal stacks are the same integer
    again = 0
    for term in (lsqb, x, comma, lsqb, rsqb, rsqb):
        again = stacks.feed(again, term)
    assert again == sid
    assert stacks.viable(stacks.feed(0, lsqb)) >= {x, lsqb, rsqb}


def test_truncated_stacks_raise_when_they_need_more() -> None:
    tables = load_grammar(LIST)
    stacks = StackStore(tables)
    lsqb, rsqb, x = (_term(tables, c) for c in "[]x")
    sid = 0
    for term in (lsqb, lsqb, lsqb, x, rsqb):
        sid = stacks.feed(sid, term)
    top = stacks.truncate(sid, 2)
    assert stacks.feed(top, x) == -1  # decided by the top state alone
    with pytest.raises(StackTooShallow):
        stacks.feed(top, rsqb)  # reduces '[' item ']' through the unknown part
    deeper = stacks.truncate(sid, stacks.depth[sid] - 1)
    assert stacks.states(stacks.feed(deeper, rsqb))[1:] == stacks.states(stacks.feed(sid, rsqb))[1:]
