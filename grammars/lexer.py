"""The lexer: every terminal as a byte DFA, combined into one lexing automaton.

Lexing follows lark's contextual lexer: in each parser state only the terminals the parser has
an action for (plus the ``%ignore`` ones) are tried. A lexeme is the longest match (maximal
munch); when several terminals match the same lexeme, the winner is the one lark would pick:
higher priority first, then a string literal over a regular expression, then lark's terminal
order. Terminals written with lazy quantifiers (``/.*?/``, as in ``C_COMMENT``) end at their
first match.

The automaton's states are sets of ``(terminal, terminal DFA state)`` pairs, which do not
depend on the parser state once a lexeme has started, so they are shared by all contexts; each
context (the terminal set of a parser state) only has its own start state. State ``0`` is dead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from decodekit.grammars.automata import ByteDFA, compile_regex
from decodekit.grammars.errors import GrammarError
from decodekit.grammars.parser import GrammarTables

#: Limit on lexer automaton states (a guard against pathological grammars).
MAX_STATES = 200_000


@dataclass
class LexerTables:
    """The combined lexing automaton (plain numpy data, picklable).

    Attributes
    ----------
    trans
        ``int32 [states, 256]`` next state; ``0`` is the dead state (it loops on itself).
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

    trans: np.ndarray
    winner: np.ndarray
    liveset: np.ndarray
    livesets: list[frozenset[int]]
    context_start: np.ndarray
    state_context: np.ndarray
    contexts: list[tuple[int, ...]]
    ignored: np.ndarray
    is_start: np.ndarray
    byte_class: np.ndarray

    @property
    def num_states(self) -> int:
        """Number of automaton states (the dead state included)."""
        return int(self.trans.shape[0])

    def start_for(self, parser_state: int) -> int:
        """The start state of the lexer in LALR state ``parser_state``."""
        return int(self.context_start[self.state_context[parser_state]])


def terminal_dfas(tables: GrammarTables) -> list[ByteDFA]:
    """Compile every terminal's regular expression into a byte DFA."""
    dfas = []
    for term in tables.terminals:
        dfa = compile_regex(term.regex, name=term.name)
        if dfa.accepting[0]:
            raise GrammarError(f"terminal {term.name} matches the empty string; terminals must "
                               "consume at least one character")
        dfas.append(dfa)
    return dfas


def _byte_classes(dfas: list[ByteDFA]) -> tuple[np.ndarray, list[int]]:
    """Bytes that every terminal DFA treats alike share a class; returns the class of each
    byte and one representative byte per class."""
    if not dfas:
        return np.zeros(256, dtype=np.int32), [0]
    stacked = np.concatenate([d.table for d in dfas], axis=0)
    _, first, inverse = np.unique(stacked.T, axis=0, return_index=True, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32), [int(b) for b in first]


def build_lexer(tables: GrammarTables, dfas: list[ByteDFA] | None = None) -> LexerTables:
    """Build the combined lexing automaton of a grammar (see the module docstring)."""
    if dfas is None:
        dfas = terminal_dfas(tables)
    terms = tables.terminals
    # winner ranking: priority, then strings over regexps, then lark's order (= list order)
    rank = {i: (-t.priority, 0 if t.is_string else 1, i) for i, t in enumerate(terms)}
    byte_class, reps = _byte_classes(dfas)
    tabs = [d.table for d in dfas]
    accs = [d.accepting for d in dfas]

    contexts: list[tuple[int, ...]] = []
    context_of: dict[tuple[int, ...], int] = {}
    state_context = np.zeros(len(tables.action), dtype=np.int32)
    for s in range(len(tables.action)):
        ctx = tables.context(s)
        cid = context_of.get(ctx)
        if cid is None:
            cid = context_of[ctx] = len(contexts)
            contexts.append(ctx)
        state_context[s] = cid

    keys: list[object] = ["dead"]
    pairs_of: list[tuple[int, ...]] = [()]
    ids: dict[object, int] = {"dead": 0}
    queue: deque[int] = deque()
    context_start = np.zeros(len(contexts), dtype=np.int32)
    for cid, ctx in enumerate(contexts):
        key = ("start", cid)
        ids[key] = len(keys)
        keys.append(key)
        pairs_of.append(tuple(x for t in ctx for x in (t, 0)))
        context_start[cid] = ids[key]
        queue.append(ids[key])
    rows: dict[int, list[int]] = {0: [0] * len(reps)}
    while queue:
        sid = queue.popleft()
        pairs = pairs_of[sid]
        row = []
        for b in reps:
            nxt = []
            for k in range(0, len(pairs), 2):
                t = pairs[k]
                s2 = tabs[t][pairs[k + 1], b]
                if s2 >= 0:
                    nxt.append(t)
                    nxt.append(int(s2))
            key = tuple(nxt)
            if not key:
                row.append(0)
                continue
            j = ids.get(key)
            if j is None:
                j = ids[key] = len(keys)
                keys.append(key)
                pairs_of.append(key)
                queue.append(j)
                if len(keys) > MAX_STATES:
                    raise GrammarError(f"the grammar's lexer needs more than {MAX_STATES} states; "
                                       "simplify its terminals")
            row.append(j)
        rows[sid] = row
    n = len(keys)
    by_class = np.array([rows[i] for i in range(n)], dtype=np.int32)
    trans = by_class[:, byte_class]
    winner = np.full(n, -1, dtype=np.int32)
    liveset = np.zeros(n, dtype=np.int32)
    livesets: list[frozenset[int]] = [frozenset()]
    liveset_ids: dict[frozenset[int], int] = {frozenset(): 0}
    is_start = np.zeros(n, dtype=bool)
    is_start[context_start] = True
    for i in range(1, n):
        pairs = pairs_of[i]
        live = frozenset(pairs[0::2])
        lid = liveset_ids.get(live)
        if lid is None:
            lid = liveset_ids[live] = len(livesets)
            livesets.append(live)
        liveset[i] = lid
        if not is_start[i]:
            acc = [pairs[k] for k in range(0, len(pairs), 2) if accs[pairs[k]][pairs[k + 1]]]
            if acc:
                winner[i] = min(acc, key=rank.__getitem__)
    ignored = np.array([t.ignored for t in terms], dtype=bool)
    return LexerTables(trans, winner, liveset, livesets, context_start, state_context, contexts,
                       ignored, is_start, byte_class)
