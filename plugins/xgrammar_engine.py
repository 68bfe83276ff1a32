"""The ``xgrammar`` grammar engine: xgrammar's token masks behind decodekit's matcher API.

Select it with the ``grammar`` processor's ``engine`` option (``engine="xgrammar"``) or
``decodekit.grammars.compile(grammar, tokenizer, engine="xgrammar")``. It takes:

- lark text, a ``.lark`` file or a builtin grammar name, given to xgrammar's lark front end
  after the rewrites of :func:`decodekit.plugins.llguidance_engine.portable_lark`
  (priorities dropped, ``%ignore``'d text also allowed at both ends, start rule);
- text in xgrammar's own EBNF format (recognised by ``::=``; the start rule is ``root``);
- a JSON Schema (dict, JSON text or pydantic model class), compiled by xgrammar's JSON Schema
  front end with the separators of decodekit's ``whitespace`` schema option (``"compact"``:
  exactly ``", "`` and ``": "``; ``"flexible"``: any JSON whitespace). Additional properties
  are allowed as the spec says unless the schema option ``forbid_additional`` is set.

The package is optional and pulls in torch and triton: ``pip install 'decodekit[xgrammar]'``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from decodekit.errors import MissingDependencyError
from decodekit.grammars.external import ExternalMatcher
from decodekit.hookspecs import hookimpl
from decodekit.plugins.llguidance_engine import portable_lark, schema_of


def _import_xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise MissingDependencyError("xgrammar", extra="xgrammar",
                                     feature="the 'xgrammar' grammar engine") from exc
    return xgrammar


class XGrammarGrammar:
    """A grammar compiled by xgrammar for one tokenizer; :meth:`matcher` starts a sequence.

    Parameters
    ----------
    xgrammar
        The imported ``xgrammar`` module.
    compiled
        The ``xgrammar.CompiledGrammar``.
    tokenizer
        The transformers tokenizer (for :meth:`XGrammarMatcher.forced_tokens`).
    vocab_size
        Width of the masks.
    eos_token_ids
        End-of-sequence ids (allowed only when the text is complete).
    text
        The grammar text or schema (for display).
    """

    engine = "xgrammar"

    def __init__(self, xgrammar: Any, compiled: Any, tokenizer: Any, vocab_size: int,
                 eos_token_ids: tuple[int, ...], text: str = "") -> None:
        self.xgr = xgrammar
        self.compiled = compiled
        self.tokenizer = tokenizer
        self.text = text
        self.vocab_size = int(vocab_size)
        self.eos_token_ids = tuple(eos_token_ids)
        self.eos_set = frozenset(self.eos_token_ids)
        self.eos_index = [i for i in self.eos_token_ids if i < self.vocab_size]
        self.eos_mask = np.zeros(self.vocab_size, dtype=bool)
        self.eos_mask[self.eos_index] = True
        self.eos_mask.flags.writeable = False
        # special tokens (other than EOS) never spell text; xgrammar may treat their text as bytes
        special = set(getattr(tokenizer, "all_special_ids", ()))
        added = getattr(tokenizer, "added_tokens_decoder", {})
        special |= {i for i, t in added.items() if getattr(t, "special", False)}
        special -= self.eos_set
        self.special_index = sorted(i for i in special if 0 <= i < self.vocab_size)

    def matcher(self) -> XGrammarMatcher:
        """A new matcher at the start of the grammar."""
        inner = self.xgr.GrammarMatcher(self.compiled, override_stop_tokens=list(self.eos_token_ids) or None)
        return XGrammarMatcher(self, inner)

    def __repr__(self) -> str:
        return f"XGrammarGrammar(vocab={self.vocab_size}, eos={list(self.eos_token_ids)})"


class XGrammarMatcher(ExternalMatcher):
    """The grammar state of one sequence, with the methods of decodekit's ``Matcher``.

    End-of-sequence tokens are handled here: one is accepted only when the text is complete
    and ends the matcher (then only EOS ids are allowed); it counts as one token for
    :meth:`rollback`.

    Parameters
    ----------
    grammar
        The compiled grammar.
    inner
        The ``xgrammar.GrammarMatcher``.
    """

    def __init__(self, grammar: XGrammarGrammar, inner: Any) -> None:
        super().__init__(grammar, inner)
        self._bitmask = grammar.xgr.allocate_token_bitmask(1, grammar.vocab_size)

    def _raw_mask(self) -> np.ndarray:
        self.inner.fill_next_token_bitmask(self._bitmask)
        bits = self._bitmask[0].numpy().view(np.uint8)
        out = np.unpackbits(bits, bitorder="little")[:self.grammar.vocab_size].view(bool)
        out[self.grammar.special_index] = False
        return out

    def is_complete(self) -> bool:
        """Whether the text so far is a complete sentence of the grammar. Does not mutate."""
        if self.ended:
            return True
        return bool(self._raw_mask()[self.grammar.eos_index].any())

    def mask(self) -> np.ndarray:
        """Tokens allowed next, a ``bool`` array over the vocabulary. Does not mutate."""
        g = self.grammar
        if self.ended:
            return g.eos_mask
        out = self._raw_mask().copy()
        if g.eos_index:
            complete = bool(out[g.eos_index].any())
            out[g.eos_index] = complete
        return out

    def can_accept(self, token_id: int) -> bool:
        """Whether :meth:`accept` would succeed. Does not mutate."""
        if self.ended or not 0 <= token_id < self.grammar.vocab_size:
            return False
        return bool(self.mask()[token_id])

    def accept(self, token_id: int) -> bool:
        """Advance by one token if the grammar allows it (mutates on success only)."""
        token_id = int(token_id)
        if self.ended or not 0 <= token_id < self.grammar.vocab_size:
            return False
        if token_id in self.grammar.eos_set:
            if not self.is_complete():
                return False
            self.ended = True
        elif token_id in self.grammar.special_index or not self.inner.accept_token(token_id):
            return False
        self.count += 1
        return True

    def _copy_inner(self) -> Any:
        return self.inner.fork()

    def forced_tokens(self, limit: int = 64) -> list[int]:
        """Tokens the grammar determines from here: xgrammar's jump-forward text, tokenised,
        without its last token (a longer token could join it to what follows)."""
        if self.ended:
            return []
        text = self.inner.find_jump_forward_string()
        if not text:
            return []
        ids = self.grammar.tokenizer.encode(text, add_special_tokens=False)[:-1][:limit]
        probe = self.fork()
        return ids[:probe.accept_tokens(ids)]

    def __repr__(self) -> str:
        return f"XGrammarMatcher(position={self.count}, complete={self.is_complete()})"


class XGrammarEngine:
    """The ``xgrammar`` grammar engine (see the module docstring)."""

    name = "xgrammar"

    def __init__(self) -> None:
        self._compilers: dict[tuple[int, tuple[int, ...]], tuple[Any, Any]] = {}

    def _compiler(self, xgr: Any, tokenizer: Any, eos: tuple[int, ...]) -> Any:
        key = (id(tokenizer), eos)
        hit = self._compilers.get(key)
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer),
                                                  stop_token_ids=list(eos) or None)
        compiler = xgr.GrammarCompiler(info)
        if len(self._compilers) > 8:
            self._compilers.clear()
        self._compilers[key] = (tokenizer, compiler)
        return compiler

    def compile(self, grammar: Any, tokenizer: Any, *, start: str = "start",
                eos_token_ids: tuple[int, ...] | list[int] | None = None,
                schema_options: dict[str, Any] | None = None) -> XGrammarGrammar:
        """Compile ``grammar`` for a transformers tokenizer.

        Parameters
        ----------
        grammar
            Lark text, a builtin grammar name, a ``.lark`` file, xgrammar EBNF text, a JSON
            Schema (dict or JSON text), a pydantic model class, or a grammar compiled by the
            lark engine (its text).
        tokenizer
            A transformers tokenizer.
        start
            Start rule of a lark grammar.
        eos_token_ids
            End-of-sequence ids; default: the tokenizer's ``eos_token_id``.
        schema_options
            Options of decodekit's JSON Schema converter; ``whitespace`` and
            ``forbid_additional`` are used.

        Returns
        -------
        XGrammarGrammar
            Call its ``matcher()`` for each sequence.
        """
        xgr = _import_xgrammar()
        if eos_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_token_ids = () if eos is None else (eos,)
        eos_ids = tuple(int(i) for i in eos_token_ids)
        compiler = self._compiler(xgr, tokenizer, eos_ids)
        opts = dict(schema_options or {})
        size = len(tokenizer)
        schema = schema_of(grammar)
        if schema is not None:
            whitespace = opts.get("whitespace", "compact")
            if whitespace not in ("compact", "flexible"):
                from decodekit.errors import OptionsError

                raise OptionsError(f"schema option whitespace must be 'compact' or 'flexible', not {whitespace!r}")
            compact = whitespace == "compact"
            compiled = compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=not compact, separators=(", ", ": ") if compact else None,
                strict_mode=bool(opts.get("forbid_additional", False)))
            return XGrammarGrammar(xgr, compiled, tokenizer, size, eos_ids, json.dumps(schema))
        text = getattr(grammar, "text", None) if hasattr(grammar, "matcher") else None
        if text is None:
            if isinstance(grammar, str) and "::=" in grammar:
                return XGrammarGrammar(xgr, compiler.compile_grammar(grammar), tokenizer, size, eos_ids, grammar)
            from decodekit.grammars.library import resolve

            text = resolve(grammar, schema_options=opts).text
        try:
            parsed = xgr.Grammar.from_lark(portable_lark(text, start))
        except Exception as exc:  # xgrammar raises its own error types for bad grammars
            from decodekit.grammars.errors import GrammarError

            raise GrammarError(f"xgrammar rejected the grammar: {exc}") from exc
        return XGrammarGrammar(xgr, compiler.compile_grammar(parsed), tokenizer, size, eos_ids, text)


@hookimpl
def decodekit_register_grammar_engines(register: Any) -> None:
    register("xgrammar", XGrammarEngine())
