"""Exact token bytes of a tokenizer's vocabulary.

A grammar constrains the *bytes* of the generated text, so every token must be known as the
exact byte string it contributes. Supported vocabularies:

* byte-level BPE (GPT-2 style, e.g. SmolLM2, Llama 3, Qwen): each character of a token stands
  for one byte through the GPT-2 byte-to-unicode table;
* SentencePiece style (Llama 2, Mistral, T5...): ``"\u2581"`` stands for a space and byte-fallback
  tokens ``<0xNN>`` are single bytes;
* added tokens that are not special are their literal UTF-8 text.

Special tokens (EOS, chat markers...) contribute no text: they get an empty byte string and the
grammar never allows them, except the end-of-sequence ids when the text is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decodekit.grammars.errors import VocabularyError

SPIECE_SPACE = "\u2581"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: bump when the raw token-bytes cache format changes
_RAW_FORMAT = 1


def gpt2_byte_table() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: the printable character that stands for each byte.

    Returns
    -------
    dict
        Character to byte value (256 entries).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    table: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_GPT2_TRANSLATE = {ord(ch): chr(b) for ch, b in gpt2_byte_table().items()}


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Token id to exact bytes, with the end-of-sequence ids.

    Attributes
    ----------
    tokens
        Per token id, its bytes; ``b""`` for special tokens, which never match text.
    eos_token_ids
        Ids that end a sequence.
    kind
        How the bytes were read: ``"byte-level"``, ``"sentencepiece"`` or ``"bytes"``.
    fingerprint
        A hash of the token bytes (and which ids are special), identifying the vocabulary.
    """

    tokens: tuple[bytes, ...]
    eos_token_ids: tuple[int, ...] = ()
    kind: str = "bytes"
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.tokens))

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_bytes(cls, tokens: Sequence[bytes], eos_token_ids: Iterable[int] = ()) -> Vocabulary:
        """A vocabulary from a list of byte strings (``b""`` marks a special token)."""
        toks = tuple(bytes(t) for t in tokens)
        eos = tuple(int(i) for i in eos_token_ids)
        bad = [i for i in eos if not 0 <= i < len(toks)]
        if bad:
            raise VocabularyError(f"end-of-sequence ids {bad} are outside the vocabulary of {len(toks)} tokens")
        return cls(toks, eos, "bytes")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, eos_token_ids: Iterable[int] | None = None) -> Vocabulary:
        """Read a tokenizer's vocabulary (memoised per tokenizer object).

        Parameters
        ----------
        tokenizer
            A transformers tokenizer (fast or SentencePiece-based) or a ``tokenizers.Tokenizer``.
        eos_token_ids
            End-of-sequence ids; default: the tokenizer's ``eos_token_id``.

        Raises
        ------
        VocabularyError
            If the tokenizer's kind is not supported (the bytes of its tokens are not exact).
        """
        if isinstance(tokenizer, Vocabulary):
            return tokenizer
        base = _cached_read(tokenizer)
        if eos_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_token_ids = () if eos is None else (eos,)
        eos = tuple(int(i) for i in eos_token_ids)
        if eos == base.eos_token_ids:
            return base
        return cls(base.tokens, eos, base.kind, base.fingerprint)


def fingerprint(tokens: Sequence[bytes]) -> str:
    """Hash of a list of token byte strings (order and emptiness included)."""
    import numpy as np

    h = hashlib.sha256()
    h.update(len(tokens).to_bytes(8, "little"))
    h.update(np.array(list(map(len, tokens)), dtype="<u4").tobytes())
    h.update(b"".join(tokens))
    return h.hexdigest()[:32]


_READ_LOCK = threading.Lock()
_READ_CACHE: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()


