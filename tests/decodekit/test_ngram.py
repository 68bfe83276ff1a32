"""n-gram count tables: exact counts, the file format, lookups, named tables and the command."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decodekit import ngram
from decodekit.errors import InputError, UserError
from decodekit.testing import CORPUS, tiny_tokenizer

DOCS = [[5, 6, 7, 5, 6, 8, 5, 6, 7, 9], [6, 7, 5, 6, 7], [1], [9, 9, 9, 9, 9, 9, 9]]


def brute_force(docs: list[list[int]], orders: Any = range(2, 7)) -> Counter:
    """Every n-gram of every order inside each document, counted."""
    counts: Counter = Counter()
    for doc in docs:
        for n in orders:
            for j in range(len(doc) - n + 1):
                counts[tuple(doc[j:j + n])] += 1
    return counts


def check_exact(table: ngram.NGramTable, docs: list[list[int]], spot_checks: int = 50) -> None:
    """The table holds exactly the brute-force counts (vectorised per order, plus scalar spot
    checks of ``count``, ``total`` and ``continuations``)."""
    counts = brute_force(docs, table.orders)
    assert len(table.entry_keys) == len(counts)
    totals: Counter = Counter()
    for gram, c in counts.items():
        totals[gram[:-1]] += c
    assert len(table.ctx_keys) == len(totals)
    for order in table.orders:
        grams = [g for g in counts if len(g) == order]
        if not grams:
            continue
        arr = np.array(grams)
        assert table.counts(arr[:, :-1], arr[:, -1]).tolist() == [counts[g] for g in grams]
        assert table.totals(arr[:, :-1]).tolist() == [totals[g[:-1]] for g in grams]
    for gram in list(counts)[:spot_checks]:
        context = gram[:-1]
        assert table.count(context, gram[-1]) == counts[gram]
        assert table.total(context) == totals[context]
        assert table.continuations(context) == {g[-1]: c for g, c in counts.items() if g[:-1] == context}


def test_counts_equal_brute_force() -> None:
    table = ngram.count_ngrams(DOCS)
    check_exact(table, DOCS)
    # n-grams never cross a document boundary: "9 6" would join documents 0 and 1
    assert table.count([9], 6) == 0 and table.total([7, 9]) == 0
    assert table.count([5, 6], 7) == 3 and table.total([5, 6]) == 4
    assert table.meta["tokens"] == sum(map(len, DOCS)) and table.meta["documents"] == 4


def test_counts_of_tokenised_text_equal_brute_force() -> None:
    tok = tiny_tokenizer()
    texts = [CORPUS, CORPUS.upper(), "short"]
    table = ngram.build_table(texts, tok, name="tiny")
    docs = [tok.encode(t, add_special_tokens=False) for t in texts]
    assert ngram.encode_texts(tok, texts) == docs
    check_exact(table, docs)
    assert table.meta["tokenizer"] == ngram.tokenizer_fingerprint(tok)
    assert table.meta["vocab_size"] == len(tok) and table.name == "tiny"


def test_orders_subset_and_validation() -> None:
    table = ngram.count_ngrams(DOCS, orders=[2, 4])
    assert table.orders == (2, 4)
    assert table.count([5], 6) == 4 and table.count([5, 6, 7], 5) == 1
    with pytest.raises(ValueError, match="orders"):
        table.total([5, 6])
    for bad in ([1, 2], [9], []):
        with pytest.raises(InputError, match="orders must lie in 2..8"):
            ngram.count_ngrams(DOCS, orders=bad)
    empty = ngram.count_ngrams([[1, 2]], orders=[3])
    assert len(empty.ctx_keys) == 0 and empty.total([1, 2]) == 0


def test_hash_collisions_are_detected_and_avoided(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ngram.context_hashes

    def weak(contexts: Any, seed: int, orders: Any = None) -> list[np.ndarray]:
        hashes = real(contexts, seed, orders)
        return [h % np.uint64(3) for h in hashes] if seed == 0 else hashes

    monkeypatch.setattr(ngram, "context_hashes", weak)
    table = ngram.count_ngrams(DOCS)
    assert table.seed != 0
    check_exact(table, DOCS)


def test_file_round_trip_is_memory_mapped(tmp_path: Path) -> None:
    table = ngram.build_table([CORPUS], tiny_tokenizer(), name="tiny", corpus={"files": 1})
    path = table.save(tmp_path / "sub" / "t.dkng")
    opened = ngram.NGramTable.open(path)
    for name, array in table.arrays.items():
        assert np.array_equal(array, opened.arrays[name]) and array.dtype == opened.arrays[name].dtype
        assert not opened.arrays[name].flags.writeable  # a read-only view of the mapped file
    assert opened.meta == {**table.meta, "format_version": ngram.FORMAT_VERSION}
    assert opened.orders == table.orders and opened.seed == table.seed and opened.path == path
    for name in opened.arrays:  # arrays start on aligned offsets
        assert opened.arrays[name].ctypes.data % 8 == 0
    check_exact(opened, [tiny_tokenizer().encode(CORPUS, add_special_tokens=False)])
    assert [p.name for p in path.parent.iterdir()] == ["t.dkng"]  # no temporary file left behind


def test_open_rejects_what_is_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        ngram.NGramTable.open(tmp_path / "missing.dkng")
    junk = tmp_path / "junk.dkng"
    junk.write_bytes(b"hello world, this is not a table at all")
    with pytest.raises(InputError, match="not a decodekit n-gram table"):
        ngram.NGramTable.open(junk)
    good = ngram.count_ngrams(DOCS).save(tmp_path / "good.dkng")
    data = good.read_bytes()
    newer = tmp_path / "newer.dkng"
    newer.write_bytes(data[:8] + np.array([ngram.FORMAT_VERSION + 1], "<u4").tobytes() + data[12:])
    with pytest.raises(InputError, match="format version"):
        ngram.NGramTable.open(newer)
    cut = tmp_path / "cut.dkng"
    cut.write_bytes(data[:-16])
    with pytest.raises(InputError, match="truncated"):
        ngram.NGramTable.open(cut)


def test_interpolate_follows_the_definition() -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 6, size=80).tolist() for _ in range(3)]
    table = ngram.count_ngrams(docs)
    lambdas = [0.01, 0.04, 0.15, 0.18, 0.12]
    history = rng.integers(0, 6, size=(40, 5))
    lengths = rng.integers(0, 6, size=40)
    candidates = rng.integers(0, 7, size=(40, 4))
    got = table.interpolate(history, lengths, candidates, lambdas)
    for r in range(40):
        for j in range(4):
            want = 0.0
            for i, lam in enumerate(lambdas, start=1):
                context = history[r, 5 - i:].tolist()
                total = table.total(context)
                if i <= lengths[r] and total:
                    want += lam * table.count(context, int(candidates[r, j])) / total
            assert got[r, j] == pytest.approx(want, abs=1e-12)
    assert (got > 0).any() and (got == 0).any()  # both cases were exercised
    # few rows (one decoding step) take a plain-Python hashing path: same results
    for r in range(0, 40, 3):
        assert np.array_equal(table.interpolate(history[r:r + 3], lengths[r:r + 3], candidates[r:r + 3],
                                                lambdas), got[r:r + 3])
    # a shorter weight list uses fewer orders; missing orders contribute nothing
    only_bigram = table.interpolate(history, lengths, candidates, [1.0])
    for r in range(5):
        for j in range(4):
            total = table.total([int(history[r, -1])])
            want = table.count([int(history[r, -1])], int(candidates[r, j])) / total if lengths[r] and total else 0
            assert only_bigram[r, j] == pytest.approx(want)
    assert not ngram.count_ngrams(docs, orders=[3]).interpolate(history, lengths, candidates, [1.0]).any()


def test_tokenizer_fingerprint_and_mismatch() -> None:
    tok, other = tiny_tokenizer(), tiny_tokenizer(300)
    assert ngram.tokenizer_fingerprint(tok) == ngram.tokenizer_fingerprint(tok)
    assert ngram.tokenizer_fingerprint(tok) != ngram.tokenizer_fingerprint(other)
    table = ngram.build_table([CORPUS], other, name="other")
    with pytest.raises(UserError, match="another tokenizer"):
        ngram.check_tokenizer(table, tok)
    ngram.check_tokenizer(table, other)
