"""Grammar-constrained decoding: lark grammars compiled into token masks.

Quick start::

    from decodekit.grammars import compile

    grammar = compile("json", tokenizer)        # a builtin name, lark text, a JSON Schema...
    m = grammar.matcher()
    allowed = m.mask()                           # bool array over the vocabulary
    m.accept(token_id)

See ``docs/grammars.md`` for the design (lexer automaton, LALR stacks, memoised masks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from decodekit.grammars.errors import (
    GrammarDeadEndError,
    GrammarError,
    GrammarNotLALRError,
    GrammarSyntaxError,
    UnsupportedTerminalError,
    VocabularyError,
    VocabularyMismatchError,
)

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.grammars.compiled import CompiledGrammar
    from decodekit.grammars.matcher import Matcher

__all__ = [
    "CompiledGrammar", "GrammarDeadEndError", "GrammarError", "GrammarNotLALRError",
    "GrammarSyntaxError", "LarkEngine", "Matcher", "UnsupportedTerminalError", "VocabularyError",
    "VocabularyMismatchError", "compile", "library_names",
]


class LarkEngine:
    """The builtin grammar engine, as registered under the name ``lark``."""

    name = "lark"

    def compile(self, grammar: Any, tokenizer: Any, **options: Any) -> CompiledGrammar:
        """Compile ``grammar`` for ``tokenizer`` (see :func:`compile`)."""
        from decodekit.grammars.compiled import compile_grammar

        return compile_grammar(grammar, tokenizer, **options)


def compile(grammar: Any, tokenizer: Any, *, engine: str = "lark", **options: Any) -> CompiledGrammar:
    """Compile a grammar against a tokenizer's vocabulary.

    Parameters
    ----------
    grammar
        A builtin grammar name (``decodekit grammars`` lists them), lark text, a path to a
        ``.lark`` file, a JSON Schema (dict or JSON text) or a pydantic model class.
    tokenizer
        A transformers tokenizer, a ``tokenizers.Tokenizer``, a
        :class:`decodekit.grammars.vocab.Vocabulary` or a list of token byte strings.
    engine
        The grammar engine; ``"lark"`` is builtin, plugins may register others.
    **options
        Engine options. The lark engine takes ``start`` (start rule, default ``"start"``),
        ``eos_token_ids`` (default: the tokenizer's EOS), ``schema_options`` (passed to the
        JSON Schema converter) and ``disk_cache`` (default ``True``).

    Returns
    -------
    CompiledGrammar
        Call its ``matcher()`` for each sequence.

    Raises
    ------
    GrammarSyntaxError
        If lark text does not parse (with line and column).
    GrammarNotLALRError
        If the grammar would need lark's Earley parser.
    """
    if engine == "lark":
        return LarkEngine().compile(grammar, tokenizer, **options)
    from decodekit.manager import get_plugin_system

    impl = get_plugin_system().registry.get("grammar_engine", engine)
    return impl.compile(grammar, tokenizer, **options)


def library_names() -> list[str]:
    """Names of the builtin grammars."""
    from decodekit.grammars.library import names

    return names()


def __getattr__(name: str) -> Any:
    if name == "CompiledGrammar":
        from decodekit.grammars.compiled import CompiledGrammar

        return CompiledGrammar
    if name == "Matcher":
        from decodekit.grammars.matcher import Matcher

        return Matcher
    raise AttributeError(f"module 'decodekit.grammars' has no attribute {name!r}")
