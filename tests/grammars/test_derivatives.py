"""Derivative automata agree with interegular's eager automata, byte for byte."""

from __future__ import annotations

import random

import pytest

from decodekit.grammars.automata import compile_regex, has_lazy_quantifier, prepare_regex
from decodekit.grammars.derivatives import EMPTY, NotLazy, TermTable

REGEXES = [
    r'"(?:[^\x00-\x1f"\\]|\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))){1,5}"',
    r"[é-ü]+", r".", r"/\*(.|\n)*?\*/", r"(?i:select|from)", r"(?s:.)x",
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", r"a{2,4}b?", r"(ab|a)*c", r"\d+\s*",
    r"[^a]", r'"(?:[^"\\]|\\.)*?"', r"[\u0100-\uffff]x", r"(?:a?){3}b", r"x*",
]
PIECES = [b"a", b"b", b"c", b'"', b"\\", b"0", b"1", b"9", b".", b"e", b"-", b"x", "é".encode(),
          "ü".encode(), b"\xc3", b"\xa9", b"/", b"*", b"\n", b" ", b"S", b"E", b"u", "\u0150".encode(),
          b"\xed\xa0\x80", b"\x01", b"f", b"n", "\U0001f600".encode(), b"\xf0\x9f", b"\xc0\x80"]


def _lazy_match(terms: TermTable, root: int, shortest: bool, data: bytes) -> tuple[bool, bool]:
    """(full match, prefix of a match) through derivatives."""
    t = root
    for b in data:
        if shortest and terms.nullable[t]:
            return False, False
        t = terms.derive(t, b)
        if t == EMPTY:
            return False, False
    return terms.nullable[t], True


@pytest.mark.parametrize("regex", REGEXES)
def test_derivatives_match_eager_dfa(regex: str) -> None:
    dfa = compile_regex(regex)
    terms = TermTable()
    root = terms.from_regex(prepare_regex(regex))
    shortest = has_lazy_quantifier(regex)
    rng = random.Random(regex)
    for _ in range(3000):
        data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 7)))
        assert _lazy_match(terms, root, shortest, data) == (dfa.fullmatch(data), dfa.is_prefix(data)), data


def test_local_classes_group_bytes_with_equal_derivatives() -> None:
    terms = TermTable()
    root = terms.from_regex(r"[a-c]x|[^a-z]y")
    cls, reps = terms.local_classes(root)
    assert 3 <= len(reps) < 20  # a-c, the other lower-case letters, the other bytes by UTF-8 role
    for b in range(256):
        assert terms.derive(root, b) == terms.derive(root, reps[cls[b]])


def test_counted_repetition_stays_small() -> None:
    terms = TermTable()
    root = terms.from_regex(r'"[a-z]{0,5000}"')
    t = terms.derive(root, ord('"'))
    for _ in range(10):
        t = terms.derive(t, ord("q"))
    assert t != EMPTY and len(terms.terms) < 60


def test_look_around_is_not_lazy() -> None:
    with pytest.raises(NotLazy):
        TermTable().from_regex(r"a(?=b)")


def test_local_classes_partition_bytes_by_mask_membership() -> None:
    # the vectorised partition (up to 62 masks) and the bitwise refinement (more masks) both
    # put two bytes in one class exactly when every mask holds both or neither
    rng = random.Random(4)
    table = TermTable()
    for trial in range(60):
        k = rng.choice([1, 2, 5, 30, 62, 63, 80])
        masks = frozenset(m for m in (rng.getrandbits(256) for _ in range(k)) if m)
        tid = 10_000 + trial  # a term id whose first-byte masks are set directly
        table._first[tid] = masks
        cls, reps = table.local_classes(tid)
        members = [tuple(m >> b & 1 for m in sorted(masks)) for b in range(256)]
        assert len(set(members)) == len(reps)
        for b in range(256):
            assert members[b] == members[reps[cls[b]]]
            assert reps[cls[b]] == min(x for x in range(256) if members[x] == members[b])
        assert reps == sorted(reps)
