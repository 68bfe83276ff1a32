"""compile(): disk and memory caches, grammar kinds, engines and vocabulary checks."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from decodekit.errors import UnknownNameError
from decodekit.grammars import (
    GrammarError,
    GrammarSyntaxError,
    UnsupportedTerminalError,
    VocabularyMismatchError,
    compile,
)
from decodekit.grammars import compiled as compiled_mod

VOCAB = [b"", b"a", b"b", b"ab", b" "]


def test_disk_cache_is_used_after_memory_is_cleared(isolated_cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first = compile('start: ("a" | "b")+', VOCAB, eos_token_ids=[0])
    files = sorted(p.name[:2] for p in (isolated_cache / "grammars").iterdir())
    assert files == ["g-", "v-", "w-"]  # tables, token index, vocabulary walks
    compiled_mod.clear_memory_caches()

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rebuilt instead of loaded from the cache")
    monkeypatch.setattr(compiled_mod, "load_grammar", fail)
    monkeypatch.setattr(compiled_mod.TokenIndex, "build", classmethod(fail))
    second = compile('start: ("a" | "b")+', VOCAB, eos_token_ids=[0])
    assert second is not first
    m = second.matcher()
    assert m.accept(3) and m.accept(1) and m.is_complete()
    # another grammar text is another key
    with pytest.raises(AssertionError, match="rebuilt"):
        compile('start: "a"+', VOCAB, eos_token_ids=[0])


def test_walks_loaded_from_disk_give_the_same_masks(isolated_cache: Any, tiny_tok: Any) -> None:
    import numpy as np

    text = '{"a": [1, 2.5, "x\\u00e9"], "b": {"c": null}}'
    first = compile("json", tiny_tok)
    masks = []
    m = first.matcher()
    for tok in tiny_tok.encode(text):
        masks.append(m.mask().copy())
        assert m.accept(tok)
    compiled_mod.clear_memory_caches()
    second = compile("json", tiny_tok)
    assert second is not first and len(second.store._walks) == first.lexer.num_states - 1
    m = second.matcher()
    for tok, mask in zip(tiny_tok.encode(text), masks):
        assert np.array_equal(m.mask(), mask)
        assert m.accept(tok)


def test_eager_walks_and_splits_give_the_masks_computed_lazily(isolated_cache: Any, tiny_tok: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The walks and boundary splits made at compile time (and loaded from disk) give the
    masks a grammar computed lazily gives, token by token."""
    import numpy as np

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "tags": {"type": "array", "items": {"enum": ["a b", "c"]}},
                                               "n": {"type": "integer", "minimum": -5}},
              "required": ["name"], "additionalProperties": False}
    text = '{"name": "ab cd", "tags": ["a b", "c"], "n": -3}'

    def masks(eager: bool) -> list[np.ndarray]:
        compiled_mod.clear_memory_caches()
        compiled = compile(schema, tiny_tok)
        store = compiled.store
        # before any mask: every walk and some splits are already made (or loaded), or none
        assert (len(store._walks) == compiled.lexer.num_states - 1 and len(store._splits) > 0) == eager
        m = compiled.matcher()
        out = []
        for tok in tiny_tok.encode(text):
            out.append(m.mask().copy())
            assert m.accept(tok)
        out.append(m.mask().copy())
        assert m.is_complete()
        return out

    eager = masks(True)
    loaded = masks(True)  # walks and splits from the disk cache
    monkeypatch.setattr(compiled_mod, "EAGER_WALK_STATES", 1)
    monkeypatch.setattr(compiled_mod, "FORMAT_VERSION", compiled_mod.FORMAT_VERSION + 100)  # new cache keys
    lazy = masks(False)
    assert len(eager) == len(loaded) == len(lazy)
    for a, b, c in zip(eager, loaded, lazy):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_memory_cache_returns_the_same_object(isolated_cache: Any) -> None:
    a = compile("json", VOCAB, eos_token_ids=[0])
    assert compile("json", VOCAB, eos_token_ids=[0]) is a
    assert compile("json", VOCAB, eos_token_ids=[4]) is not a


def test_a_corrupt_cache_file_is_rebuilt(isolated_cache: Any) -> None:
    compile('start: "a"+', VOCAB, eos_token_ids=[0])
    for path in (isolated_cache / "grammars").iterdir():
        path.write_bytes(b"garbage")
    compiled_mod.clear_memory_caches()
    assert compile('start: "a"+', VOCAB, eos_token_ids=[0]).matches("aaa")


def test_vocabulary_mismatch_is_detected(tiny_tok: Any) -> None:
    grammar = compile("json", tiny_tok)
    grammar.check_vocabulary(tiny_tok, vocab_size=len(tiny_tok))
    from decodekit.testing import tiny_tokenizer

    other = tiny_tokenizer(300)
    with pytest.raises(VocabularyMismatchError, match="another vocabulary"):
        grammar.check_vocabulary(other)
    with pytest.raises(VocabularyMismatchError, match="logits have 100"):
        grammar.check_vocabulary(tiny_tok, vocab_size=100)
    with pytest.raises(VocabularyMismatchError):
        compile(grammar, other)


def test_grammar_errors_are_clear() -> None:
    with pytest.raises(GrammarSyntaxError, match="line 1"):
        compile('start: "a" )', VOCAB)
    with pytest.raises(UnsupportedTerminalError, match="terminal W"):
        compile("start: W\nW: /\\bx/", VOCAB)
    with pytest.raises(UnknownNameError, match="lark"):
        compile("json", VOCAB, engine="nope")


@pytest.fixture
def fake_converter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A stand-in ``decodekit.grammars.jsonschema`` recording its calls (integers only)."""
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
    module = types.ModuleType("decodekit.grammars.jsonschema")

    def schema_to_lark(schema: dict[str, Any], **opts: Any) -> str:
        calls.append((schema, opts))
        return 'start: INT\nINT: /[0-9]+/\n'
    module.schema_to_lark = schema_to_lark  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "decodekit.grammars.jsonschema", module)
    return calls


def test_json_schema_in_every_form_goes_through_the_converter(fake_converter: Any) -> None:
    import pydantic

    class Item(pydantic.BaseModel):
        n: int

    vocab = [b"", b"1", b"2", b"x"]
    schema = {"type": "integer"}
    for grammar in (schema, json.dumps(schema), Item):
        compiled = compile(grammar, vocab, eos_token_ids=[0], schema_options={"whitespace": "none"})
        assert compiled.matches("12") and not compiled.matches("x")
    assert [c[0] for c in fake_converter][:2] == [schema, schema]
    assert fake_converter[2][0]["title"] == "Item"
    assert all(c[1] == {"whitespace": "none"} for c in fake_converter)


def test_missing_converter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "decodekit.grammars.jsonschema", None)
    with pytest.raises(GrammarError, match="JSON Schema support"):
        compile({"type": "integer"}, VOCAB)
