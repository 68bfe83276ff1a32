"""The ``llguidance`` grammar engine: llguidance's token masks behind decodekit's matcher API.

Select it with the ``grammar`` processor's ``engine`` option (``engine="llguidance"``) or
``decodekit.grammars.compile(grammar, tokenizer, engine="llguidance")``. It takes the inputs
of the builtin ``lark`` engine:

- lark text, a ``.lark`` file or a builtin grammar name, given to llguidance's lark front end
  after these rewrites (:func:`to_llguidance_lark`): terminal and rule priorities
  (``NAME.2:``), which llguidance does not support, are dropped (its Earley parser keeps
  every reading of a tie where lark's lexer would pick the higher priority); text that
  ``%ignore`` skips is also allowed before the first and after the last token, as lark does
  (llguidance skips it only between tokens); a ``start`` option other than ``"start"`` adds
  the rule ``start: <name>``; and llguidance's ``no_forcing`` option is set, so that the
  mask holds every token the grammar allows (by default, where the grammar forces text,
  llguidance allows only the canonical tokens of that text);
- a JSON Schema (dict, JSON text or pydantic model class), compiled by llguidance's own JSON
  Schema front end with the separators of decodekit's ``whitespace`` schema option
  (``"compact"``: exactly ``", "`` and ``": "``; ``"flexible"``: any JSON whitespace), or,
  with ``schema_frontend="decodekit"``, converted to lark text by decodekit's converter first.

The package is optional: ``pip install 'decodekit[llguidance]'``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from decodekit.errors import MissingDependencyError
from decodekit.grammars.external import ExternalMatcher
from decodekit.hookspecs import hookimpl

_PRIORITY = re.compile(r"^(\s*[?!]?[A-Za-z_][A-Za-z_0-9]*)\.-?\d+(\s*:)", re.MULTILINE)
_START_RULE = re.compile(r"^(\s*[?!]?)start(\s*:)", re.MULTILINE)
#: llguidance narrows a mask to the canonical tokens of text the grammar forces (after "f" of
#: "false", only a token "alse"); this option keeps every token the grammar allows
NO_FORCING = '%llguidance {"no_forcing": true}\n'
_IGNORE = re.compile(r"^\s*%ignore\s+(.+?)\s*$", re.MULTILINE)


def _import_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:
        raise MissingDependencyError("llguidance", extra="llguidance",
                                     feature="the 'llguidance' grammar engine") from exc
    return llguidance


def to_llguidance_lark(text: str, start: str = "start") -> str:
    """Rewrite lark text into llguidance's lark dialect (see the module docstring).

    Parameters
    ----------
    text
        Lark grammar text.
    start
        The start rule.

    Returns
    -------
    str
        Text for ``LLMatcher.grammar_from_lark``.
    """
    return NO_FORCING + portable_lark(text, start)


def portable_lark(text: str, start: str = "start") -> str:
    """Lark text without priorities, starting at ``start``, skipping ``%ignore``'d text at
    both ends (see the module docstring); understood by llguidance and xgrammar alike.

    Parameters
    ----------
    text
        Lark grammar text.
    start
        The start rule.

    Returns
    -------
    str
        The rewritten text.
    """
    out = _PRIORITY.sub(r"\1\2", text)
    ignored = _IGNORE.findall(out)
    if start == "start" and not ignored:
        return out
    entry = start
    if start == "start":
        entry = "dk_start"
        out = _START_RULE.sub(r"\1dk_start\2", out)
    elif _START_RULE.search(out):
        from decodekit.grammars.errors import GrammarError

        raise GrammarError(f"start rule {start!r} was asked for, but the grammar also defines "
                           "a rule named 'start'; the llguidance engine always starts at "
                           "'start': rename that rule or use start='start'")
    if ignored:
        # lark skips %ignore'd text before the first and after the last token too;
        # llguidance only between tokens
        # (a rule, not one terminal: a terminal would compete with the skipped ones)
        out += f"\nstart: [dk_ignored] {entry} [dk_ignored]\ndk_ignored: ({' | '.join(ignored)})+\n"
    else:
        out += f"\nstart: {entry}\n"
    return out


def schema_of(grammar: Any) -> dict[str, Any] | None:
    """The JSON Schema ``grammar`` stands for (dict, JSON text or pydantic class), else ``None``."""
    if isinstance(grammar, dict):
        return grammar
    if isinstance(grammar, type) and hasattr(grammar, "model_json_schema"):
        return grammar.model_json_schema()  # type: ignore[no-any-return]
    if isinstance(grammar, str) and grammar.lstrip().startswith("{"):
        try:
            value = json.loads(grammar)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    return None


def _unpack(bits: bytes, size: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), bitorder="little")[:size].view(bool)


class LLGuidanceGrammar:
    """A grammar compiled by llguidance for one tokenizer; :meth:`matcher` starts a sequence.

    Parameters
    ----------
    llguidance
        The imported ``llguidance`` module.
    tokenizer
        The ``llguidance.LLTokenizer``.
    grammar
        llguidance's serialised grammar.
    eos_token_ids
        End-of-sequence ids (allowed only when the text is complete).
    text
        The grammar text or schema (for display).
    """

    engine = "llguidance"

    def __init__(self, llguidance: Any, tokenizer: Any, grammar: str, eos_token_ids: tuple[int, ...],
                 text: str = "") -> None:
        self.ll = llguidance
        self.lltok = tokenizer
        self.grammar = grammar
        self.text = text
        self.vocab_size = int(tokenizer.vocab_size)
        self.eos_token_ids = tuple(eos_token_ids)
        self.eos_set = frozenset(self.eos_token_ids)
        self.eos_mask = np.zeros(self.vocab_size, dtype=bool)
        self.eos_index = [i for i in self.eos_token_ids if 0 <= i < self.vocab_size]
        self.eos_mask[self.eos_index] = True
        self.eos_mask.flags.writeable = False
        first = self.new_ll_matcher()
        if first.is_error():
            from decodekit.grammars.errors import GrammarError

            raise GrammarError(f"llguidance rejected the grammar: {first.get_error()}")

    def new_ll_matcher(self) -> Any:
        """A fresh ``llguidance.LLMatcher`` of this grammar."""
        return self.ll.LLMatcher(self.lltok, self.grammar, log_level=0)

    def matcher(self) -> LLGuidanceMatcher:
        """A new matcher at the start of the grammar."""
        return LLGuidanceMatcher(self, self.new_ll_matcher())

    def __repr__(self) -> str:
        return f"LLGuidanceGrammar(vocab={self.vocab_size}, eos={list(self.eos_token_ids)})"


class LLGuidanceMatcher(ExternalMatcher):
    """The grammar state of one sequence, with the methods of decodekit's ``Matcher``.

    End-of-sequence tokens are handled here, not by llguidance: one is accepted only when
    the text is complete and ends the matcher (then only EOS ids are allowed), and it counts
    as one token for :meth:`rollback`.

    Parameters
    ----------
    grammar
        The compiled grammar.
    inner
        The ``llguidance.LLMatcher``.
    """

    def is_complete(self) -> bool:
        """Whether the text so far is a complete sentence of the grammar. Does not mutate."""
        return self.ended or bool(self.inner.is_accepting())

    def mask(self) -> np.ndarray:
        """Tokens allowed next, a ``bool`` array over the vocabulary. Does not mutate."""
        g = self.grammar
        if self.ended:
            return g.eos_mask
        out = _unpack(self.inner.compute_bitmask(), g.vocab_size).copy()
        out[g.eos_index] = bool(self.inner.is_accepting())
        return out

    def can_accept(self, token_id: int) -> bool:
        """Whether :meth:`accept` would succeed. Does not mutate."""
        if self.ended:
            return False
        if token_id in self.grammar.eos_set:
            return bool(self.inner.is_accepting())
        if not 0 <= token_id < self.grammar.vocab_size:
            return False
        return bool(self.inner.validate_tokens([int(token_id)]) == 1)

    def accept(self, token_id: int) -> bool:
        """Advance by one token if the grammar allows it (mutates on success only)."""
        token_id = int(token_id)
        if not self.can_accept(token_id):
            return False
        if token_id in self.grammar.eos_set:
            self.ended = True
        elif not self.inner.consume_token(token_id):
            raise RuntimeError(f"llguidance refused token {token_id} after validating it: "
                               f"{self.inner.get_error()}")
        self.count += 1
        return True

    def _copy_inner(self) -> Any:
        return self.inner.deep_copy()

    def forced_tokens(self, limit: int = 64) -> list[int]:
        """Tokens the grammar determines from here (llguidance's fast-forward tokens)."""
        if self.ended:
            return []
        if not self.inner.compute_ff_bytes():  # (with no_forcing, ff tokens need this call first)
            return []
        return [int(t) for t in self.inner.compute_ff_tokens()[:limit]]

    def __repr__(self) -> str:
        return f"LLGuidanceMatcher(position={self.count}, complete={self.is_complete()})"


class LLGuidanceEngine:
    """The ``llguidance`` grammar engine (see the module docstring)."""

    name = "llguidance"

    def __init__(self) -> None:
        self._tokenizers: dict[tuple[int, tuple[int, ...]], tuple[Any, Any]] = {}

    def _tokenizer(self, llguidance: Any, tokenizer: Any, eos: tuple[int, ...]) -> Any:
        key = (id(tokenizer), eos)
        hit = self._tokenizers.get(key)
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        if not hasattr(tokenizer, "backend_tokenizer"):
            from decodekit.grammars.errors import VocabularyError

            raise VocabularyError("the llguidance engine needs a fast transformers tokenizer (with "
                                  f"a backend_tokenizer); got {type(tokenizer).__name__}")
        lltok = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos) if eos else None)
        if len(self._tokenizers) > 8:
            self._tokenizers.clear()
        self._tokenizers[key] = (tokenizer, lltok)
        return lltok

    def compile(self, grammar: Any, tokenizer: Any, *, start: str = "start",
                eos_token_ids: tuple[int, ...] | list[int] | None = None,
                schema_options: dict[str, Any] | None = None,
                schema_frontend: str = "llguidance") -> LLGuidanceGrammar:
        """Compile ``grammar`` for a transformers tokenizer.

        Parameters
        ----------
        grammar
            Lark text, a builtin grammar name, a ``.lark`` file, a JSON Schema (dict or JSON
            text), a pydantic model class, or a grammar compiled by the lark engine (its text).
        tokenizer
            A fast transformers tokenizer.
        start
            Start rule of a lark grammar.
        eos_token_ids
            End-of-sequence ids; default: the tokenizer's ``eos_token_id``.
        schema_options
            Options of decodekit's JSON Schema converter; with llguidance's front end only
            ``whitespace`` (``"compact"`` or ``"flexible"``) is used.
        schema_frontend
            ``"llguidance"`` (default) or ``"decodekit"`` (convert with ``schema_to_lark``).

        Returns
        -------
        LLGuidanceGrammar
            Call its ``matcher()`` for each sequence.
        """
        ll = _import_llguidance()
        if schema_frontend not in ("llguidance", "decodekit"):
            from decodekit.errors import OptionsError

            raise OptionsError(f"schema_frontend must be 'llguidance' or 'decodekit', not {schema_frontend!r}")
        if eos_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_token_ids = () if eos is None else (eos,)
        eos_ids = tuple(int(i) for i in eos_token_ids)
        lltok = self._tokenizer(ll, tokenizer, eos_ids)
        opts = dict(schema_options or {})
        schema = schema_of(grammar)
        if schema is not None and schema_frontend == "llguidance":
            whitespace = opts.get("whitespace", "compact")
            if whitespace not in ("compact", "flexible"):
                from decodekit.errors import OptionsError

                raise OptionsError(f"schema option whitespace must be 'compact' or 'flexible', not {whitespace!r}")
            defaults = ({"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
                        if whitespace == "compact" else {"whitespace_flexible": True})
            schema = {**schema, "x-guidance": {**defaults, **schema.get("x-guidance", {})}}
            spec = ll.LLMatcher.grammar_from_lark(f"{NO_FORCING}start: %json {json.dumps(schema)}\n")
            return LLGuidanceGrammar(ll, lltok, spec, eos_ids, json.dumps(schema))
        text = getattr(grammar, "text", None) if hasattr(grammar, "matcher") else None
        if text is None:
            from decodekit.grammars.library import resolve

            text = resolve(grammar, schema_options=opts).text
        spec = ll.LLMatcher.grammar_from_lark(to_llguidance_lark(text, start))
        return LLGuidanceGrammar(ll, lltok, spec, eos_ids, text)


@hookimpl
def decodekit_register_grammar_engines(register: Any) -> None:
    register("llguidance", LLGuidanceEngine())
