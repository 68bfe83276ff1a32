"""Compiling a grammar against a vocabulary, with in-process and on-disk caches.

Two independent artefacts are cached on disk under ``<cache root>/grammars``:

* ``g-<hash>.pkl``: a grammar's LALR tables and lexing automaton, keyed by a hash of the
  grammar text, the start rule and the engine's format version;
* ``v-<fingerprint>.pkl``: a vocabulary's token index, keyed by the hash of its token bytes;
* ``w-<hash>-<fingerprint>.pkl``: for grammars with a small lexer, the walk of the whole
  vocabulary from every lexer state (see :mod:`decodekit.grammars.index`);
* ``tokens-<hash>.pkl``: the raw token bytes of a tokenizer loaded from a ``tokenizer.json``
  file, keyed by that file's path, size and modification time (reading 49,152 tokens through
  the tokenizer costs more than the rest of a warm compile).

A :class:`CompiledGrammar` pairs one of each; compiled grammars are also kept in memory (a few
at a time) so that their memoised masks serve later generations.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from decodekit.grammars.errors import VocabularyMismatchError
from decodekit.grammars.index import MaskStore, TokenIndex
from decodekit.grammars.lexer import LexerTables, build_lexer
from decodekit.grammars.library import resolve
from decodekit.grammars.matcher import Matcher
from decodekit.grammars.parser import GrammarTables, StackStore, load_grammar
from decodekit.grammars.vocab import Vocabulary

#: Bump when the cached formats or the lexing semantics change.
FORMAT_VERSION = 5
ENGINE = "lark"
_MEMORY_SIZE = 8
#: grammars whose lexer has at most this many states get their whole lexer, every vocabulary
#: walk and every boundary split at compile time (stored on disk with the grammar), so that no
#: mask builds them; larger ones build lexer states and walks when first needed
EAGER_WALK_STATES = 4096
#: at most this many boundary splits (runs of a token's bytes past a lexeme's end) are made at
#: compile time; the rest when first needed
EAGER_SPLITS = 2_000


class CompiledGrammar:
    """A grammar compiled against a vocabulary: create per-sequence :class:`Matcher` objects.

    Parameters
    ----------
    tables, lexer
        The grammar's LALR tables and lexing automaton.
    index
        The vocabulary's token index.
    vocab
        The vocabulary (token bytes and end-of-sequence ids).
    text
        The lark text (for display).
    """

    engine = ENGINE

    def __init__(self, tables: GrammarTables, lexer: LexerTables, index: TokenIndex,
                 vocab: Vocabulary, text: str = "") -> None:
        self.tables = tables
        self.lexer = lexer
        self.index = index
        self.vocab = vocab
        self.text = text
        self.vocab_size = len(vocab)
        self.token_bytes = vocab.tokens
        self.eos_token_ids = vocab.eos_token_ids
        self.eos_set = frozenset(vocab.eos_token_ids)
        self.eos_mask = np.zeros(self.vocab_size, dtype=bool)
        self.eos_mask[list(self.eos_set)] = True
        self.eos_mask.flags.writeable = False
        self.stacks = StackStore(tables)
        self.store = MaskStore(lexer, self.stacks, index, vocab.eos_token_ids)
        self.initial_lexer_state = lexer.start_for(tables.start_state)
        self._ignored = lexer.ignored.tolist()
        self._start_of = [int(lexer.context_start[c]) for c in lexer.state_context]
        reps: dict[int, int] = {}
        for b in range(256):
            reps.setdefault(int(lexer.byte_class[b]), b)
        self.class_reps = sorted(reps.values())
        self.class_sizes = np.bincount(lexer.byte_class, minlength=len(reps)).tolist()

    @property
    def vocab_fingerprint(self) -> str:
        """Hash of the vocabulary's token bytes."""
        return self.vocab.fingerprint

    def matcher(self) -> Matcher:
        """A new matcher at the start of the grammar."""
        return Matcher(self)

    def step_bytes(self, sid: int, state: int, data: bytes) -> tuple[int, int] | None:
        """The (stack, lexer state) after ``data`` from ``(sid, state)``, or ``None`` if the
        grammar rejects it (the final lexeme must still be able to become a viable terminal)."""
        lexer, stacks = self.lexer, self.stacks
        rows, winner, expand = lexer.rows, lexer.winner_list, lexer.expand
        for b in data:
            nxt = (rows[state] or expand(state))[b]
            if nxt == 0:
                won = winner[state]
                if won < 0:
                    return None
                if not self._ignored[won]:
                    sid = stacks.feed(sid, won)
                    if sid < 0:
                        return None
                state = self._start_of[stacks.state[sid]]
                nxt = (rows[state] or expand(state))[b]
                if nxt == 0:
                    return None
            state = nxt
        if lexer.livesets[lexer.liveset_list[state]].isdisjoint(stacks.viable(sid)):
            return None
        return sid, state

    def matches(self, text: str | bytes) -> bool:
        """Whether ``text`` is a complete sentence of the grammar (independent of tokens)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        state = self.step_bytes(0, self.initial_lexer_state, data)
        return state is not None and self.store.complete(*state)

    def check_vocabulary(self, tokenizer: Any, vocab_size: int | None = None) -> None:
        """Raise :class:`VocabularyMismatchError` unless ``tokenizer`` has the vocabulary this
        grammar was compiled for and ``vocab_size`` (the logits width) can hold it."""
        other = Vocabulary.from_tokenizer(tokenizer)
        if other.fingerprint != self.vocab.fingerprint:
            raise VocabularyMismatchError(
                f"the grammar was compiled for another vocabulary ({len(self.vocab)} tokens, "
                f"fingerprint {self.vocab.fingerprint[:12]}) than the model's tokenizer "
                f"({len(other)} tokens, fingerprint {other.fingerprint[:12]}); compile it with "
                "the model's tokenizer")
        if vocab_size is not None and vocab_size < self.vocab_size:
            raise VocabularyMismatchError(
                f"the model's logits have {vocab_size} entries but the grammar's vocabulary has "
                f"{self.vocab_size} tokens")

    def __repr__(self) -> str:
        return (f"CompiledGrammar(engine={self.engine!r}, terminals={len(self.tables.terminals)}, "
                f"parser_states={len(self.tables.action)}, lexer_states={self.lexer.num_states}, "
                f"vocab={self.vocab_size})")


# -- caches ---------------------------------------------------------------------------------------

_LOCK = threading.Lock()
_GRAMMARS: OrderedDict[str, tuple[GrammarTables, LexerTables]] = OrderedDict()
_INDEXES: OrderedDict[str, TokenIndex] = OrderedDict()
_COMPILED: OrderedDict[tuple[str, str, tuple[int, ...]], CompiledGrammar] = OrderedDict()


def cache_dir() -> Path:
    """Where compiled grammars and token indexes are stored."""
    from decodekit.default_model import cache_root

    return cache_root() / "grammars"


def grammar_key(text: str, start: str = "start") -> str:
    """Cache key of a grammar text."""
    h = hashlib.sha256(f"{ENGINE}/{FORMAT_VERSION}/{start}\n".encode())
    h.update(text.encode("utf-8"))
    return h.hexdigest()[:32]


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    with _LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _MEMORY_SIZE:
            cache.popitem(last=False)


def _write_atomic(path: Path, write: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only cache only costs speed


def grammar_tables(text: str, start: str = "start", *, disk: bool = True) -> tuple[GrammarTables, LexerTables]:
    """LALR tables and lexing automaton of a grammar text (memory, then disk, then built)."""
    key = grammar_key(text, start)
    hit = _GRAMMARS.get(key)
    if hit is not None:
        return hit
    path = cache_dir() / f"g-{key}.pkl"
    result = None
    if disk and path.is_file():
        try:
            with path.open("rb") as fh:
                stored = pickle.load(fh)
            if stored.get("key") == key:
                result = (stored["tables"], stored["lexer"])
        except Exception:
            result = None
    if result is None:
        tables = load_grammar(text, start)
        tables.text_hash = key
        lexer = build_lexer(tables)
        lexer.expand_all(EAGER_WALK_STATES)
        result = (tables, lexer)
        if disk:
            data = {"key": key, "tables": result[0], "lexer": result[1]}
            _write_atomic(path, lambda fh: pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL))
    _remember(_GRAMMARS, key, result)
    return result


def token_index(vocab: Vocabulary, *, disk: bool = True) -> TokenIndex:
    """The token index of a vocabulary (memory, then disk, then built)."""
    key = vocab.fingerprint
    hit = _INDEXES.get(key)
    if hit is not None:
        return hit
    path = cache_dir() / f"v-{key}-{FORMAT_VERSION}.pkl"
    index = None
    if disk and path.is_file():
        try:
            with path.open("rb") as fh:
                stored = pickle.load(fh)
            if stored.get("key") == key:
                index = TokenIndex.from_arrays(stored["arrays"])
            if index is not None and index.num_tokens != len(vocab):
                index = None
        except Exception:
            index = None
    if index is None:
        index = TokenIndex.build(vocab.tokens)
        if disk:
            data = {"key": key, "arrays": index.to_arrays()}
            _write_atomic(path, lambda fh: pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL))
    _remember(_INDEXES, key, index)
    return index


def compile_grammar(grammar: Any, tokenizer: Any, *, start: str = "start",
                    eos_token_ids: tuple[int, ...] | list[int] | None = None,
                    schema_options: dict[str, Any] | None = None, disk_cache: bool = True) -> CompiledGrammar:
    """Compile with the builtin lark engine (see :func:`decodekit.grammars.compile`)."""
    if isinstance(grammar, CompiledGrammar):
        grammar.check_vocabulary(tokenizer)
        return grammar
    resolved = resolve(grammar, schema_options=schema_options)
    if isinstance(tokenizer, Vocabulary):
        vocab = tokenizer
        if eos_token_ids is not None:
            vocab = Vocabulary(vocab.tokens, tuple(eos_token_ids), vocab.kind, vocab.fingerprint)
    elif isinstance(tokenizer, (list, tuple)):
        vocab = Vocabulary.from_bytes(tokenizer, eos_token_ids or ())
    else:
        vocab = Vocabulary.from_tokenizer(tokenizer, eos_token_ids)
    gkey = grammar_key(resolved.text, start)
    ckey = (gkey, vocab.fingerprint, vocab.eos_token_ids)
    hit = _COMPILED.get(ckey)
    if hit is not None:
        return hit
    tables, lexer = grammar_tables(resolved.text, start, disk=disk_cache)
    index = token_index(vocab, disk=disk_cache)
    compiled = CompiledGrammar(tables, lexer, index, vocab, resolved.text)
    if lexer.expand_all(EAGER_WALK_STATES):
        _prepare_walks(compiled, gkey, vocab.fingerprint, disk_cache)
    _remember(_COMPILED, ckey, compiled)
    return compiled


def _prepare_walks(compiled: CompiledGrammar, gkey: str, vocab_key: str, disk: bool) -> None:
    """Walk the vocabulary from every lexer state now (or load those walks from disk), so
    that the first masks of a generation do not pay for them."""
    store = compiled.store
    path = cache_dir() / f"w-{gkey}-{vocab_key}.pkl"
    if disk and path.is_file():
        try:
            with path.open("rb") as fh:
                stored = pickle.load(fh)
            if stored.get("key") == (gkey, vocab_key) and store.import_walks(stored["walks"]):
                return
        except Exception:
            pass
    for state in range(1, compiled.lexer.num_states):
        store.walk(state)
    store.split_all(_starts_after(compiled.tables, compiled.lexer), EAGER_SPLITS)
    if disk:
        data = {"key": (gkey, vocab_key), "walks": store.export_walks()}
        _write_atomic(path, lambda fh: pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL))


def _starts_after(tables: GrammarTables, lexer: LexerTables) -> Callable[[int], list[int]]:
    """``starts(terminal)``: the lexer start states a new lexeme can start in right after the
    parser shifts ``terminal`` (those of the parser states it shifts to)."""
    by_term: dict[int, set[int]] = {}
    for row in tables.action:
        for term, code in row.items():
            if code >= 0:
                by_term.setdefault(term, set()).add(lexer.start_for(code))
    listed = {term: sorted(found) for term, found in by_term.items()}

    def starts(term: int) -> list[int]:
        return listed.get(term, [])
    return starts


def clear_memory_caches() -> None:
    """Forget compiled grammars, tables and token indexes held in memory (not on disk)."""
    with _LOCK:
        _GRAMMARS.clear()
        _INDEXES.clear()
        _COMPILED.clear()
