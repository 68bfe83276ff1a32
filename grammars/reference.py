"""A slow, direct implementation of the engine's semantics, to check the fast one against.

:class:`ReferenceMatcher` keeps a plain list of LALR states and the bytes of the current
lexeme, and runs every terminal's own DFA. It shares only the grammar tables and the per-terminal
byte DFAs with the engine: not the combined lexer automaton, the interned stacks, the token trie
or any memo. :meth:`ReferenceMatcher.mask` tries every token, byte by byte.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from decodekit.grammars.automata import ByteDFA
from decodekit.grammars.lexer import terminal_dfas
from decodekit.grammars.parser import GrammarTables


class ReferenceGrammar:
    """Grammar tables plus per-terminal DFAs (as Python lists, for byte-at-a-time runs)."""

    def __init__(self, tables: GrammarTables, dfas: list[ByteDFA] | None = None) -> None:
        self.tables = tables
        dfas = dfas if dfas is not None else terminal_dfas(tables)
        self.trans = [d.table.tolist() for d in dfas]
        self.accept = [d.accepting.tolist() for d in dfas]
        terms = tables.terminals
        self.rank = [(-t.priority, 0 if t.is_string else 1, i) for i, t in enumerate(terms)]
        self.ignored = [t.ignored for t in terms]

    def feed(self, stack: tuple[int, ...], term: int) -> tuple[int, ...] | None:
        """LALR: consume ``term`` (reductions then shift); ``None`` on a syntax error."""
        t = self.tables
        st = list(stack)
        while True:
            code = t.action[st[-1]].get(term)
            if code is None:
                return None
            if code >= 0:
                st.append(code)
                return tuple(st)
            rule = ~code
            if t.rule_len[rule]:
                del st[-t.rule_len[rule]:]
            st.append(t.goto[st[-1]][t.rule_lhs[rule]])

    def accepts_end(self, stack: tuple[int, ...]) -> bool:
        """Whether the input may end here."""
        t = self.tables
        st = list(stack)
        while True:
            code = t.action[st[-1]].get(t.end_id)
            if code is None or code >= 0:
                return False
            rule = ~code
            if t.rule_len[rule]:
                del st[-t.rule_len[rule]:]
            nxt = t.goto[st[-1]][t.rule_lhs[rule]]
            if nxt == t.end_state:
                return True
            st.append(nxt)


class ReferenceMatcher:
    """Reference semantics: longest-match lexing in lark's contextual way, LALR parsing.

    State: the parser stack (a tuple) and the live terminals of the current lexeme with their
    DFA states (``None`` at a lexeme boundary).
    """

    def __init__(self, grammar: ReferenceGrammar, eos_token_ids: Iterable[int] = ()) -> None:
        self.g = grammar
        self.stack: tuple[int, ...] = (grammar.tables.start_state,)
        self.live: dict[int, int] | None = None
        self.eos = tuple(eos_token_ids)

    def _context(self, stack: tuple[int, ...]) -> tuple[int, ...]:
        return self.g.tables.context(stack[-1])

    def _step(self, stack: tuple[int, ...], live: dict[int, int] | None, b: int):  # type: ignore[no-untyped-def]
        g = self.g
        if live is not None:
            nxt = {t: g.trans[t][s][b] for t, s in live.items() if g.trans[t][s][b] >= 0}
            if nxt:
                return stack, nxt
            done = [t for t, s in live.items() if g.accept[t][s]]
            if not done:
                return None
            won = min(done, key=g.rank.__getitem__)
            if not g.ignored[won]:
                stack = g.feed(stack, won)
                if stack is None:
                    return None
        nxt = {t: g.trans[t][0][b] for t in self._context(stack) if g.trans[t][0][b] >= 0}
        return (stack, nxt) if nxt else None

    def _viable(self, stack: tuple[int, ...], live: dict[int, int] | None) -> bool:
        if live is None:
            return True
        return any(self.g.ignored[t] or self.g.feed(stack, t) is not None for t in live)

    def run(self, data: bytes) -> tuple[tuple[int, ...], dict[int, int] | None] | None:
        """State after ``data`` from the current state, or ``None`` if rejected."""
        state = (self.stack, self.live)
        for b in data:
            state = self._step(state[0], state[1], b)
            if state is None:
                return None
        if not self._viable(*state):
            return None
        return state

    def feed_bytes(self, data: bytes) -> bool:
        """Advance by ``data`` if allowed."""
        state = self.run(data)
        if state is None:
            return False
        self.stack, self.live = state
        return True

    def is_complete(self) -> bool:
        """Whether the text may end here."""
        g = self.g
        if self.live is None:
            return g.accepts_end(self.stack)
        done = [t for t, s in self.live.items() if g.accept[t][s]]
        if not done:
            return False
        won = min(done, key=g.rank.__getitem__)
        if g.ignored[won]:
            return g.accepts_end(self.stack)
        nxt = g.feed(self.stack, won)
        return nxt is not None and g.accepts_end(nxt)

    def mask(self, tokens: list[bytes], only: Iterable[int] | None = None) -> np.ndarray:
        """``bool [len(tokens)]``: tokens whose bytes the grammar accepts from here, EOS ids
        when complete. With ``only``, other tokens are left ``False`` (not checked)."""
        out = np.zeros(len(tokens), dtype=bool)
        ids = range(len(tokens)) if only is None else only
        for i in ids:
            data = tokens[i]
            if data and self.run(data) is not None:
                out[i] = True
        if self.is_complete():
            for e in self.eos:
                out[e] = True
        return out


def mismatches(compiled: object, prefix: list[int], only: Iterable[int] | None = None,
               reference: ReferenceGrammar | None = None) -> list[tuple[int, bool, bool]]:
    """Compare a compiled grammar's fast mask with the reference after ``prefix``.

    Parameters
    ----------
    compiled
        A :class:`decodekit.grammars.compiled.CompiledGrammar`.
    prefix
        Token ids accepted first (all must be allowed).
    only
        Token ids to compare (default: the whole vocabulary).
    reference
        A prepared :class:`ReferenceGrammar` for the same grammar (built if omitted).

    Returns
    -------
    list
        ``(token id, fast says allowed, reference says allowed)`` for every disagreement.
    """
    ref_grammar = reference or ReferenceGrammar(compiled.tables)  # type: ignore[attr-defined]
    tokens = list(compiled.vocab.tokens)  # type: ignore[attr-defined]
    matcher = compiled.matcher()  # type: ignore[attr-defined]
    ref = ReferenceMatcher(ref_grammar, compiled.eos_token_ids)  # type: ignore[attr-defined]
    for tok in prefix:
        if not matcher.accept(tok):
            raise ValueError(f"token {tok} of the prefix is not allowed by the compiled grammar")
        if not ref.feed_bytes(tokens[tok]):
            raise ValueError(f"token {tok} of the prefix is not allowed by the reference")
    ids = list(range(len(tokens))) if only is None else sorted(set(only))
    eos = set(compiled.eos_token_ids)  # type: ignore[attr-defined]
    fast = matcher.mask()
    slow = ref.mask(tokens, [i for i in ids if i not in eos])
    out = []
    for i in ids:
        if bool(fast[i]) != bool(slow[i]):
            out.append((i, bool(fast[i]), bool(slow[i])))
        elif not (i in eos or bool(fast[i]) == matcher.can_accept(i)):
            out.append((i, bool(fast[i]), not bool(fast[i])))
    return out