def _cached_read(tokenizer: Any) -> Vocabulary:
    try:
        with _READ_LOCK:
            hit = _READ_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable or unhashable
        return _read(tokenizer)
    if hit is not None:
        return hit
    vocab = _read(tokenizer)
    try:
        with _READ_LOCK:
            _READ_CACHE[tokenizer] = vocab
    except TypeError:
        pass
    return vocab


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", ()) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for i, tok in decoder.items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def _decoder_types(backend: Any) -> set[str]:
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return set()
    try:
        config = json.loads(decoder.__getstate__())
    except Exception:  # pragma: no cover - exotic decoders
        return {type(decoder).__name__}
    types: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node:
                types.add(str(node["type"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(config)
    return types


def _tokenizer_file(tokenizer: Any) -> Path | None:
    """The ``tokenizer.json`` a transformers tokenizer was loaded from, if known."""
    name = getattr(tokenizer, "name_or_path", None)
    if not name:
        return None
    path = Path(str(name)) / "tokenizer.json"
    return path if path.is_file() else None


def _raw_cache_path(source: Path, kind: str) -> Path:
    from decodekit.default_model import cache_root

    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}|{_RAW_FORMAT}".encode())
    return cache_root() / "grammars" / f"tokens-{key.hexdigest()[:32]}.pkl"


def _load_raw(path: Path) -> list[bytes] | None:
    import pickle

    try:
        with path.open("rb") as fh:
            raw = pickle.load(fh)
    except Exception:
        return None
    return raw if isinstance(raw, list) else None


def _save_raw(path: Path, raw: list[bytes]) -> None:
    import os
    import pickle
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pkl", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(list(raw), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass


def _convert_all(pieces: list[str], kind: str) -> list[bytes]:
    """Bytes of model pieces (``""`` for missing ids)."""
    if kind != "byte-level":
        return [_sentencepiece(p) if p else b"" for p in pieces]
    joined = "".join(pieces)
    try:
        data = joined.translate(_GPT2_TRANSLATE).encode("latin-1")
    except UnicodeEncodeError:
        return [_byte_level(p) if p else b"" for p in pieces]
    out = []
    pos = 0
    for p in pieces:  # one character per byte after translation
        out.append(data[pos:pos + len(p)])
        pos += len(p)
    return out


def _read(tokenizer: Any) -> Vocabulary:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "id_to_token") and hasattr(tokenizer, "get_vocab_size"):
        backend = tokenizer  # a tokenizers.Tokenizer
    specials = _special_ids(tokenizer)
    added: dict[int, str] = {}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        added[int(i)] = str(getattr(tok, "content", tok))
    if backend is not None:
        if not added and hasattr(backend, "get_added_tokens_decoder"):
            for i, tok in backend.get_added_tokens_decoder().items():
                added[int(i)] = tok.content
                if tok.special:
                    specials.add(int(i))
        types = _decoder_types(backend)
        if "ByteLevel" in types:
            kind = "byte-level"
        elif "Metaspace" in types or "ByteFallback" in types or "Replace" in types \
                or getattr(backend.model, "byte_fallback", False):
            kind = "sentencepiece"
        else:
            raise VocabularyError(
                f"cannot read exact token bytes of a tokenizer with decoder {sorted(types) or 'none'}; "
                "supported: byte-level BPE (ByteLevel decoder) and SentencePiece-style vocabularies "
                "(Metaspace / ByteFallback decoders)")
        size = int(backend.get_vocab_size(with_added_tokens=True))
        source = _tokenizer_file(tokenizer)
        cache = _raw_cache_path(source, kind) if source is not None else None
        raw = _load_raw(cache) if cache is not None and cache.is_file() else None
        if raw is None or len(raw) != size:
            pieces = [backend.id_to_token(i) or "" for i in range(size)]
            raw = _convert_all(pieces, kind)
            if cache is not None:
                _save_raw(cache, raw)
    elif hasattr(tokenizer, "sp_model") and hasattr(tokenizer, "convert_ids_to_tokens"):
        kind = "sentencepiece"
        size = len(tokenizer)
        raw = _convert_all([p or "" for p in tokenizer.convert_ids_to_tokens(list(range(size)))], kind)
    else:
        raise VocabularyError(f"cannot read the vocabulary of {type(tokenizer).__name__}: give a "
                              "transformers tokenizer, a tokenizers.Tokenizer or a list of token bytes")
    try:
        size = max(size, len(tokenizer), max(added, default=-1) + 1)
    except TypeError:
        size = max(size, max(added, default=-1) + 1)
    tokens = list(raw) + [b""] * (size - len(raw))
    for i, content in added.items():
        tokens[i] = content.encode("utf-8")
    for i in specials:
        if 0 <= i < size:
            tokens[i] = b""
    eos = getattr(tokenizer, "eos_token_id", None)
    return Vocabulary(tuple(tokens), () if eos is None else (int(eos),), kind)


def _byte_level(piece: str) -> bytes:
    try:
        return piece.translate(_GPT2_TRANSLATE).encode("latin-1")
    except UnicodeEncodeError:
        return piece.encode("utf-8")


def _sentencepiece(piece: str) -> bytes:
    m = _BYTE_FALLBACK.fullmatch(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return piece.replace(SPIECE_SPACE, " ").encode("utf-8")
