"""Regular expressions to byte DFAs: agreement with Python's re, UTF-8, lazy terminals."""

from __future__ import annotations

import random
import re

import pytest

from decodekit.grammars.automata import compile_regex, has_lazy_quantifier, prepare_regex
from decodekit.grammars.errors import UnsupportedTerminalError

CASES = [
    r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"',
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
    r"(?i:select)",
    r"[A-Za-z_][A-Za-z0-9_]*",
    r".+",
    r"(?s:.)+",
    r"[é-ü]+x",
    r"[^a]",
    r"\u00e9+",
    r"[\u4e00-\u4e0f]+",
    r"(ab|a)c?",
]
ALPHABET = ["a", "b", "c", "x", '"', "\\", "0", "1", "9", ".", "e", "E", "-", "+", " ", "\n", "é", "ü",
            "ø", "\u4e00", "\u4e0f", "\u4e10", "\U0001f600", "S", "l", "u", "/", "\x01", "\x7f"]


@pytest.mark.parametrize("regex", CASES)
def test_byte_dfa_agrees_with_python_re(regex: str) -> None:
    dfa = compile_regex(regex)
    rng = random.Random(hash(regex) & 0xFFFF)
    for _ in range(1500):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
        assert dfa.fullmatch(text.encode()) == (re.fullmatch(regex, text) is not None), text


def test_multibyte_characters_are_split_into_bytes() -> None:
    dfa = compile_regex(r"[é-ü]+")
    data = "éü".encode()
    assert all(dfa.is_prefix(data[:k]) for k in range(len(data) + 1))
    assert not dfa.fullmatch(data[:1]) and dfa.fullmatch(data)
    assert not dfa.is_prefix("ø".encode()[:1] + b"\x00")
    # no overlong encodings or surrogates
    assert not compile_regex(r".").is_prefix(b"\xc0")
    assert not compile_regex(r".").is_prefix(b"\xed\xa0")


def test_lazy_quantifiers_end_at_the_first_match() -> None:
    assert has_lazy_quantifier(r"/\*(.|\n)*?\*/") and not has_lazy_quantifier(r"(?:a)+[*?]")
    comment = compile_regex(r"/\*(.|\n)*?\*/")
    assert comment.fullmatch(b"/* a */")
    assert not comment.is_prefix(b"/* a */ b */")


def test_lark_escaped_string_idiom_is_rewritten() -> None:
    lark_regex = r'".*?(?<!\\)(\\\\)*?"'
    dfa = compile_regex(lark_regex)
    assert dfa.fullmatch(b'"a\\"b"') and dfa.fullmatch(b'"a\\\\"') and dfa.fullmatch(b'""')
    assert not dfa.is_prefix(b'"a"b')
    assert "\\u" not in prepare_regex(r"[\u0041-\u005a]")


def test_unsupported_features_name_the_terminal() -> None:
    with pytest.raises(UnsupportedTerminalError, match="terminal WORD .*look-around"):
        compile_regex(r"\bword\b", name="WORD")
