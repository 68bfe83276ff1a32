"""Regular expressions to byte-level DFAs.

interegular turns a Python regular expression into a finite automaton over *characters*. Token
bytes are UTF-8, and a token may end in the middle of a character, so each character
automaton is rewritten over *bytes*: a transition on a character class becomes the UTF-8 byte
sequences of the characters in that class. The rewrite shares structure: prefixes of UTF-8
sequences whose characters all behave alike collapse into one byte-range chain, so classes
such as ``[^"\\\\]`` cost a handful of states, not one per code point.

The result is a :class:`ByteDFA`: a ``[states, 256]`` transition table (``-1`` = dead), start
state 0, accepting flags, and no state that cannot reach acceptance.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from decodekit.grammars.errors import UnsupportedTerminalError

#: lark's ``common.ESCAPED_STRING`` body: any characters up to an unescaped quote, written with
#: a look-behind; the equivalent without look-behind (a backslash escapes any character but a
#: newline). Used with shortest-match semantics, as lark's lazy quantifiers imply.
_LARK_ESC_INNER = r".*?(?<!\\)(\\\\)*?"
_ESC_INNER_PLAIN = r"(?:[^\\\n]|\\.)*?"

_META = set(".^$*+?{}[]\\|()")


@dataclass
class ByteDFA:
    """A deterministic automaton over bytes.

    Attributes
    ----------
    table
        ``int32 [states, 256]``: next state, or ``-1`` (dead).
    accepting
        ``bool [states]``.
    """

    table: np.ndarray
    accepting: np.ndarray

    @property
    def num_states(self) -> int:
        """Number of states (state 0 is the start)."""
        return int(self.table.shape[0])

    def fullmatch(self, data: bytes) -> bool:
        """Whether ``data`` is in the language."""
        state = 0
        for b in data:
            state = int(self.table[state, b])
            if state < 0:
                return False
        return bool(self.accepting[state])

    def is_prefix(self, data: bytes) -> bool:
        """Whether ``data`` can be extended to a string of the language."""
        state = 0
        for b in data:
            state = int(self.table[state, b])
            if state < 0:
                return False
        return True


def has_lazy_quantifier(regex: str) -> bool:
    """Whether ``regex`` uses a lazy quantifier (``*?``, ``+?``, ``??``, ``{m,n}?``)."""
    i, n, in_class = 0, len(regex), False
    while i < n:
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if regex[i + 1:i + 2] == "^":
                i += 1
            if regex[i + 1:i + 2] == "]":
                i += 1
        elif ch in "*+?}" and regex[i + 1:i + 2] == "?":
            # '(?' is a group prefix, not a quantifier
            if not (ch == "?" and i > 0 and regex[i - 1] == "("):
                return True
        i += 1
    return False


def prepare_regex(regex: str) -> str:
    """Rewrite ``regex`` into the subset interegular parses.

    Replaces lark's escaped-string look-behind idiom and turns ``\\uXXXX`` / ``\\UXXXXXXXX``
    escapes into the characters themselves.
    """
    regex = regex.replace(_LARK_ESC_INNER, _ESC_INNER_PLAIN)
    out: list[str] = []
    i, n, in_class = 0, len(regex), False
    while i < n:
        ch = regex[i]
        if ch == "\\" and i + 1 < n:
            kind = regex[i + 1]
            width = 4 if kind == "u" else 8 if kind == "U" else 0
            digits = regex[i + 2:i + 2 + width]
            if width and len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
                char = chr(int(digits, 16))
                special = (char in "]\\^-") if in_class else (char in _META)
                out.append("\\" + char if special else char)
                i += 2 + width
                continue
            out.append(regex[i:i + 2])
            i += 2
            continue
        if in_class and ch == "]":
            in_class = False
        elif not in_class and ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            for lead in ("^", "]"):
                if regex[i:i + 1] == lead:
                    out.append(lead)
                    i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def compile_regex(regex: str, *, name: str = "", shortest: bool | None = None) -> ByteDFA:
    """Compile a Python regular expression into a trimmed :class:`ByteDFA`.

    Parameters
    ----------
    regex
        The expression (Python ``re`` syntax, the subset interegular supports).
    name
        Terminal name for error messages.
    shortest
        Stop at the first accepting position (no transitions out of accepting states); default:
        when the expression has a lazy quantifier, as lark's ``/.*?/`` idioms mean.

    Raises
    ------
    UnsupportedTerminalError
        If the expression uses a feature with no finite automaton (look-behind, ``\\b``, ...).
    """
    import interegular

    if shortest is None:
        shortest = has_lazy_quantifier(regex)
    source = prepare_regex(regex)
    try:
        fsm = interegular.parse_pattern(source).to_fsm()
    except Exception as exc:
        label = f"terminal {name} " if name else ""
        raise UnsupportedTerminalError(
            f"{label}has the regular expression {regex!r}, which cannot be turned into a finite "
            f"automaton ({type(exc).__name__}: {exc}); rewrite it without look-around, anchors, "
            "word boundaries or back-references") from None
    return fsm_to_bytes(fsm, shortest=shortest)


# -- characters to bytes --------------------------------------------------------------------

# UTF-8 lead bytes: (first lead, last lead, continuation bytes, payload mask, [lo, hi] of the
# first continuation byte for each lead); overlong forms and surrogates excluded.
_LEADS: list[tuple[int, int, int, int, int]] = []
for _b in range(0xC2, 0xE0):
    _LEADS.append((_b, 1, _b & 0x1F, 0x80, 0xBF))
for _b in range(0xE0, 0xF0):
    _lo, _hi = (0xA0, 0xBF) if _b == 0xE0 else (0x80, 0x9F) if _b == 0xED else (0x80, 0xBF)
    _LEADS.append((_b, 2, _b & 0x0F, _lo, _hi))
for _b in range(0xF0, 0xF5):
    _lo, _hi = (0x90, 0xBF) if _b == 0xF0 else (0x80, 0x8F) if _b == 0xF4 else (0x80, 0xBF)
    _LEADS.append((_b, 3, _b & 0x07, _lo, _hi))


class _Utf8Classes:
    """A shared decision structure from UTF-8 byte sequences to automaton symbols.

    A child is ``("L", symbol)`` (a complete character), ``("N", node)`` (an expanded node) or
    ``("U", k, lo, hi, symbol)``: ``k`` more bytes, the first in ``[lo, hi]``, the rest
    continuation bytes, and every character so spelt has ``symbol``.
    """

    def __init__(self, symbol_of: dict[int, int], default: int | None) -> None:
        self.symbol_of = symbol_of
        self.default = default
        self.cps = sorted(cp for cp in symbol_of if cp >= 0x80)
        self.nodes: list[dict[int, tuple[Any, ...]]] = []
        self._dedupe: dict[tuple[Any, ...], int] = {}
        self.root: dict[int, tuple[Any, ...]] = {}
        for b in range(0x80):
            self.root[b] = ("L", symbol_of.get(b, default))
        for lead, k, v, lo, hi in _LEADS:
            self.root[lead] = self._node(v, k, lo, hi)

    def _node(self, v: int, k: int, lo: int, hi: int) -> tuple[Any, ...]:
        shift = 6 * (k - 1)
        first = ((v << 6) | (lo & 0x3F)) << shift
        last = (((v << 6) | (hi & 0x3F)) + 1 << shift) - 1
        a = bisect.bisect_left(self.cps, first)
        z = bisect.bisect_right(self.cps, last)
        if a == z:
            return ("U", k, lo, hi, self.default)
        if z - a == last - first + 1:
            symbols = {self.symbol_of[cp] for cp in self.cps[a:z]}
            if len(symbols) == 1:
                return ("U", k, lo, hi, symbols.pop())
        children: dict[int, tuple[Any, ...]] = {}
        for c in range(lo, hi + 1):
            nv = (v << 6) | (c & 0x3F)
            children[c] = ("L", self.symbol_of.get(nv, self.default)) if k == 1 else \
                self._node(nv, k - 1, 0x80, 0xBF)
        key = tuple(sorted(children.items()))
        nid = self._dedupe.get(key)
        if nid is None:
            nid = len(self.nodes)
            self.nodes.append(children)
            self._dedupe[key] = nid
        return ("N", nid)


def fsm_to_bytes(fsm: Any, *, shortest: bool = False) -> ByteDFA:
    """Rewrite an interegular character FSM over UTF-8 bytes (see the module docstring)."""
    from interegular.fsm import anything_else

    mapping = fsm.alphabet._symbol_mapping
    default = mapping.get(anything_else)
    symbol_of = {ord(ch): sym for ch, sym in mapping.items() if ch is not anything_else}
    classes = _Utf8Classes(symbol_of, default)
    fmap = fsm.map
    finals = set(fsm.finals)

    def delta(s: Any, sym: int | None) -> Any:
        if sym is None:
            return None
        return fmap.get(s, {}).get(sym)

    def follow(s: Any, child: tuple[Any, ...]) -> tuple[Any, ...] | None:
        tag = child[0]
        if tag == "L":
            ns = delta(s, child[1])
            return None if ns is None else ("c", ns)
        if tag == "N":
            return ("n", s, child[1])
        ns = delta(s, child[4])
        return None if ns is None else ("u", ns, child[1], child[2], child[3])

    start = ("c", fsm.initial)
    ids: dict[tuple[Any, ...], int] = {start: 0}
    order: list[tuple[Any, ...]] = [start]
    edges: list[dict[int, int]] = []
    queue = deque([start])
    while queue:
        state = queue.popleft()
        out: dict[int, int] = {}
        edges.append(out)
        tag = state[0]
        if tag == "c" and shortest and state[1] in finals:
            continue
        if tag == "c":
            items = [(b, follow(state[1], child)) for b, child in classes.root.items()]
        elif tag == "n":
            items = [(b, follow(state[1], child)) for b, child in classes.nodes[state[2]].items()]
        else:
            _, target, k, lo, hi = state
            nxt = ("c", target) if k == 1 else ("u", target, k - 1, 0x80, 0xBF)
            items = [(b, nxt) for b in range(lo, hi + 1)]
        for b, nxt in items:
            if nxt is None:
                continue
            j = ids.get(nxt)
            if j is None:
                j = ids[nxt] = len(order)
                order.append(nxt)
                queue.append(nxt)
            out[b] = j
    accepting = [s[0] == "c" and s[1] in finals for s in order]
    return _trim(edges, accepting)


def _trim(edges: list[dict[int, int]], accepting: list[bool]) -> ByteDFA:
    """Drop states that cannot reach acceptance; renumber with the start first."""
    n = len(edges)
    reverse: list[list[int]] = [[] for _ in range(n)]
    for s, out in enumerate(edges):
        for t in out.values():
            reverse[t].append(s)
    live = [False] * n
    queue = deque(s for s in range(n) if accepting[s])
    for s in queue:
        live[s] = True
    while queue:
        t = queue.popleft()
        for s in reverse[t]:
            if not live[s]:
                live[s] = True
                queue.append(s)
    if not live[0]:
        return ByteDFA(np.full((1, 256), -1, dtype=np.int32), np.zeros(1, dtype=bool))
    # breadth-first renumbering of live states reachable from the start
    new = {0: 0}
    order = [0]
    for s in order:
        for t in edges[s].values():
            if live[t] and t not in new:
                new[t] = len(order)
                order.append(t)
    table = np.full((len(order), 256), -1, dtype=np.int32)
    for s in order:
        row = table[new[s]]
        for b, t in edges[s].items():
            if live[t]:
                row[b] = new[t]
    acc = np.array([accepting[s] for s in order], dtype=bool)
    return ByteDFA(table, acc)

