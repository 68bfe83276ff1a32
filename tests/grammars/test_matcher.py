"""The matcher's lifecycle: mask, accept, EOS, rollback, fork, forced tokens."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decodekit.grammars import GrammarError, compile

VOCAB = [b"", b"[", b"]", b",", b" ", b"1", b"2", b"tr", b"ue", b"t", b"r", b"u", b"e", b"true",
         b"null", b"n", b"l", b'"', b"a", b"[1", b"1]", b"1,", b", ", b"false", b"f", b"al", b"s"]


@pytest.fixture(scope="module")
def grammar() -> Any:
    return compile("json", VOCAB, eos_token_ids=[0])


def ids(*pieces: bytes) -> list[int]:
    return [VOCAB.index(p) for p in pieces]


def test_mask_does_not_mutate_and_eos_only_when_complete(grammar: Any) -> None:
    m = grammar.matcher()
    first = m.mask()
    assert not first[0] and first[VOCAB.index(b"[")] and not first[VOCAB.index(b"]")]
    assert np.array_equal(m.mask(), first) and m.position == 0
    assert m.accept_tokens(ids(b"[1", b",", b" ", b"2")) == 4
    assert not m.is_complete() and not m.mask()[0]
    assert m.accept(VOCAB.index(b"]"))
    assert m.is_complete() and m.mask()[0]
    with pytest.raises(ValueError):
        m.mask()[0] = False  # the shared mask is read-only


def test_accept_mutates_on_success_only(grammar: Any) -> None:
    m = grammar.matcher()
    assert not m.accept(VOCAB.index(b"]"))
    assert m.position == 0
    assert not m.accept(0)  # EOS before anything is complete
    assert not m.accept(len(VOCAB) + 5)
    assert m.accept(VOCAB.index(b"1"))
    assert m.position == 1


def test_eos_terminates(grammar: Any) -> None:
    m = grammar.matcher()
    assert m.accept_tokens(ids(b"null")) == 1
    assert m.accept(0) and m.is_terminated() and m.is_complete()
    assert m.allowed_tokens().tolist() == [0]
    assert not m.accept(VOCAB.index(b" "))
    m.rollback(1)
    assert not m.is_terminated() and m.mask()[VOCAB.index(b" ")]


def test_rollback_restores_earlier_states(grammar: Any) -> None:
    m = grammar.matcher()
    masks = [m.mask().copy()]
    for tok in ids(b"[", b"tr", b"ue", b",", b" ", b"n"):
        assert m.accept(tok)
        masks.append(m.mask().copy())
    for back in range(len(masks) - 1, 0, -1):
        m.rollback(1)
        assert np.array_equal(m.mask(), masks[back - 1])
    with pytest.raises(GrammarError, match="cannot roll back 1"):
        m.rollback(1)


def test_fork_is_independent(grammar: Any) -> None:
    m = grammar.matcher()
    m.accept_tokens(ids(b"[", b"1"))
    f = m.fork()
    assert f.accept(VOCAB.index(b"]")) and f.is_complete()
    assert not m.is_complete() and m.position == 2 and f.position == 3
    f.rollback(3)
    assert f.position == 0 and m.position == 2


def test_forced_tokens(grammar: Any) -> None:
    m = grammar.matcher()
    assert m.accept_tokens(ids(b"[", b"t")) == 2
    assert m.forced_bytes() == b"rue"
    # "r", "u" are forced; "ue" would be longest at the end but could extend ("ue" is complete here)
    forced = m.forced_tokens()
    assert b"".join(VOCAB[t] for t in forced) in (b"r", b"rue", b"ru")
    assert m.position == 2  # not mutated
    g = grammar.matcher()
    g.accept_tokens(ids(b"f"))
    assert g.forced_bytes() == b"alse"
    assert b"".join(VOCAB[t] for t in g.forced_tokens()).startswith(b"al")
    assert grammar.matcher().forced_tokens() == []


def test_matches_checks_whole_texts(grammar: Any) -> None:
    assert grammar.matches('[1, {"a": [true, null]}, "x"]')
    assert not grammar.matches("[1, 2")
    assert not grammar.matches("[1 2]")


def test_matchers_share_masks(grammar: Any) -> None:
    a, b = grammar.matcher(), grammar.matcher()
    a.accept_tokens(ids(b"[", b"1"))
    b.accept_tokens(ids(b"[1"))
    assert a.mask() is b.mask()
