"""Regex building blocks of the JSON Schema converter: patterns, automata, numbers, formats."""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import re
from decimal import Decimal
from fractions import Fraction

import pytest

from decodekit.grammars.jsonschema_fsm import compile_tree, product, to_greedy_tree, to_tree
from decodekit.grammars.jsonschema_pattern import PatternError, parse_pattern
from decodekit.grammars.jsonschema_regex import FULL, cset, encode, lit, render, rep, string_of
from decodekit.grammars.jsonschema_scalars import format_tree, number_range, string_content


def full(tree) -> re.Pattern:
    return re.compile(render(tree), re.S)


@pytest.mark.parametrize("pattern,yes,no", [
    ("^[a-z]+$", ["abc"], ["", "aB", "abc\n"]),
    ("abc", ["abc", "xxabcxx"], ["ab", "acb"]),
    ("^(\\w\\w\\d)+$", ["ab1cd2"], ["ab1c", "\u00e9b1"]),
    ("^(a|b)$|^c", ["a", "b", "cde"], ["ab", "xc"]),
    ("[^\"]{2}", ["ab", "x\u00e9y"], ['"a"', "a"]),
    ("^.{2,3}$", ["ab", "a\u00e9c"], ["a", "abcd", "a\nb"]),
    ("a{", ["a{"], ["a"]),
    ("^\\d{3}-\\x41\\u0042$", ["123-AB"], ["123-ab"]),
    ("^[\\s]+$", [" \t\u00a0"], ["a"]),
    ("(^[^5]*$)|7", ["", "ab", "a57", "7"], ["5", "a5b"]),
    ("((^ab$))|^c", ["ab", "cd"], ["xab", "abc", "dc"]),
])
def test_ecma_patterns_match_decoded_strings(pattern: str, yes: list, no: list) -> None:
    rx = full(parse_pattern(pattern))
    for s in yes:
        assert rx.fullmatch(s), s
    for s in no:
        assert not rx.fullmatch(s), s


@pytest.mark.parametrize("pattern",
                         ["(?=a)b", "\\bword", "(a)\\1", "\\p{L}", "a(^b)", "(", "[b-a]"])
def test_unsupported_or_invalid_patterns_raise(pattern: str) -> None:
    with pytest.raises(PatternError):
        parse_pattern(pattern)


def test_encoding_matches_json_dumps() -> None:
    rx = full(string_of(rep(cset(FULL), 0, None)))
    for s in ["", "plain", "q\"uote", "back\\slash", "\n\r\t\b\f", "\x00\x1f\x7f", "\u00e9\u2028"]:
        assert rx.fullmatch(json.dumps(s, ensure_ascii=False)), s
    for bad in ['"a"b"', '"\\u001F"', '"\\/"', '"\x01"', '"\\u0041"']:
        assert not rx.fullmatch(bad), bad
    # a length counts decoded characters, however many bytes their escapes take
    two = full(string_of(rep(cset(FULL), 2, 2)))
    assert two.fullmatch(json.dumps("\n\u0001")) and not two.fullmatch(json.dumps("abc"))


def test_automata_operations_and_back_to_regex() -> None:
    others = product(compile_tree(rep(cset(FULL), 0, None)), compile_tree(lit("name")), "diff")
    rx = full(to_tree(others))
    assert rx.fullmatch("nam") and rx.fullmatch("names") and not rx.fullmatch("name")
    both = product(compile_tree(rep(cset(FULL), 1, 255)), compile_tree(parse_pattern("^[a-z]+$")),
                   "and")
    assert render(to_tree(both)) == "[a-z]{1,255}"  # the chain becomes a counted repetition
    union = product(compile_tree(lit("ab")), compile_tree(lit("cd")), "or")
    assert {s for s in ["ab", "cd", "abcd", ""] if union.accepts(s)} == {"ab", "cd"}
    assert product(compile_tree(lit("a")), compile_tree(lit("b")), "and").is_empty()
    assert full(encode(lit('a"'))).fullmatch('a\\"')


def _value_ok(text, lo, lo_incl, hi, hi_incl) -> bool:
    v = Fraction(Decimal(text))
    f = lambda x: Fraction(Decimal(repr(x)))  # noqa: E731
    return (lo is None or (v >= f(lo) if lo_incl else v > f(lo))) and \
        (hi is None or (v <= f(hi) if hi_incl else v < f(hi)))


def test_number_ranges_are_exact_and_greedy() -> None:
    rng = random.Random(7)
    texts = {str(rng.randint(-500, 500)) for _ in range(150)}
    texts |= {repr(round(rng.uniform(-50, 50), rng.randint(1, 3))) for _ in range(150)}
    texts |= {repr(rng.uniform(-1, 1) * 10 ** rng.randint(-20, 20)) for _ in range(150)}
    texts |= {"0", "-0.0", "1e-05", "1e+16", "10", "5", "5.0", "4.999", "-12"}
    cases = [(None, True, None, True), (0, True, 10, True), (-5.5, False, 2.25, True),
             (1e-05, True, 1e+20, False), (0, False, 0.001, True), (-100, True, -1, False)]
    for lo, lo_incl, hi, hi_incl in cases:
        for integer in (False, True):
            rx = full(number_range(lo, lo_incl, hi, hi_incl, integer))
            for t in texts:
                ok = _value_ok(t, lo, lo_incl, hi, hi_incl)
                if integer:
                    ok = ok and re.fullmatch(r"-?(0|[1-9][0-9]*)", t) is not None
                matched = rx.fullmatch(t) is not None
                assert matched == ok, (lo, hi, integer, t)
                if matched:  # leftmost-first matching stops at the end of the number
                    assert rx.match(t + ", ").end() == len(t)


def test_formats_against_python_parsers() -> None:
    date = full(format_tree("date"))
    for y in (1900, 2000, 2023, 2024):
        for m in range(0, 14):
            for d in (0, 1, 28, 29, 30, 31, 32):
                s = f"{y:04d}-{m:02d}-{d:02d}"
                try:
                    datetime.date.fromisoformat(s)
                    ok = True
                except ValueError:
                    ok = False
                assert bool(date.fullmatch(s)) == ok, s
    ipv6 = full(format_tree("ipv6"))
    for s in ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "1::2:3", "::ffff:1.2.3.4",
              "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7::", "1::2::3", "1:2:3:4:5:6:7:8:9",
              "12345::", "1:2:3:4:5:6:7:1.2.3.4"]:
        try:
            ipaddress.IPv6Address(s)
            ok = True
        except ValueError:
            ok = False
        assert bool(ipv6.fullmatch(s)) == ok, s
    assert format_tree("no-such-format") is None


def test_string_content_combines_length_and_pattern() -> None:
    rx = full(string_content(2, 4, [parse_pattern("^[a-z]+$")]))
    assert rx.fullmatch("ab") and rx.fullmatch("abcd")
    assert not rx.fullmatch("a") and not rx.fullmatch("abcde") and not rx.fullmatch("aB")
    rx = full(string_content(0, 3, [parse_pattern("x")]))
    assert rx.fullmatch("axb") and rx.fullmatch("x") and not rx.fullmatch("abcx")
    greedy = to_greedy_tree(compile_tree(lit("12")))
    assert render(greedy) == "12"
