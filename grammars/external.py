"""Common state of the matchers that wrap another grammar library (llguidance, xgrammar).

Such a library matches the tokens of the text; end-of-sequence tokens are handled by the
wrapper: one is accepted only when the text is complete, ends the matcher (then only EOS ids
are allowed) and counts as one token for :meth:`ExternalMatcher.rollback`. Subclasses provide
the library-specific parts: :meth:`mask`, :meth:`is_complete`, :meth:`can_accept`,
:meth:`accept`, :meth:`forced_tokens` and :meth:`_copy_inner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import GrammarError

__all__ = ["ExternalMatcher"]


class ExternalMatcher:
    """The grammar state of one sequence, with the methods of decodekit's ``Matcher``.

    Parameters
    ----------
    grammar
        The compiled grammar of the wrapping engine.
    inner
        The library's matcher, which this object owns (and mutates).
    """

    def __init__(self, grammar: Any, inner: Any) -> None:
        self.grammar = grammar
        self.inner = inner
        self.ended = False
        self.count = 0

    @property
    def position(self) -> int:
        """Number of tokens accepted so far (an accepted EOS included)."""
        return self.count

    def is_terminated(self) -> bool:
        """Whether an end-of-sequence token was accepted."""
        return self.ended

    def mask(self) -> np.ndarray:  # pragma: no cover - abstract
        """Tokens allowed next, a ``bool`` array over the vocabulary. Does not mutate."""
        raise NotImplementedError

    def accept(self, token_id: int) -> bool:  # pragma: no cover - abstract
        """Advance by one token if the grammar allows it (mutates on success only)."""
        raise NotImplementedError

    def _copy_inner(self) -> Any:  # pragma: no cover - abstract
        """An independent copy of the library's matcher."""
        raise NotImplementedError

    def allowed_tokens(self) -> np.ndarray:
        """Ids of the tokens :meth:`mask` allows. Does not mutate."""
        return np.nonzero(self.mask())[0]

    def accept_tokens(self, token_ids: list[int]) -> int:
        """Accept tokens in order until one is refused; returns how many were accepted."""
        for n, tok in enumerate(token_ids):
            if not self.accept(tok):
                return n
        return len(token_ids)

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` accepted tokens (an accepted EOS counts as one).

        Raises
        ------
        GrammarError
            If fewer than ``n`` tokens were accepted.
        """
        if n < 0 or n > self.count:
            raise GrammarError(f"cannot roll back {n} tokens: the matcher accepted {self.count}")
        left = n
        if left and self.ended:
            self.ended = False
            left -= 1
        if left:
            self.inner.rollback(left)
        self.count -= n

    def reset(self) -> None:
        """Return to the initial state."""
        self.inner.reset()
        self.ended = False
        self.count = 0

    def fork(self) -> ExternalMatcher:
        """An independent copy (this matcher is not changed)."""
        other = type(self)(self.grammar, self._copy_inner())
        other.ended, other.count = self.ended, self.count
        return other
