"""The lexer: every terminal as a byte automaton, combined into one lazily built lexing automaton.

Lexing follows lark's contextual lexer: in each parser state only the terminals the parser has
an action for (plus the ``%ignore`` ones) are tried. A lexeme is the longest match (maximal
munch); when several terminals match the same lexeme, the winner is the one lark would pick:
higher priority first, then a string literal over a regular expression, then lark's terminal
order. Terminals written with lazy quantifiers (``/.*?/``, as in ``C_COMMENT``) end at their
first match.

The automaton's states are sets of ``(terminal, terminal state)`` pairs, which do not depend on
the parser state once a lexeme has started, so they are shared by all contexts; each context
(the terminal set of a parser state) only has its own start state. State ``0`` is dead.

Terminal automata are derivative automata (:mod:`decodekit.grammars.derivatives`) and the
combined automaton is built the same way: a state exists once something reached it, and its
row of transitions is computed the first time a walk or a matcher leaves it
(:meth:`LexerTables.ensure`). A JSON Schema string of at most 255 characters thus costs the
states a generation visits, not thousands at compile time.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from decodekit.grammars.automata import ByteDFA, compile_regex, has_lazy_quantifier, prepare_regex
from decodekit.grammars.derivatives import EMPTY, MAX_DEPTH, NotLazy, TermTable
from decodekit.grammars.errors import GrammarError
from decodekit.grammars.parser import GrammarTables

#: Limit on lexer automaton states (a guard against pathological grammars; below 2**20, the
#: state field of the mask store's keys).
MAX_STATES = 200_000


def terminal_dfas(tables: GrammarTables) -> list[ByteDFA]:
    """Compile every terminal's regular expression into a complete byte DFA (eagerly)."""
    dfas = []
    for term in tables.terminals:
        dfa = compile_regex(term.regex, name=term.name)
        if dfa.accepting[0]:
            raise GrammarError(f"terminal {term.name} matches the empty string; terminals must "
                               "consume at least one character")
        dfas.append(dfa)
    return dfas


class _Terminal:
    """One terminal's automaton: a derivative term per state, or a row of a complete DFA for
    expressions the derivatives do not cover."""

    __slots__ = ("start", "shortest", "terms", "dfa")

    def __init__(self, start: int, shortest: bool, terms: TermTable | None, dfa: ByteDFA | None) -> None:
        self.start, self.shortest, self.terms, self.dfa = start, shortest, terms, dfa

    def accepting(self, q: int) -> bool:
        if self.dfa is not None:
            return bool(self.dfa.accepting[q])
        assert self.terms is not None
        return self.terms.nullable[q]

    def row(self, q: int, reps: list[int]) -> list[int]:
        """Next state (``-1``: dead) on each byte of ``reps``."""
        if self.dfa is not None:
            return self.dfa.table[q, reps].tolist()
        terms = self.terms
        assert terms is not None
        if self.shortest and terms.nullable[q]:
            return [-1] * len(reps)
        cls, local = terms.local_classes(q)
        outs = [terms.derive(q, b) for b in local]
        outs = [-1 if o == EMPTY else o for o in outs]
        return [outs[cls[b]] for b in reps]

    def step(self, q: int, byte: int) -> int:
        """Next state, or ``-1`` (dead)."""
        if self.dfa is not None:
            return int(self.dfa.table[q, byte])
        terms = self.terms
        assert terms is not None
        if self.shortest and terms.nullable[q]:
            return -1
        nxt = terms.derive(q, byte)
        return -1 if nxt == EMPTY else nxt


def _terminal_automata(tables: GrammarTables, dfas: list[ByteDFA] | None) -> tuple[list[_Terminal], TermTable]:
    terms = TermTable()
    out = []
    for i, term in enumerate(tables.terminals):
        shortest = has_lazy_quantifier(term.regex)
        auto = None
        if dfas is None:
            try:
                root = terms.from_regex(prepare_regex(term.regex))
            except NotLazy:
                root = -1
            if root >= 0 and terms.depth[root] <= MAX_DEPTH:
                if terms.nullable[root]:
                    raise GrammarError(f"terminal {term.name} matches the empty string; terminals must "
                                       "consume at least one character")
                auto = _Terminal(root, shortest, terms, None)
        if auto is None:
            dfa = dfas[i] if dfas is not None else compile_regex(term.regex, name=term.name, shortest=shortest)
            if dfa.accepting[0]:
                raise GrammarError(f"terminal {term.name} matches the empty string; terminals must "
                                   "consume at least one character")
            auto = _Terminal(0, False, None, dfa)
        out.append(auto)
    return out, terms


