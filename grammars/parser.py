"""lark grammars to LALR(1) tables, and an incremental parser over interned stacks.

:func:`load_grammar` runs lark once to parse the grammar text, resolve ``%import`` and
``%ignore`` and build its LALR(1) parse table, then keeps only plain data (terminal patterns,
integer action and goto tables), which pickles and loads fast.

:class:`StackStore` drives those tables. A parser stack is an interned persistent list: stack
``i`` is ``(parent[i], state[i])``, so a stack is one integer, forking is free, equal stacks
are the same integer (a good memo key) and pushing allocates only new suffixes. Feeding a
terminal (reductions, then the shift) is memoised per ``(stack, terminal)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from decodekit.grammars.errors import GrammarError, GrammarNotLALRError, GrammarSyntaxError, syntax_error

END = "$END"

#: parser state of the base of a truncated stack (see :meth:`StackStore.truncate`)
BOTTOM = -2


class StackTooShallow(Exception):
    """An operation on a truncated stack needed a state below its known top part."""


@dataclass(frozen=True)
class Terminal:
    """One terminal of a grammar, as lark compiled it.

    Attributes
    ----------
    name
        lark's name (anonymous string terminals get names such as ``LBRACE``).
    regex
        Its pattern as a Python regular expression (flags inlined).
    priority
        lark's terminal priority (higher wins).
    is_string
        Whether it was written as a string literal.
    max_width, value_len
        lark's ordering keys between equal priorities.
    ignored
        Whether ``%ignore`` skips it.
    """

    name: str
    regex: str
    priority: int
    is_string: bool
    max_width: int
    value_len: int
    ignored: bool


@dataclass
class GrammarTables:
    """Plain-data form of a compiled lark grammar (picklable).

    Attributes
    ----------
    terminals
        Terminals in lark's lexing order (see :meth:`rank`).
    action
        Per parser state: terminal id -> code; ``code >= 0`` shifts to state ``code``,
        ``code < 0`` reduces rule ``~code``. The end of input has id ``len(terminals)``.
    goto
        Per parser state: rule origin id -> state.
    rule_len, rule_lhs
        Per rule: number of symbols on the right, origin id.
    start_state, end_state
        lark's start state and the state reached when the start symbol is accepted.
    """

    terminals: list[Terminal]
    action: list[dict[int, int]]
    goto: list[dict[int, int]]
    rule_len: list[int]
    rule_lhs: list[int]
    start_state: int
    end_state: int
    text_hash: str = ""

    @property
    def end_id(self) -> int:
        """Terminal id of the end of input."""
        return len(self.terminals)

    def context(self, state: int) -> tuple[int, ...]:
        """Terminals lark's contextual lexer tries in ``state``: those with an action, plus
        the ignored ones."""
        keys = {t for t in self.action[state] if t != self.end_id}
        keys.update(i for i, t in enumerate(self.terminals) if t.ignored)
        return tuple(sorted(keys))


_LARK_LOCK = threading.Lock()


def load_grammar(text: str, start: str = "start") -> GrammarTables:
    """Parse a lark grammar and build its LALR(1) tables.

    Raises
    ------
    GrammarSyntaxError
        On a syntax error (with line and column) or an undefined name.
    GrammarNotLALRError
        If the grammar has LALR(1) conflicts that lark would only handle with Earley.
    """
    import lark
    import lark.lexer
    from lark.exceptions import GrammarError as LarkGrammarError
    from lark.exceptions import LarkError, UnexpectedInput

    with _LARK_LOCK:
        # lark checks terminal collisions with interegular when it is installed, only to log
        # warnings; it costs seconds on the first grammar of a process, so it is skipped.
        saved = lark.lexer.has_interegular
        lark.lexer.has_interegular = False
        try:
            parser = lark.Lark(text, parser="lalr", lexer="contextual", start=start)
        except UnexpectedInput as exc:
            msg = str(exc).split("\n")[0].rstrip(".")
            raise GrammarSyntaxError(f"invalid lark grammar: {msg}", getattr(exc, "line", None),
                                     getattr(exc, "column", None)) from None
        except LarkGrammarError as exc:
            msg = str(exc)
            if "collision" in msg.lower() or "conflict" in msg.lower():
                raise GrammarNotLALRError(
                    "the grammar is not LALR(1) (lark would need its Earley parser, which cannot "
                    f"constrain decoding token by token): {msg.strip()}; rewrite the rules to remove "
                    "the conflict, e.g. by factoring common prefixes or using terminal priorities") from None
            raise syntax_error(text, msg) from None
        except LarkError as exc:
            raise syntax_error(text, str(exc)) from None
        finally:
            lark.lexer.has_interegular = saved
    return _tables(parser, start)


def _tables(parser: object, start: str) -> GrammarTables:
    from lark.lexer import PatternStr

    lark_terms = list(parser.terminals)  # type: ignore[attr-defined]
    ignored = set(parser.ignore_tokens)  # type: ignore[attr-defined]
    # lark's lexing order: priority, then longer max width, then longer pattern, then name
    lark_terms.sort(key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
    terminals = [Terminal(t.name, t.pattern.to_regexp(), int(t.priority), isinstance(t.pattern, PatternStr),
                          int(min(t.pattern.max_width, 2 ** 31)), len(t.pattern.value), t.name in ignored)
                 for t in lark_terms]
    term_id = {t.name: i for i, t in enumerate(terminals)}
    term_id[END] = len(terminals)
    table = parser.parser.parser.parser.parse_table  # type: ignore[attr-defined]
    rule_ids: dict[object, int] = {}
    nonterms: dict[str, int] = {}
    rule_len: list[int] = []
    rule_lhs: list[int] = []
    n_states = max(table.states) + 1
    action: list[dict[int, int]] = [{} for _ in range(n_states)]
    goto: list[dict[int, int]] = [{} for _ in range(n_states)]
    for state, acts in table.states.items():
        for sym, (act, arg) in acts.items():
            if act.name == "Shift":
                if sym in term_id:
                    action[state][term_id[sym]] = int(arg)
                else:
                    goto[state][nonterms.setdefault(sym, len(nonterms))] = int(arg)
            else:
                rid = rule_ids.get(arg)
                if rid is None:
                    rid = rule_ids[arg] = len(rule_len)
                    rule_len.append(len(arg.expansion))
                    rule_lhs.append(nonterms.setdefault(arg.origin.name, len(nonterms)))
                if sym not in term_id:
                    raise GrammarError(f"unexpected reduce action on non-terminal {sym!r}")
                action[state][term_id[sym]] = ~rid
    return GrammarTables(terminals, action, goto, rule_len, rule_lhs,
                         int(table.start_states[start]), int(table.end_states[start]))


@dataclass
class StackStore:
    """Interned LALR stacks with memoised parser operations (see the module docstring).

    Stack id ``0`` is the initial stack ``[start_state]``.
    """

    tables: GrammarTables
    parent: list[int] = field(default_factory=list)
    state: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    _intern: dict[tuple[int, int], int] = field(default_factory=dict)
    _feed: dict[int, int] = field(default_factory=dict)
    _end: dict[int, bool] = field(default_factory=dict)
    _viable: dict[int, frozenset[int]] = field(default_factory=dict)
    _truncated: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.n_terms = self.tables.end_id + 1
        self.push(-1, self.tables.start_state)
        #: base of truncated stacks: its state is unknown (reading it raises StackTooShallow)
        self.base = self.push(-1, BOTTOM)

    def truncate(self, sid: int, keep: int) -> int:
        """Stack ``sid`` with only its top ``keep`` states, on the unknown base.

        Operations on the result raise :class:`StackTooShallow` instead of reading below
        those states; whatever they return without raising holds for every stack with the
        same top states (the mask store shares results that way).
        """
        key = (sid, keep)
        hit = self._truncated.get(key)
        if hit is not None:
            return hit
        top = []
        cur = sid
        for _ in range(keep):
            top.append(self.state[cur])
            cur = self.parent[cur]
        out = self.base
        for st in reversed(top):
            out = self.push(out, st)
        self._truncated[key] = out
        return out

    def _pop(self, sid: int, n: int) -> int:
        state, parent = self.state, self.parent
        for _ in range(n):
            if state[sid] < 0:
                raise StackTooShallow
            sid = parent[sid]
        if state[sid] < 0:
            raise StackTooShallow
        return sid

    def push(self, sid: int, state: int) -> int:
        """The stack ``sid`` with ``state`` pushed (interned)."""
        key = (sid, state)
        hit = self._intern.get(key)
        if hit is not None:
            return hit
        with self.lock:
            hit = self._intern.get(key)
            if hit is not None:
                return hit
            new = len(self.parent)
            self.parent.append(sid)
            self.state.append(state)
            self.depth.append(1 if sid < 0 else self.depth[sid] + 1)
            self._intern[key] = new
            return new

    def states(self, sid: int) -> list[int]:
        """The parser states of stack ``sid``, bottom first (a truncated stack's base shows as
        ``BOTTOM``)."""
        out = []
        while sid >= 0:
            out.append(self.state[sid])
            sid = self.parent[sid]
        return out[::-1]

    def feed(self, sid: int, term: int) -> int:
        """Stack after the parser consumes terminal ``term`` (reductions, then the shift);
        ``-1`` if the terminal is a syntax error here."""
        key = sid * self.n_terms + term
        hit = self._feed.get(key)
        if hit is not None:
            return hit
        action, goto = self.tables.action, self.tables.goto
        rule_len, rule_lhs = self.tables.rule_len, self.tables.rule_lhs
        cur = sid
        result = -1
        if self.state[cur] < 0:
            raise StackTooShallow
        while True:
            code = action[self.state[cur]].get(term)
            if code is None:
                break
            if code >= 0:
                result = self.push(cur, code)
                break
            rule = ~code
            cur = self._pop(cur, rule_len[rule])
            cur = self.push(cur, goto[self.state[cur]][rule_lhs[rule]])
        self._feed[key] = result
        return result

    def accepts_end(self, sid: int) -> bool:
        """Whether the input may end with stack ``sid`` (the start symbol is complete)."""
        hit = self._end.get(sid)
        if hit is not None:
            return hit
        tables = self.tables
        end = tables.end_id
        cur = sid
        ok = False
        if self.state[cur] < 0:
            raise StackTooShallow
        while True:
            code = tables.action[self.state[cur]].get(end)
            if code is None or code >= 0:
                break
            rule = ~code
            cur = self._pop(cur, tables.rule_len[rule])
            nxt = tables.goto[self.state[cur]][tables.rule_lhs[rule]]
            if nxt == tables.end_state:
                ok = True
                break
            cur = self.push(cur, nxt)
        self._end[sid] = ok
        return ok

    def viable(self, sid: int) -> frozenset[int]:
        """Terminals the parser can consume next from stack ``sid`` (ignored ones included)."""
        hit = self._viable.get(sid)
        if hit is not None:
            return hit
        tables = self.tables
        out = {t for t in tables.action[self.state[sid]] if t != tables.end_id and self.feed(sid, t) >= 0}
        out.update(i for i, t in enumerate(tables.terminals) if t.ignored)
        result = frozenset(out)
        self._viable[sid] = result
        return result
