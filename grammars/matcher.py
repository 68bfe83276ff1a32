"""Per-sequence grammar state: which tokens may come next, and what accepting one does.

A :class:`Matcher` holds two integers, an interned parser stack and a lexer state, plus the
history of earlier states for :meth:`Matcher.rollback`. Forking copies that history list and
nothing else; all heavy data (tables, token index, memoised masks) belongs to the shared
:class:`decodekit.grammars.compiled.CompiledGrammar`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from decodekit.grammars.errors import GrammarError

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.grammars.compiled import CompiledGrammar

#: lexer state value marking a matcher that accepted an end-of-sequence token
_ENDED = -1


class Matcher:
    """The grammar state of one sequence.

    Create it with :meth:`decodekit.grammars.compiled.CompiledGrammar.matcher`. Methods that
    change the state say so; :meth:`mask`, :meth:`is_complete` and :meth:`forced_tokens` never do.

    Parameters
    ----------
    grammar
        The compiled grammar.
    """

    __slots__ = ("grammar", "_sid", "_lex", "_history")

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self._sid = 0
        self._lex = grammar.initial_lexer_state
        self._history: list[tuple[int, int]] = []

    # -- queries (no mutation) --------------------------------------------------------------

    @property
    def position(self) -> int:
        """Number of tokens accepted so far (an accepted EOS included)."""
        return len(self._history)

    def is_terminated(self) -> bool:
        """Whether an end-of-sequence token was accepted (nothing may follow)."""
        return self._lex == _ENDED

    def is_complete(self) -> bool:
        """Whether the text so far is a complete sentence of the grammar. Does not mutate."""
        if self._lex == _ENDED:
            return True
        return self.grammar.store.complete(self._sid, self._lex)

    def mask(self) -> np.ndarray:
        """Tokens allowed next, as a read-only ``bool`` array over the vocabulary.

        End-of-sequence ids are allowed only when the text is complete; after an accepted
        EOS only EOS ids are. Does not mutate. The array is shared: copy it before changing it.
        """
        if self._lex == _ENDED:
            return self.grammar.eos_mask
        return self.grammar.store.mask(self._sid, self._lex)

    def allowed_tokens(self) -> np.ndarray:
        """Ids of the tokens :meth:`mask` allows (a new array). Does not mutate."""
        return np.nonzero(self.mask())[0]

    def can_accept(self, token_id: int) -> bool:
        """Whether :meth:`accept` would succeed. Does not mutate."""
        return self._advance(token_id) is not None

    # -- mutation ----------------------------------------------------------------------------

    def accept(self, token_id: int) -> bool:
        """Advance by one token if the grammar allows it.

        Mutates the matcher on success only; returns ``False`` and leaves it unchanged when
        the token is not allowed. An end-of-sequence id is accepted only when the text is
        complete, and ends the matcher.
        """
        nxt = self._advance(token_id)
        if nxt is None:
            return False
        self._history.append((self._sid, self._lex))
        self._sid, self._lex = nxt
        return True

    def accept_tokens(self, token_ids: list[int]) -> int:
        """Accept tokens in order until one is refused. Mutates; returns how many were accepted."""
        for n, tok in enumerate(token_ids):
            if not self.accept(tok):
                return n
        return len(token_ids)

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` accepted tokens. Mutates.

        Raises
        ------
        GrammarError
            If fewer than ``n`` tokens were accepted.
        """
        if n < 0 or n > len(self._history):
            raise GrammarError(f"cannot roll back {n} tokens: the matcher accepted {len(self._history)}")
        if n == 0:
            return
        self._sid, self._lex = self._history[-n]
        del self._history[-n:]

    def reset(self) -> None:
        """Return to the initial state. Mutates."""
        self._sid = 0
        self._lex = self.grammar.initial_lexer_state
        self._history.clear()

    def fork(self) -> Matcher:
        """An independent copy (cheap: two integers and the history list)."""
        other = Matcher.__new__(Matcher)
        other.grammar = self.grammar
        other._sid = self._sid
        other._lex = self._lex
        other._history = list(self._history)
        return other

    # -- jump-forward --------------------------------------------------------------------------

    def forced_bytes(self, limit: int = 256) -> bytes:
        """The bytes the grammar determines from here (at most ``limit``), stopping where a
        choice exists or the text could end. Does not mutate."""
        if self._lex == _ENDED:
            return b""
        g = self.grammar
        out = bytearray()
        state = (self._sid, self._lex)
        while len(out) < limit and not g.store.complete(*state):
            allowed = [b for b in g.class_reps if g.step_bytes(state[0], state[1], bytes([b])) is not None]
            if len(allowed) != 1 or g.class_sizes[int(g.lexer.byte_class[allowed[0]])] != 1:
                break
            nxt = g.step_bytes(state[0], state[1], bytes(allowed))
            assert nxt is not None
            out.append(allowed[0])
            state = nxt
        return bytes(out)

    def forced_tokens(self, limit: int = 64) -> list[int]:
        """Tokens the grammar determines from here, for jump-forward decoding. Does not mutate.

        The forced bytes are split into the longest vocabulary tokens; a last token that a
        longer token could extend past the forced text is left out, so the model still
        chooses how the forced text joins what follows.
        """
        data = self.forced_bytes()
        index = self.grammar.index
        out: list[int] = []
        pos = 0
        while pos < len(data) and len(out) < limit:
            tok, n, extendable = index.longest_prefix_token(data[pos:])
            if tok < 0 or (pos + n == len(data) and extendable):
                break
            out.append(tok)
            pos += n
        return out

    def _advance(self, token_id: int) -> tuple[int, int] | None:
        g = self.grammar
        if self._lex == _ENDED:
            return None
        if token_id in g.eos_set:
            return (self._sid, _ENDED) if g.store.complete(self._sid, self._lex) else None
        if not 0 <= token_id < g.vocab_size:
            return None
        data = g.token_bytes[token_id]
        if not data:
            return None
        return g.step_bytes(self._sid, self._lex, data)

    def __repr__(self) -> str:
        return (f"Matcher(position={self.position}, complete={self.is_complete()}, "
                f"stack={self.grammar.stacks.states(self._sid) if self._sid >= 0 else []})")
