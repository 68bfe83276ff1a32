"""Exact token bytes for byte-level BPE, SentencePiece-style and plain byte vocabularies."""

from __future__ import annotations

import random
from typing import Any

import pytest

from decodekit.grammars.errors import VocabularyError
from decodekit.grammars.vocab import Vocabulary, fingerprint, gpt2_byte_table


def test_gpt2_byte_table_is_a_bijection_onto_bytes() -> None:
    table = gpt2_byte_table()
    assert len(table) == 256
    assert sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 0x20 and table["Ċ"] == 0x0A and table["A"] == 0x41


def test_byte_level_tokens_decode_like_the_tokenizer(tiny_tok: Any) -> None:
    vocab = Vocabulary.from_tokenizer(tiny_tok)
    assert vocab.kind == "byte-level"
    assert len(vocab) == len(tiny_tok)
    special = set(tiny_tok.all_special_ids) | {i for i, t in tiny_tok.added_tokens_decoder.items() if t.special}
    assert special == {0, 1, 2}
    assert all(vocab.tokens[i] == b"" for i in special)
    normal = [i for i in range(len(vocab)) if i not in special]
    assert all(vocab.tokens[i] for i in normal)
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.choice(normal) for _ in range(rng.randint(1, 6))]
        expected = b"".join(vocab.tokens[i] for i in ids).decode("utf-8", "replace")
        assert tiny_tok.decode(ids) == expected


def test_byte_level_text_round_trip(tiny_tok: Any) -> None:
    vocab = Vocabulary.from_tokenizer(tiny_tok)
    text = 'déf add(a, b):\n    return {"x": [1, 2]}  \U0001f600'
    ids = tiny_tok.encode(text, add_special_tokens=False)
    assert b"".join(vocab.tokens[i] for i in ids) == text.encode("utf-8")


def _sentencepiece_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["\u2581", "\u2581hello", "hello", "\u2581wor", "ld", "\u00e9", "\u2581{", '"', "\u2581\u2581"]
    vocab = {p: i for i, p in enumerate(pieces)}
    model = models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_sentencepiece_space_and_byte_fallback() -> None:
    tok = _sentencepiece_tokenizer()
    vocab = Vocabulary.from_tokenizer(tok)
    assert vocab.kind == "sentencepiece"
    ids = tok.convert_tokens_to_ids
    assert vocab.tokens[ids("<0x0A>")] == b"\n"
    assert vocab.tokens[ids("<0xFF>")] == b"\xff"
    assert vocab.tokens[ids("\u2581hello")] == b" hello"
    assert vocab.tokens[ids("\u2581\u2581")] == b"  "
    assert vocab.tokens[ids("\u00e9")] == "\u00e9".encode()
    assert vocab.tokens[ids("</s>")] == b"" and vocab.eos_token_ids == (ids("</s>"),)
    normal = [i for i in range(len(vocab)) if vocab.tokens[i]]
    rng = random.Random(1)
    for _ in range(200):
        seq = [rng.choice(normal) for _ in range(rng.randint(1, 5))]
        data = b"".join(vocab.tokens[i] for i in seq)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        # the decoder strips one leading space of the whole text
        expected = text[1:] if text.startswith(" ") else text
        assert tok.decode(seq) == expected


def test_from_bytes_and_fingerprint() -> None:
    a = Vocabulary.from_bytes([b"", b"a", b"ab"], eos_token_ids=[0])
    b = Vocabulary.from_bytes([b"", b"a", b"ac"], eos_token_ids=[0])
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == fingerprint((b"", b"a", b"ab"))
    with pytest.raises(VocabularyError, match="outside the vocabulary"):
        Vocabulary.from_bytes([b"a"], eos_token_ids=[3])


def test_unsupported_tokenizer_is_a_clear_error() -> None:
    with pytest.raises(VocabularyError, match="cannot read the vocabulary"):
        Vocabulary.from_tokenizer(object())


def test_reading_is_memoised_per_tokenizer(tiny_tok: Any) -> None:
    assert Vocabulary.from_tokenizer(tiny_tok) is Vocabulary.from_tokenizer(tiny_tok)
    other_eos = Vocabulary.from_tokenizer(tiny_tok, eos_token_ids=[2])
    assert other_eos.eos_token_ids == (2,)
    assert other_eos.fingerprint == Vocabulary.from_tokenizer(tiny_tok).fingerprint
