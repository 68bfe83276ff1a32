"""The fast masks equal the reference masks (every token tried byte by byte), on prefixes of
valid documents and of random walks, for every builtin grammar and several vocabularies."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from decodekit.grammars import compile
from decodekit.grammars.compiled import EAGER_WALK_STATES
from decodekit.grammars.index import TokenIndex
from decodekit.grammars.library import names
from decodekit.grammars.reference import ReferenceGrammar, ReferenceMatcher, mismatches


def _walk_and_compare(compiled: Any, prefixes: list[list[int]], walks: int, steps: int, seed: int,
                      sample: int | None = None) -> int:
    """Compare masks at every given prefix and along random walks; returns masks compared."""
    rng = random.Random(seed)
    ref_grammar = ReferenceGrammar(compiled.tables)
    tokens = list(compiled.vocab.tokens)
    n_vocab = len(tokens)
    compared = 0

    def ids_for(fast: np.ndarray) -> list[int] | None:
        if sample is None:
            return None
        allowed = np.nonzero(fast)[0].tolist()
        return sorted(set(rng.sample(range(n_vocab), sample)) | set(rng.sample(allowed, min(sample, len(allowed)))))

    for prefix in prefixes:
        for cut in range(len(prefix) + 1):
            m = compiled.matcher()
            assert m.accept_tokens(prefix[:cut]) == cut
            bad = mismatches(compiled, prefix[:cut], ids_for(m.mask()), ref_grammar)
            assert not bad, (prefix[:cut], [(i, tokens[i], f, s) for i, f, s in bad[:5]])
            compared += 1
    for _ in range(walks):
        m = compiled.matcher()
        ref = ReferenceMatcher(ref_grammar, compiled.eos_token_ids)
        for _ in range(steps):
            fast = m.mask()
            ids = ids_for(fast)
            slow = ref.mask(tokens, ids)
            if ids is not None:
                keep = np.zeros(n_vocab, dtype=bool)
                keep[ids] = True
                keep[list(compiled.eos_token_ids)] = True
                fast = fast & keep
            assert np.array_equal(fast, slow), [(int(i), tokens[i], bool(fast[i]), bool(slow[i]))
                                                 for i in np.nonzero(fast != slow)[0][:5]]
            assert m.is_complete() == ref.is_complete()
            compared += 1
            choices = [int(t) for t in np.nonzero(fast)[0] if t not in compiled.eos_set]
            if not choices:
                break
            tok = rng.choice(choices)
            assert m.accept(tok) and ref.feed_bytes(tokens[tok])
    return compared


@pytest.mark.parametrize("name", names())
def test_fast_masks_equal_reference_tiny_tokenizer(name: str, tiny_tok: Any, samples: dict[str, list[str]]) -> None:
    compiled = compile(name, tiny_tok)
    prefixes = [tiny_tok.encode(doc, add_special_tokens=False) for doc in samples[name][:3]]
    assert _walk_and_compare(compiled, prefixes, walks=5, steps=25, seed=len(name)) > 50


# tokens that span several terminals, end inside one, are whitespace, or are partial UTF-8
BOUNDARY_VOCAB = [
    b"", b"{", b"}", b"[", b"]", b",", b":", b'"', b" ", b"  ", b"\n", b"\n  ", b'{"', b'"}', b'":',
    b'": ', b'", "', b'"},{"', b"],[", b"1,2", b"1", b"12", b"0", b"-", b".", b"5e", b"e-", b"E+3",
    b"tr", b"ue", b"true", b"null", b"nu", b"ll}", b"fal", b"se", b'"a', b"a", b"ab", b'b"', b"\\",
    b'\\"', b"\\u", b"00e9", b"\\u00", b"e9", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe4\xb8", b"\x96",
    b" {", b' "', b" 1", b"1 ", b"} ", b'" ,', b"[]", b"{}", b'""', b"x", b"\t", b"\r\n", b"]]",
    b"]}", b'}]', b"0.", b".5", b"-0", b"1e5", b", ", b" ]", b"null,", b'true]', b'"\\n"',
]
BOUNDARY_VOCAB += [bytes([c]) for c in range(0x20, 0x7F) if bytes([c]) not in BOUNDARY_VOCAB]


def test_token_boundary_cases_json() -> None:
    compiled = compile("json", BOUNDARY_VOCAB, eos_token_ids=[0])
    vocab = BOUNDARY_VOCAB
    greedy = TokenIndex.build(tuple(vocab))

    def tokenize(text: str) -> list[int]:
        data, out = text.encode(), []
        while data:
            tok, n, _ = greedy.longest_prefix_token(data)
            assert tok >= 0
            out.append(tok)
            data = data[n:]
        return out

    docs = ['{"ab": [1,2, -0.5e-3, true], "a": null}', '[{"a":"\\u00e9\u00e9"},{"ab":{}}]', ' "\\n" ']
    assert _walk_and_compare(compiled, [tokenize(d) for d in docs], walks=20, steps=30, seed=3) > 100


def test_token_boundary_cases_sql_and_sexpr() -> None:
    vocab = [b"", b"SEL", b"ECT", b"SELECT", b" ", b"select", b" *", b" FROM", b" t", b"FROM", b"t",
             b"tx", b";", b" WHERE", b" a", b" =", b" 1", b"1", b"'", b"''", b"'a", b"b'", b"--",
             b" --x", b"\n", b"(", b")", b"(+", b" -1", b"-", b"1.5", b'"', b'"s', b'\\"', b"s\"",
             b"'q", b" ;", b";\n", b"x", b"sym?", b"[", b"]"]
    for name in ("sql", "sexpr"):
        compiled = compile(name, vocab, eos_token_ids=[0])
        assert _walk_and_compare(compiled, [], walks=25, steps=25, seed=5) > 50


@pytest.mark.parametrize("name", ["json", "sql"])
def test_fast_masks_equal_reference_default_tokenizer(name: str, default_tok: Any,
                                                      samples: dict[str, list[str]]) -> None:
    compiled = compile(name, default_tok)
    prefixes = [default_tok.encode(samples[name][1], add_special_tokens=False)[:24]]
    assert _walk_and_compare(compiled, prefixes, walks=2, steps=12, seed=7, sample=300) > 30


def test_bounded_strings_and_long_tokens_schema() -> None:
    # counted strings (slice tokens placed by length near the bound, where the chain of
    # states ends), tokens longer than the trie walk's depth, tokens that cross terminals
    schema = {"type": "object", "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 24},
                                               "n": {"type": "integer"}},
              "required": ["name", "n"], "additionalProperties": False}
    vocab = BOUNDARY_VOCAB + [b"abcdefghijklmnopqrstu", b"a" * 17, b"x" * 30, b'{"name": "', b"name", b'"n',
                              b'", "n": ', b"0123456789abcdefghij", b"ab cd ef gh ij kl mn", b"x" * 18 + b'"',
                              b"n\xc3\xa9", b"q" * 20 + b'", "', b"nam", b'e": "ab']
    compiled = compile(schema, vocab, eos_token_ids=[0])
    greedy = TokenIndex.build(tuple(vocab))

    def tokenize(text: str) -> list[int]:
        data, out = text.encode(), []
        while data:
            tok, n, _ = greedy.longest_prefix_token(data)
            out.append(tok)
            data = data[n:]
        return out

    docs = ['{"name": "abcdefghijklmnopqrstué", "n": 12}', '{"name": "xxxxxxxxxxxxxxxxxxxab", "n": -3}']
    assert _walk_and_compare(compiled, [tokenize(d) for d in docs], walks=15, steps=40, seed=11) > 100


def test_long_bounded_string_builds_lexer_states_lazily() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 20000}}, "required": ["s"]}
    vocab = [b"", b'{"s": "', b"abc", b"d" * 20, b'"}', b'"', b"}", b"{", b" ", b":", b"s", b'"s', b'": "']
    compiled = compile(schema, vocab, eos_token_ids=[0])
    m = compiled.matcher()
    for tok in [1] + [2, 3] * 30 + [4]:
        assert m.mask()[tok] and m.accept(tok)
    assert m.is_complete() and m.mask()[0]
    # more states than compile builds eagerly: 690 characters in, states are expanded as far
    # as that eager attempt and a little past the text, not for all 20,000 characters
    assert compiled.lexer.num_expanded < EAGER_WALK_STATES + 1500


def test_duplicate_and_long_tokens_share_their_twins_fate(isolated_cache: Any) -> None:
    # tokens with the same bytes as a smaller id (short, crossing a lexeme boundary, and longer
    # than the trie walk's depth) must be placed exactly like that id, inside and across lexemes
    long_key = b'"' + b"k" * 20
    vocab = BOUNDARY_VOCAB + [b'", "', b"true", long_key, b"y" * 19, b'"' + b"y" * 19, b'1, "' + b"z" * 16,
                              long_key, b"y" * 19, b'1, "' + b"z" * 16, b"abc", b"abc"]
    compiled = compile("json", vocab, eos_token_ids=[0])
    twins = [b'", "', b"true", long_key, b"y" * 19, b'1, "' + b"z" * 16, b"abc"]
    ids = {tok: [i for i, t in enumerate(vocab) if t == tok] for tok in twins}
    assert all(len(v) == 2 for v in ids.values())
    expect = {(b"[",): [b'", "', b"true", long_key, b'1, "' + b"z" * 16],
              (b"[", b'"a'): [b'", "', b"true", b"y" * 19, b"abc"]}
    for prefix, allowed in expect.items():
        m = compiled.matcher()
        assert m.accept_tokens([vocab.index(t) for t in prefix]) == len(prefix)
        mask = m.mask()
        for tok, (a, b) in ids.items():
            assert mask[a] == mask[b], (prefix, tok)
            assert mask[a] == (tok in allowed), (prefix, tok)
    doc = [vocab.index(b"[")] + [len(vocab) - 5, vocab.index(b'"'), vocab.index(b"]")]
    assert _walk_and_compare(compiled, [doc], walks=20, steps=20, seed=3) > 40
