"""Named n-gram tables (python-stdlib, built once and cached), table resolution, corpus files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decodekit import ngram, ngram_corpus
from decodekit.errors import InputError, UserError
from decodekit.testing import CORPUS, tiny_tokenizer


def check_exact(table: ngram.NGramTable, docs: list[list[int]]) -> None:
    """The table holds exactly the brute-force counts of ``docs``."""
    counts: Counter = Counter()
    for doc in docs:
        for n in table.orders:
            for j in range(len(doc) - n + 1):
                counts[tuple(doc[j:j + n])] += 1
    assert len(table.entry_keys) == len(counts)
    for order in table.orders:
        grams = np.array([g for g in counts if len(g) == order])
        assert table.counts(grams[:, :-1], grams[:, -1]).tolist() == [counts[tuple(g)] for g in grams]


def test_builtin_table_is_built_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DECODEKIT_CACHE_DIR", str(tmp_path))
    tok = tiny_tokenizer()
    sources = ngram_corpus.stdlib_sources(("colorsys", "bisect", "no_such_module"))
    assert [name for name, _ in sources] == ["colorsys", "bisect"]
    table = ngram_corpus.builtin_table("python-stdlib", tok, modules=("colorsys", "bisect"))
    assert "first use only" in capsys.readouterr().err
    assert table.path.parent == tmp_path / "ngram" and table.name == "python-stdlib"
    assert table.meta["corpus"]["modules"] == ["colorsys", "bisect"]
    check_exact(table, [tok.encode(text, add_special_tokens=False) for _, text in sources])

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt a cached table")

    monkeypatch.setattr(ngram_corpus, "build_table", fail)
    again = ngram_corpus.builtin_table("python-stdlib", tok, modules=("colorsys", "bisect"))
    assert again.path == table.path and capsys.readouterr().err == ""
    # another corpus or another tokenizer gets its own file
    with pytest.raises(AssertionError, match="rebuilt"):
        ngram_corpus.builtin_table("python-stdlib", tok, modules=("bisect",))
    with pytest.raises(AssertionError, match="rebuilt"):
        ngram_corpus.builtin_table("python-stdlib", tiny_tokenizer(300), modules=("colorsys", "bisect"))


def test_resolve_table(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    table = ngram.build_table([CORPUS], tok, name="tiny")
    path = table.save(tmp_path / "tiny.dkng")
    assert ngram_corpus.resolve_table(str(path), tok).path == path.resolve()
    assert ngram_corpus.resolve_table(table, tok) is table
    with pytest.raises(InputError, match="python-stdlib"):
        ngram_corpus.resolve_table("no-such-table", tok)
    with pytest.raises(InputError, match="unknown builtin"):
        ngram_corpus.builtin_table("nope", tok)
    with pytest.raises(UserError, match="another tokenizer"):
        ngram_corpus.resolve_table(str(path), tiny_tokenizer(300))


def test_read_corpus(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha")
    (tmp_path / "d" / "e" / "b.py").write_text("beta")
    (tmp_path / "d" / "c.bin").write_bytes(b"\xff\xfe")
    (tmp_path / "d" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    got = ngram_corpus.read_corpus([tmp_path / "d"])
    assert [Path(p).name for p, _ in got] == ["a.txt", "b.py"]  # non-UTF-8 files skipped
    assert [t for _, t in ngram_corpus.read_corpus([tmp_path / "d"], ["*.py"])] == ["beta"]
    with pytest.raises(InputError, match="not UTF-8"):
        ngram_corpus.read_corpus([tmp_path / "d" / "latin.txt"])
    with pytest.raises(InputError, match="not found"):
        ngram_corpus.read_corpus([tmp_path / "nope"])
    with pytest.raises(InputError, match="no corpus text"):
        ngram_corpus.read_corpus([tmp_path / "d"], ["*.md"])
