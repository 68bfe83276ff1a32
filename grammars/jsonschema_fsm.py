"""Deterministic automata over regex trees: intersection, difference, and back to a regex.

The JSON Schema converter needs the boolean combinations of regular languages (a ``pattern``
and a length bound together, property names that are none of the declared ones, the
alternatives of a ``oneOf`` that exclude one another, ``not``). This module compiles the trees
of :mod:`decodekit.grammars.jsonschema_regex` to DFAs over character intervals, combines them,
and turns the result back into a tree.
"""

from __future__ import annotations

from bisect import bisect_right

from .jsonschema_regex import EMPTY, MAX_CODE, NOTHING, AutomatonTooLarge, alt, cat, cset, norm, rep

__all__ = ["DFA", "AutomatonTooLarge", "compile_tree", "product", "minimize", "to_tree",
           "to_greedy_tree", "first_chars"]

MAX_STATES = 20000
MAX_ELIMINATION = 400  # states; larger automata are spelled out as grammar rules instead


class DFA:
    """A partial DFA over code point intervals; state 0 is initial, missing edges are dead.

    Parameters
    ----------
    bounds
        Sorted interval starts, beginning with 0; class ``i`` is
        ``[bounds[i], bounds[i + 1] - 1]``.
    trans
        Per state, a mapping class index -> next state.
    finals
        The accepting states.
    """

    __slots__ = ("bounds", "trans", "finals")

    def __init__(self, bounds: tuple, trans: list, finals) -> None:
        self.bounds = bounds
        self.trans = trans
        self.finals = frozenset(finals)

    def interval(self, cls: int) -> tuple:
        """The code point range of class ``cls``."""
        hi = self.bounds[cls + 1] - 1 if cls + 1 < len(self.bounds) else MAX_CODE
        return self.bounds[cls], hi

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is in the language."""
        state = 0
        for ch in text:
            state = self.trans[state].get(bisect_right(self.bounds, ord(ch)) - 1)
            if state is None:
                return False
        return state in self.finals

    def is_empty(self) -> bool:
        """Whether no string is accepted."""
        return not self.finals


def first_chars(node: tuple) -> tuple:
    """``(ranges, nullable)``: the characters a match can start with; whether it can be empty."""
    kind = node[0]
    if kind == "dfa":
        return norm(node[1].interval(c) for c in node[1].trans[0]), 0 in node[1].finals
    if kind == "lit":
        return ((ord(node[1][0]), ord(node[1][0])),), False
    if kind == "set":
        return node[1], False
    if kind == "rep":
        ranges, nullable = first_chars(node[1])
        return ranges, nullable or node[2] == 0
    if kind == "alt":
        parts = [first_chars(p) for p in node[1]]
        return norm(r for rs, _ in parts for r in rs), any(n for _, n in parts)
    out: list = []
    for p in node[1]:
        ranges, nullable = first_chars(p)
        out.extend(ranges)
        if not nullable:
            return norm(out), False
    return norm(out), True


def _bounds_of(node: tuple, out: set) -> None:
    kind = node[0]
    if kind == "lit":
        for ch in node[1]:
            out.add(ord(ch))
            out.add(ord(ch) + 1)
    elif kind == "set":
        for lo, hi in node[1]:
            out.add(lo)
            out.add(hi + 1)
    elif kind in ("cat", "alt"):
        for p in node[1]:
            _bounds_of(p, out)
    elif kind == "dfa":
        out.update(node[1].bounds)
    else:
        _bounds_of(node[1], out)


class _NFA:
    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple]] = []

    def new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        if len(self.eps) > 8 * MAX_STATES:
            raise AutomatonTooLarge("regular expression too large to combine")
        return len(self.eps) - 1

    def classes(self, ranges) -> tuple:
        out = []
        for lo, hi in ranges:
            i = bisect_right(self.bounds, lo) - 1
            while i < len(self.bounds) and self.bounds[i] <= hi:
                out.append(i)
                i += 1
        return tuple(out)

    def build(self, node: tuple, start: int) -> int:
        """Add ``node`` from state ``start``; return its end state."""
        kind = node[0]
        if kind == "dfa":
            dfa, end = node[1], self.new()
            ids = [self.new() for _ in dfa.trans]
            self.eps[start].append(ids[0])
            for s, t in enumerate(dfa.trans):
                for c, nxt in t.items():
                    self.edges[ids[s]].append((self.classes((dfa.interval(c),)), ids[nxt]))
                if s in dfa.finals:
                    self.eps[ids[s]].append(end)
            return end
        if kind == "lit":
            for ch in node[1]:
                nxt = self.new()
                self.edges[start].append((self.classes(((ord(ch), ord(ch)),)), nxt))
                start = nxt
            return start
        if kind == "set":
            nxt = self.new()
            self.edges[start].append((self.classes(node[1]), nxt))
            return nxt
        if kind == "cat":
            for p in node[1]:
                start = self.build(p, start)
            return start
        if kind == "alt":
            end = self.new()
            for p in node[1]:
                s = self.new()
                self.eps[start].append(s)
                self.eps[self.build(p, s)].append(end)
            return end
        inner, lo, hi = node[1], node[2], node[3]
        for _ in range(lo):
            start = self.build(inner, start)
        if hi is None:
            s = self.new()
            self.eps[start].append(s)
            self.eps[self.build(inner, s)].append(s)
            return s
        end = self.new()
        for _ in range(hi - lo):
            self.eps[start].append(end)
            start = self.build(inner, start)
        self.eps[start].append(end)
        return end


def compile_tree(node: tuple) -> DFA:
    """Determinise a regex tree (subset construction) and minimise it."""
    if node[0] == "dfa":
        return node[1]
    pts = {0}
    _bounds_of(node, pts)
    bounds = tuple(sorted(p for p in pts if p <= MAX_CODE))
    nfa = _NFA(bounds)
    start = nfa.new()
    end = nfa.build(node, start)

    single: dict = {}

    def closure_of(state: int) -> frozenset:
        got = single.get(state)
        if got is None:
            seen, stack = {state}, [state]
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            got = single[state] = frozenset(seen)
        return got

    def closure(states) -> frozenset:
        out: set = set()
        for s in states:
            if s not in out:
                out |= closure_of(s)
        return frozenset(out)

    first = closure([start])
    ids, trans, finals, todo = {first: 0}, [{}], set(), [first]
    while todo:
        cur = todo.pop()
        sid = ids[cur]
        if end in cur:
            finals.add(sid)
        moves: dict[int, set] = {}
        for s in cur:
            for classes, t in nfa.edges[s]:
                for c in classes:
                    moves.setdefault(c, set()).add(t)
        for c, targets in moves.items():
            nxt = closure(targets)
            if nxt not in ids:
                ids[nxt] = len(trans)
                trans.append({})
                todo.append(nxt)
                if len(trans) > MAX_STATES:
                    raise AutomatonTooLarge("regular expression too large to combine")
            trans[sid][c] = ids[nxt]
    return minimize(DFA(bounds, trans, finals))


def _refine(dfa: DFA, bounds: tuple) -> list:
    remap = [bisect_right(dfa.bounds, b) - 1 for b in bounds]
    return [{j: t[remap[j]] for j in range(len(bounds)) if remap[j] in t} for t in dfa.trans]


def product(a: DFA, b: DFA, op: str) -> DFA:
    """Combine two DFAs: ``op`` is ``"and"``, ``"or"`` or ``"diff"`` (a and not b)."""
    bounds = tuple(sorted(set(a.bounds) | set(b.bounds)))
    ta, tb = _refine(a, bounds), _refine(b, bounds)
    ids, trans, finals, todo = {(0, 0): 0}, [{}], set(), [(0, 0)]
    while todo:
        p, q = pair = todo.pop()
        sid = ids[pair]
        fa, fb = p is not None and p in a.finals, q is not None and q in b.finals
        if (op == "and" and fa and fb) or (op == "or" and (fa or fb)) or (
                op == "diff" and fa and not fb):
            finals.add(sid)
        classes = set(ta[p]) if p is not None else set()
        if op == "or" and q is not None:
            classes |= set(tb[q])
        for c in classes:
            np_ = ta[p].get(c) if p is not None else None
            nq = tb[q].get(c) if q is not None else None
            if np_ is None and (op != "or" or nq is None):
                continue
            if op == "and" and nq is None:
                continue
            nxt = (np_, nq)
            if nxt not in ids:
                ids[nxt] = len(trans)
                trans.append({})
                todo.append(nxt)
                if len(trans) > MAX_STATES:
                    raise AutomatonTooLarge("combined automaton too large")
            trans[sid][c] = ids[nxt]
    return minimize(DFA(bounds, trans, finals))


def minimize(dfa: DFA) -> DFA:
    """Remove dead states and merge equivalent ones (Hopcroft's algorithm)."""
    n = len(dfa.trans)
    rev: list[set] = [set() for _ in range(n)]
    for s, t in enumerate(dfa.trans):
        for nxt in t.values():
            rev[nxt].add(s)
    live, stack = set(dfa.finals), list(dfa.finals)
    while stack:
        for p in rev[stack.pop()]:
            if p not in live:
                live.add(p)
                stack.append(p)
    if 0 not in live:
        return DFA((0,), [{}], ())
    sink = n  # every missing or dead edge goes to the sink
    inv: dict = {}
    for s in live:
        for c, t in dfa.trans[s].items():
            inv.setdefault(c, {}).setdefault(t if t in live else sink, []).append(s)
    classes = list(inv)
    for c in classes:
        into = {s for targets in inv[c].values() for s in targets}
        inv[c].setdefault(sink, []).extend(s for s in live if s not in into)
        inv[c][sink].append(sink)
    finals = set(dfa.finals) & live
    others = (live - finals) | {sink}
    blocks = [finals, others] if others else [finals]
    where = {s: i for i, b in enumerate(blocks) for s in b}
    work = [0 if len(finals) <= len(others) else 1] if len(blocks) == 2 else [0]
    while work:
        a = blocks[work.pop()]
        for c in classes:
            x = set()
            for t in a:
                x.update(inv[c].get(t, ()))
            touched: dict = {}
            for s in x:
                touched.setdefault(where[s], set()).add(s)
            for bi, part in touched.items():
                block = blocks[bi]
                if len(part) == len(block):
                    continue
                rest = block - part
                blocks[bi] = part
                blocks.append(rest)
                ni = len(blocks) - 1
                for s in rest:
                    where[s] = ni
                if bi in work:
                    work.append(ni)
                else:
                    work.append(bi if len(part) <= len(rest) else ni)
    order = {where[0]: 0}
    for s in sorted(live):
        order.setdefault(where[s], len(order))
    trans = [dict() for _ in order]
    for s in live:
        trans[order[where[s]]] = {c: order[where[t]] for c, t in dfa.trans[s].items() if t in live}
    return DFA(dfa.bounds, trans, {order[where[s]] for s in finals})


def _label(dfa: DFA, classes) -> tuple:
    return cset(norm(dfa.interval(c) for c in classes))


def _union(*parts) -> tuple:
    """Alternation that merges single-character alternatives into one set."""
    sets, rest = [], []
    for p in parts:
        for q in (p[1] if p[0] == "alt" else (p,)):
            if q[0] == "set":
                sets.extend(q[1])
            elif q[0] == "lit" and len(q[1]) == 1:
                sets.append((ord(q[1]), ord(q[1])))
            else:
                rest.append(q)
    return alt(*(([cset(sets)] if sets else []) + rest))


def _tree_size(node: tuple) -> int:
    if node[0] in ("lit", "set"):
        return 1
    if node[0] == "rep":
        return 1 + _tree_size(node[1])
    return 1 + sum(_tree_size(p) for p in node[1])


def to_tree(dfa: DFA, budget: int = 4000) -> tuple:
    """A regex tree for the DFA's language (state elimination).

    Raises
    ------
    AutomatonTooLarge
        When an intermediate expression grows past ``budget`` nodes.
    """
    if dfa.is_empty():
        return NOTHING
    if len(dfa.trans) > MAX_ELIMINATION:
        raise AutomatonTooLarge("too many states for a regular expression")
    try:
        return _eliminate(dfa, budget)
    except RecursionError:
        raise AutomatonTooLarge("regular expression nests too deeply") from None


def _chains(dfa: DFA, groups: list) -> dict:
    """Runs ``c1 -> c2 -> ... -> cm`` of one label, ending the automaton (or in a self-loop of
    that label), that a counted repetition can replace: ``{c1: (tree, [c2..cm])}``."""
    incoming = [0] * len(groups)
    for s, g in enumerate(groups):
        for t in g:
            if t != s:
                incoming[t] += 1
    out, used = {}, set()
    for s, g in enumerate(groups):
        if s in used or len(g) != 1 or s in g:
            continue
        label = next(iter(g.values()))
        seq, cur = [s], s
        while len(groups[cur]) == 1:
            (t, cls), = groups[cur].items()
            if t == cur or cls != label or incoming[t] != 1 or t in seq:
                break
            seq.append(t)
            cur = t
        end = groups[cur]
        loop = end == {cur: label}
        finals = [x in dfa.finals for x in seq]
        if (end and not loop) or len(seq) < 3 or True not in finals:
            continue
        k = finals.index(True)
        if not all(finals[k:]):
            continue
        out[s] = (rep(_label(dfa, label), k, None if loop else len(seq) - 1), seq[1:])
        used.update(seq)
    return out


def _eliminate(dfa: DFA, budget: int) -> tuple:
    start, final = "S", "F"
    groups: list = []
    for t in dfa.trans:
        g: dict = {}
        for c, nxt in sorted(t.items()):
            g.setdefault(nxt, []).append(c)
        groups.append({k: tuple(v) for k, v in g.items()})
    chains = _chains(dfa, groups)
    dropped = {x for _, rest in chains.values() for x in rest}
    edges: dict = {(start, 0): EMPTY}
    for f in dfa.finals:
        if f not in dropped and f not in chains:
            edges[(f, final)] = EMPTY
    for s, g in enumerate(groups):
        if s in dropped:
            continue
        if s in chains:
            edges[(s, final)] = chains[s][0]
            continue
        for nxt, classes in g.items():
            edges[(s, nxt)] = _label(dfa, classes)
    out_: dict = {}
    in_: dict = {}
    for (p, q) in edges:
        out_.setdefault(p, set()).add(q)
        in_.setdefault(q, set()).add(p)
    remaining = set(range(len(dfa.trans))) - dropped
    while remaining:
        k = min(remaining, key=lambda s: (len(in_.get(s, ())) * len(out_.get(s, ())), s))
        remaining.discard(k)
        loop = edges.pop((k, k), None)
        star = rep(loop, 0, None) if loop is not None else EMPTY
        preds = [p for p in in_.get(k, ()) if p != k]
        succs = [q for q in out_.get(k, ()) if q != k]
        for p in preds:
            for q in succs:
                new = cat(edges[(p, k)], star, edges[(k, q)])
                new = _union(edges[(p, q)], new) if (p, q) in edges else new
                if _tree_size(new) > budget:
                    raise AutomatonTooLarge("no regular expression of reasonable size found")
                edges[(p, q)] = new
                out_.setdefault(p, set()).add(q)
                in_.setdefault(q, set()).add(p)
        for p in preds:
            del edges[(p, k)]
            out_[p].discard(k)
        for q in succs:
            del edges[(k, q)]
            in_[q].discard(k)
        out_.pop(k, None)
        in_.pop(k, None)
    return edges.get((start, final), NOTHING)


def to_greedy_tree(dfa: DFA) -> tuple | None:
    """A regex tree whose leftmost-first matching (Python ``re``) finds the longest match.

    Only for DFAs whose only cycles are self-loops (numbers); returns ``None`` otherwise.
    """
    memo: dict = {}
    active: set = set()

    def build(s: int):
        if s in memo:
            return memo[s]
        if s in active:
            return None
        active.add(s)
        groups: dict = {}
        for c, nxt in sorted(dfa.trans[s].items()):
            groups.setdefault(nxt, []).append(c)
        loop = groups.pop(s, None)
        parts = []
        for nxt, classes in groups.items():
            sub = build(nxt)
            if sub is None:
                return None
            parts.append(cat(_label(dfa, classes), sub))
        if s in dfa.finals:
            parts.append(EMPTY)
        active.discard(s)
        memo[s] = cat(rep(_label(dfa, loop), 0, None) if loop else EMPTY, alt(*parts))
        return memo[s]

    return NOTHING if dfa.is_empty() else build(0)