def _byte_classes(automata: list[_Terminal], terms: TermTable) -> tuple[np.ndarray, list[int]]:
    """Bytes that every terminal treats alike share a class; returns the class of each byte
    and one representative byte per class."""
    columns: list[np.ndarray] = []
    masks = sorted(terms.masks)
    if masks:
        bits = np.array([[m >> b & 1 for b in range(256)] for m in masks], dtype=np.int32)
        columns.append(bits)
    columns += [a.dfa.table for a in automata if a.dfa is not None]
    if not columns:
        return np.zeros(256, dtype=np.int32), [0]
    stacked = np.concatenate(columns, axis=0)
    _, first, inverse = np.unique(stacked.T, axis=0, return_index=True, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32), [int(b) for b in first]


class LexerTables:
    """The combined lexing automaton, built on demand (picklable).

    Attributes
    ----------
    trans
        ``int32 [states, 256]`` next state; ``0`` is the dead state (it loops on itself). Rows
        of states not yet expanded are zero: call :meth:`ensure` before reading them.
    winner
        ``int32 [states]``: the terminal a lexeme ending here is, or ``-1`` (not accepting).
    liveset
        ``int32 [states]``: index into :attr:`livesets`, the terminals still possible.
    livesets
        Distinct sets of live terminals.
    context_start
        ``int32 [contexts]``: start state of each context.
    state_context
        ``int32 [parser states]``: context of each LALR state.
    ignored
        ``bool [terminals]``.
    is_start
        ``bool [states]``: whether a state is a context's start (no byte of the lexeme yet).
    byte_class
        ``int32 [256]``: bytes of one class behave alike in every terminal.
    """

    def __init__(self, tables: GrammarTables, dfas: list[ByteDFA] | None = None) -> None:
        self.automata, self.terms = _terminal_automata(tables, dfas)
        terms = tables.terminals
        self.rank = [(-t.priority, 0 if t.is_string else 1, i) for i, t in enumerate(terms)]
        self.byte_class, self.reps = _byte_classes(self.automata, self.terms)
        self.ignored = np.array([t.ignored for t in terms], dtype=bool)
        self.contexts: list[tuple[int, ...]] = []
        context_of: dict[tuple[int, ...], int] = {}
        self.state_context = np.zeros(len(tables.action), dtype=np.int32)
        for s in range(len(tables.action)):
            ctx = tables.context(s)
            cid = context_of.get(ctx)
            if cid is None:
                cid = context_of[ctx] = len(self.contexts)
                self.contexts.append(ctx)
            self.state_context[s] = cid
        cap = 64
        self._trans = np.zeros((cap, 256), dtype=np.int32)
        self._winner = np.full(cap, -1, dtype=np.int32)
        self._liveset = np.zeros(cap, dtype=np.int32)
        self._is_start = np.zeros(cap, dtype=bool)
        self._expanded = np.zeros(cap, dtype=bool)
        self._expanded[0] = True
        self.winner_list: list[int] = [-1]
        self.liveset_list: list[int] = [0]
        self.rows: list[list[int] | None] = [[0] * 256]
        self._pairs: list[tuple[int, ...]] = [()]
        self._ids: dict[object, int] = {}
        self.livesets: list[frozenset[int]] = [frozenset()]
        self._liveset_ids: dict[frozenset[int], int] = {frozenset(): 0}
        self._n = 1
        self.lock = threading.RLock()
        self.context_start = np.zeros(len(self.contexts), dtype=np.int32)
        for cid, ctx in enumerate(self.contexts):
            pairs = tuple(x for t in ctx for x in (t, self.automata[t].start))
            self.context_start[cid] = self._new(("start", cid), pairs, True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()

    # -- views -------------------------------------------------------------------------------

    @property
    def num_states(self) -> int:
        """Number of automaton states created so far (the dead state included)."""
        return self._n

    @property
    def num_expanded(self) -> int:
        """Number of states whose transitions were computed."""
        return int(self._expanded[:self._n].sum())

    @property
    def trans(self) -> np.ndarray:
        return self._trans[:self._n]

    @property
    def trans_flat(self) -> np.ndarray:
        """:attr:`trans` as one flat array (``state * 256 + byte``)."""
        return self._trans[:self._n].reshape(-1)

    @property
    def winner(self) -> np.ndarray:
        return self._winner[:self._n]

    @property
    def liveset(self) -> np.ndarray:
        return self._liveset[:self._n]

    @property
    def is_start(self) -> np.ndarray:
        return self._is_start[:self._n]

    def start_for(self, parser_state: int) -> int:
        """The start state of the lexer in LALR state ``parser_state``."""
        return int(self.context_start[self.state_context[parser_state]])

    # -- construction ----------------------------------------------------------------------------

    def _new(self, key: object, pairs: tuple[int, ...], start: bool) -> int:
        sid = self._n
        if sid >= MAX_STATES:
            raise GrammarError(f"the grammar's lexer needs more than {MAX_STATES} states; "
                               "simplify its terminals")
        if sid == self._trans.shape[0]:
            cap = 2 * sid
            self._trans = np.concatenate([self._trans, np.zeros_like(self._trans)])
            self._winner = np.concatenate([self._winner, np.full(sid, -1, dtype=np.int32)])
            self._liveset = np.concatenate([self._liveset, np.zeros(sid, dtype=np.int32)])
            self._is_start = np.concatenate([self._is_start, np.zeros(sid, dtype=bool)])
            self._expanded = np.concatenate([self._expanded, np.zeros(sid, dtype=bool)])
            assert self._trans.shape[0] == cap
        self._ids[key] = sid
        self._pairs.append(pairs)
        live = frozenset(pairs[0::2])
        lid = self._liveset_ids.get(live)
        if lid is None:
            lid = self._liveset_ids[live] = len(self.livesets)
            self.livesets.append(live)
        won = -1
        if not start:
            acc = [pairs[k] for k in range(0, len(pairs), 2) if self.automata[pairs[k]].accepting(pairs[k + 1])]
            if acc:
                won = min(acc, key=self.rank.__getitem__)
        self._liveset[sid] = lid
        self._winner[sid] = won
        self._is_start[sid] = start
        self.winner_list.append(won)
        self.liveset_list.append(lid)
        self.rows.append(None)
        self._n = sid + 1
        return sid

    def expand(self, sid: int) -> list[int]:
        """Compute (once) the transitions out of state ``sid``; returns its row."""
        row = self.rows[sid]
        if row is not None:
            return row
        with self.lock, self.terms.lock:
            row = self.rows[sid]
            if row is not None:
                return row
            pairs = self._pairs[sid]
            automata, reps = self.automata, self.reps
            terms = pairs[0::2]
            rows = [automata[t].row(q, reps) for t, q in zip(terms, pairs[1::2])]
            by_class = []
            # classes with the same successor in every terminal lead to one state: look
            # each distinct column up once
            done: dict[tuple[int, ...], int] = {}
            for column in zip(*rows) if rows else [()] * len(reps):
                j = done.get(column)
                if j is None:
                    key = tuple(x for t, q in zip(terms, column) if q >= 0 for x in (t, q))
                    j = self._ids.get(key, -1) if key else 0
                    if j < 0:
                        j = self._new(key, key, False)
                    done[column] = j
                by_class.append(j)
            full = np.array(by_class, dtype=np.int32)[self.byte_class]
            self._trans[sid] = full
            self._expanded[sid] = True
            row = full.tolist()
            self.rows[sid] = row
            return row

    def ensure(self, states: np.ndarray) -> None:
        """Expand every state in ``states`` (an integer array) not expanded yet."""
        if not states.size:
            return
        todo = states[~self._expanded[states]]
        if todo.size:
            for s in np.unique(todo).tolist():
                self.expand(s)

    def expand_all(self, limit: int) -> bool:
        """Expand every reachable state, unless there are more than ``limit``; returns whether
        the automaton is complete."""
        queue = deque(range(1, self._n))
        seen = set(queue)
        while queue:
            if self._n > limit:
                return False
            row = self.expand(queue.popleft())
            for j in set(row):
                if j and j not in seen:
                    seen.add(j)
                    queue.append(j)
        return self._n <= limit


def build_lexer(tables: GrammarTables, dfas: list[ByteDFA] | None = None) -> LexerTables:
    """The lexing automaton of a grammar (see the module docstring); only the start states of
    the contexts exist until :meth:`LexerTables.ensure` or :meth:`LexerTables.expand_all`."""
    return LexerTables(tables, dfas)
