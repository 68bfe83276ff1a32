"""Objects and arrays of the JSON Schema converter: shapes, and their LALR-friendly rules.

A node of the converter is a union of *shapes*. An object shape lists its declared properties in
order (each required or optional, with the node of its value) and the keys allowed after them
(additional and pattern properties); an array shape lists its prefix items and the node of the
rest. The objects (or arrays) of a union are turned into one deterministic automaton whose
events are keys (or items) and whose states are sets of shape positions; each automaton state
becomes a rule. Determinism keeps the grammar unambiguous, which LALR(1) needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from .jsonschema_fsm import compile_tree, product, to_tree
from .jsonschema_regex import alt, lit, not_in, render, string_of
from .jsonschema_scalars import number_tree

MAX_STATES = 3000


@dataclass(eq=False)
class ObjectShape:
    """Objects: declared ``props`` as ``(name, node or None, required)`` in order, then
    ``extras`` as ``(key, node)``: ``key`` is a content tree of the keys, or ``None`` for
    every undeclared key. ``witnesses``: ``(key, (schema, path))`` pairs, each requiring some
    key matching the content tree ``key`` whose value also matches ``schema``."""

    props: list
    extras: list
    min_props: int = 0
    max_props: int | None = None
    tag: tuple | None = None
    witnesses: list = field(default_factory=list)
    index: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {name: i for i, (name, _, _) in enumerate(self.props)}
        self.first_required = [len(self.props)] * (len(self.props) + 1)
        for i in range(len(self.props) - 1, -1, -1):
            self.first_required[i] = i if self.props[i][2] else self.first_required[i + 1]
        self.cap = (self.max_props + 1) if self.max_props is not None else self.min_props

    def extra_for(self, name: str):
        """The node for an undeclared key ``name`` (``None``: not allowed)."""
        for key, node in self.extras:
            if key is None or matches(key, name):
                return node
        return None

    def value_for(self, name: str):
        """The node a property ``name`` must match (``None``: the key is not allowed)."""
        if name in self.index:
            return self.props[self.index[name]][1]
        return self.extra_for(name)


@dataclass(eq=False)
class ArrayShape:
    """Arrays: ``prefix`` nodes, then ``items`` (``None``: no more items), and length bounds."""

    prefix: list
    items: object
    min_items: int = 0
    max_items: int | None = None
    tag: tuple | None = None
    contains: tuple | None = None  # (prefix (match, other) pairs, rest pair, min, max count)

    def __post_init__(self) -> None:
        self.loop = max(len(self.prefix), self.min_items)
        if self.contains is not None:
            self.loop = max(self.loop, len(self.contains[0]))

    def node_at(self, i: int):
        """The node of item ``i`` (``None``: no such item)."""
        return self.prefix[i] if i < len(self.prefix) else self.items


@lru_cache(maxsize=1024)
def _compiled(tree: tuple) -> re.Pattern:
    return re.compile(render(tree), re.S)


def matches(tree: tuple, name: str) -> bool:
    """Whether the string content tree ``tree`` matches ``name``."""
    return _compiled(tree).fullmatch(name) is not None


# ---------------------------------------------------------------------------- disjointness

KINDS = ("null", "boolean", "number", "string", "object", "array")


def inexact_kinds(node) -> frozenset:
    """The kinds of values for which ``node`` may reject the json.dumps text of a valid value:
    objects whose keys come in another order, integers written as floats, formats. A shadow
    may only trust a node's rejections outside these kinds.

    A fixed point over the nodes reachable from ``node`` (recursion is fine: a text that shows a
    node inexact is finite); nodes still being built count as inexact in every kind.
    """
    if node is None:
        return frozenset()
    if node.exact is not None:
        return node.exact
    graph: dict = {}
    todo = [node]
    while todo:
        n = todo.pop()
        if id(n) in graph:
            continue
        local, in_objects, in_arrays = set(KINDS) if n.pending else set(n.inexact), [], []
        for s in n.objects:
            if sum(1 for _, c, _ in s.props if c is not None) + (1 if s.extras else 0) > 1 or \
                    s.witnesses:  # (a witness's value nodes are not followed here)
                local.add("object")
            in_objects += [c for _, c, _ in s.props] + [c for _, c in s.extras]
        for s in n.arrays:
            in_arrays += list(s.prefix) + [s.items]
            if s.contains is not None:
                in_arrays += [c for pair in list(s.contains[0]) + [s.contains[1]] for c in pair]
        in_objects = [c for c in in_objects if c is not None]
        in_arrays = [c for c in in_arrays if c is not None]
        graph[id(n)] = (n, local, in_objects, in_arrays)
        todo += [c for c in in_objects + in_arrays if c.exact is None and id(c) not in graph]

    def kinds(c) -> set:
        return graph[id(c)][1] if id(c) in graph else c.exact
    changed = True
    while changed:
        changed = False
        for _n, local, in_objects, in_arrays in graph.values():
            for kind, children in (("object", in_objects), ("array", in_arrays)):
                if kind not in local and any(kinds(c) for c in children):
                    local.add(kind)
                    changed = True
    for n, local, _, _ in graph.values():
        if not n.pending:
            n.exact = frozenset(local)
    return frozenset(graph[id(node)][1])


def trusted(conv, node):
    """``node`` widened to accept every value of the kinds where its rejections are unsure."""
    kinds = inexact_kinds(node)
    if node is None or not kinds:
        return node
    if node.pending or len(kinds) == len(KINDS):
        return conv.node([])
    return conv.widen(node, kinds)


def disjoint(a, b, depth: int = 3) -> bool:
    """Whether two nodes provably accept no common value."""
    if a is None or b is None:
        return True
    if a is b or a.pending or b.pending or depth < 0:
        return False
    for kind in set(a.scalars) & set(b.scalars):
        both = product(compile_tree(a.scalars[kind]), compile_tree(b.scalars[kind]), "and")
        if not both.is_empty():
            return False
    for sa in a.objects:
        for sb in b.objects:
            if not _objects_disjoint(sa, sb, depth) and not _objects_disjoint(sb, sa, depth):
                return False
    for sa in a.arrays:
        for sb in b.arrays:
            if not _arrays_disjoint(sa, sb, depth):
                return False
    return True


def _objects_disjoint(sa: ObjectShape, sb: ObjectShape, depth: int) -> bool:
    if sb.max_props is not None and sa.min_props > sb.max_props:
        return True
    for name, node, required in sa.props:
        if required and (node is None or disjoint(node, sb.value_for(name), depth - 1)):
            return True
    return False


def _arrays_disjoint(sa: ArrayShape, sb: ArrayShape, depth: int) -> bool:
    if (sb.max_items is not None and sa.min_items > sb.max_items) or (
            sa.max_items is not None and sb.min_items > sa.max_items):
        return True
    return any(disjoint(sa.node_at(i), sb.node_at(i), depth - 1)
               for i in range(min(sa.min_items, sb.min_items)))


# ---------------------------------------------------------------------------- automata

def accepts_all(conv, shapes: list) -> bool:
    """Whether a node with these object (or array) shapes accepts every object (or array)."""
    anything = conv.node([])

    def universal(s) -> bool:
        if isinstance(s, ObjectShape):
            return not s.props and not s.min_props and s.max_props is None and \
                s.extras == [(None, anything)] and not s.witnesses
        return not s.prefix and s.items is anything and not s.min_items and s.max_items is None

    return any(universal(s) and (s.tag is None or all(
        t.tag is None or t.tag[0] != s.tag[0] or t.tag == s.tag for t in shapes)) for s in shapes)


def _partition(dfas: list) -> list:
    """Split the union of ``dfas`` into disjoint regions: ``[(dfa, {indices})]``."""
    parts: list = []
    for i, d in enumerate(dfas):
        new, rest = [], d
        for region, tags in parts:
            both = product(region, rest, "and")
            if both.is_empty():
                new.append((region, tags))
                continue
            only = product(region, rest, "diff")
            if not only.is_empty():
                new.append((only, tags))
            new.append((both, tags | {i}))
            rest = product(rest, region, "diff")
        if not rest.is_empty():
            new.append((rest, frozenset({i})))
        parts = new
    return parts


def split_values(conv, groups: list, path: str) -> list:
    """Resolve one event whose value node differs between shapes.

    ``groups`` is ``[(node, next_positions)]``; returns ``[(symbol, next_positions)]`` whose
    symbols accept disjoint values, or raises through ``conv.unsupported``.
    """
    anything = conv.node([])
    universal = frozenset().union(*(nxt for n, nxt in groups if n is anything))
    rest = [(n, nxt) for n, nxt in groups if n is not anything]
    if not rest:
        return [(anything.symbol, universal)]
    if any(p[0] == 0 for p in universal):
        return _split(conv, groups, path)  # values only "anything" takes need their own symbol
    # only shadows take any value: a value none of the others takes has no grammar position
    resolved = [(rest[0][0].symbol, rest[0][1])] if len(rest) == 1 else _split(conv, rest, path)
    return [(sym, nxt | universal) for sym, nxt in resolved]


def _split(conv, groups: list, path: str) -> list:
    nodes = [g[0] for g in groups]
    with_objects = [i for i, n in enumerate(nodes) if n.objects]
    with_arrays = [i for i, n in enumerate(nodes) if n.arrays]
    def one_specific(idx: list, part: str) -> bool:
        return sum(not accepts_all(conv, getattr(nodes[i], part)) for i in idx) <= 1

    if not any(n.pending for n in nodes) and len(nodes) <= 6 and \
            one_specific(with_objects, "objects") and one_specific(with_arrays, "arrays"):
        by_subset: dict = {}
        for kind in ("null", "boolean", "number", "string"):
            idx = [i for i, n in enumerate(nodes) if kind in n.scalars]
            for dfa, tags in _partition([compile_tree(nodes[i].scalars[kind]) for i in idx]):
                tree = number_tree(dfa) if kind == "number" else to_tree(dfa)
                tree = string_of(tree) if kind == "string" else tree
                by_subset.setdefault(frozenset(idx[t] for t in tags), []).append(tree)
        out = []
        for subset, trees in by_subset.items():
            nxt = frozenset().union(*(groups[i][1] for i in subset))
            out.append((conv.terminal(alt(*trees)), nxt))
        for part, idx in (("objects", with_objects), ("arrays", with_arrays)):
            if not idx:
                continue
            nxt = frozenset().union(*(groups[i][1] for i in idx))
            specific = [i for i in idx if not accepts_all(conv, getattr(nodes[i], part))]
            # the groups that take every object (or array) take the specific ones too
            owner = nodes[specific[0]] if specific else conv.node([])
            out.append((conv.part_symbol(owner, part), nxt))
        return out
    if all(disjoint(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]):
        return [(n.symbol, nxt) for n, nxt in groups]
    merged = conv.union_node(nodes, path)
    return [(merged.symbol, frozenset().union(*(g[1] for g in groups)))]


def _group(moves: list) -> list:
    groups: dict = {}
    for node, nxt in moves:
        if node is not None and node.symbol is not None:
            groups.setdefault(node.symbol, (node, set()))[1].add(nxt)
    return [(node, frozenset(nxt)) for node, nxt in groups.values()]


def _run(conv, shapes, start: frozenset, events, step, accepting, path: str, prefix: str) -> tuple:
    """Explore the automaton; return ``(names, transitions, accepting)`` per state.

    A position is ``(0, shape, ...)`` for a shape's grammar, or ``(1, shape, ...)`` for a
    *shadow* that follows the same keys without the grammar's ordering: shadows never make a
    transition exist, they only tell whether an alternative of a ``oneOf`` would accept the
    value, so that exactly one does.
    """
    names, trans, todo = {start: conv.new_rule(prefix)}, {}, [start]
    while todo:
        state = todo.pop()
        out = []
        for ev in events:
            moves = [m for pos in state for m in step(pos, ev)]
            if not any(nxt[0] == 0 for node, nxt in moves if node is not None):
                continue
            groups = _group(moves)
            resolved = [(groups[0][0].symbol, groups[0][1])] if len(groups) == 1 else \
                split_values(conv, groups, path)
            for symbol, nxt in resolved:
                if not any(p[0] == 0 for p in nxt):
                    continue
                if nxt not in names:
                    if len(names) >= MAX_STATES:
                        conv.unsupported("properties", path, "the combined object or array "
                                         "structure is too large", approximable=False)
                    names[nxt] = conv.new_rule(prefix)
                    todo.append(nxt)
                out.append((ev, symbol, nxt))
        trans[state] = out
    return names, trans, {s: _accepts(shapes, [p for p in s if accepting(p)]) for s in names}


def _accepts(shapes: list, positions: list) -> bool:
    """Some untagged shape accepts, or the alternative of a ``oneOf`` whose grammar accepts is
    the only one of that ``oneOf`` to accept (grammar or shadow)."""
    chosen, semantic = set(), set()
    for pos in positions:
        tag = shapes[pos[1]].tag
        if tag is None:
            if pos[0] == 0:
                return True
            continue
        semantic.add(tag)
        if pos[0] == 0:
            chosen.add(tag)
    return any({t[1] for t in semantic if t[0] == tag[0]} == {tag[1]} for tag in chosen)


def _emit(conv, names, trans, acc, start, first: str, last: str, item) -> list:
    """Write the tail rules; return the alternatives of the structure itself."""
    live = {s for s in names if acc[s]}  # states from which the structure can be completed
    changed = True
    while changed:
        changed = False
        for state in names:
            if state not in live and any(nxt in live for _, _, nxt in trans[state]):
                live.add(state)
                changed = True
    trans = {s: [t for t in out if t[2] in live] for s, out in trans.items()}

    def tail(state) -> list:
        return [names[state]] if trans[state] else []
    for state, name in names.items():
        if not trans[state]:
            continue
        alts = [[conv.COMMA] + item(ev, symbol) + tail(nxt) for ev, symbol, nxt in trans[state]]
        if acc[state]:
            alts.append([])
        conv.rules[name] = alts
    out = [[first, last]] if acc[start] else []
    out += [[first] + item(ev, symbol) + tail(nxt) + [last] for ev, symbol, nxt in trans[start]]
    return out


def emit_objects(conv, shapes: list, path: str) -> list:
    """Alternatives (symbol lists) accepting the union of object ``shapes``."""
    names: list = []
    for s in shapes:
        names.extend(n for n, _, _ in s.props if n not in names)
    events = [("name", n) for n in names]
    witnessed = any(s.witnesses for s in shapes)
    if all(key is None for s in shapes for key, _ in s.extras) and not witnessed:
        owners = {si: s.extras[0][1] for si, s in enumerate(shapes) if s.extras}
        if owners:
            events.append(("atom", not_in(names), owners, frozenset()))
    else:
        regions = []
        for si, s in enumerate(shapes):
            for key, node in s.extras:
                tree = key if key is not None else not_in(n for n, _, _ in s.props)
                regions.append((si, node, compile_tree(tree)))
            # witness key sets split the keys too (marked by the witness's number)
            regions += [(si, wi, compile_tree(key)) for wi, (key, _) in enumerate(s.witnesses)]
        rest = compile_tree(not_in(names))
        for dfa, tags in _partition([product(d, rest, "and") for _, _, d in regions]):
            owners = {regions[t][0]: regions[t][1] for t in tags
                      if not isinstance(regions[t][1], int)}
            marks = frozenset(regions[t][:2] for t in tags if isinstance(regions[t][1], int))
            if owners:
                events.append(("atom", to_tree(dfa), owners, marks))

    required = [{n: k for k, n in enumerate(n for n, _, req in s.props if req)} for s in shapes]
    everything = [(1 << len(s.witnesses)) - 1 for s in shapes]

    def witness_moves(si: int, ev, node, pos: tuple, seen: int) -> list:
        """``node``'s move, split by whether the value is a witness still missing."""
        s = shapes[si]
        open_ = [wi for wi, (key, _) in enumerate(s.witnesses) if not seen >> wi & 1 and (
            matches(key, ev[1]) if ev[0] == "name" else (si, wi) in ev[3])]
        if not open_:
            return [(node, pos + (seen,))]
        moves = []
        for subset in range(1 << len(open_)):
            conj = list(node.conj)
            found = seen
            for b, wi in enumerate(open_):
                schema, wpath = s.witnesses[wi][1]
                if subset >> b & 1:
                    conj.append((schema, wpath))
                    found |= 1 << wi
                else:
                    conj.append(({"not": schema}, wpath))
            split = conv.node(conj)
            if split.symbol is not None:
                moves.append((split, pos + (found,)))
        return moves

    def step(pos, ev):
        kind, si, i, c, seen = pos
        s = shapes[si]
        if s.max_props is not None and c >= s.max_props:
            return []
        c2 = min(c + 1, s.cap)
        if kind == 1:  # shadow: any order, i is the set of required keys seen
            node = s.value_for(ev[1]) if ev[0] == "name" else ev[2].get(si)
            bit = 1 << required[si][ev[1]] if ev[0] == "name" and ev[1] in required[si] else 0
            if node is None:
                return []
            moves = witness_moves(si, ev, node, (1, si, i | bit, c2), seen)
            return [(trusted(conv, n), p) for n, p in moves]  # never reject a valid value
        if ev[0] == "name" and ev[1] in s.index:
            j = s.index[ev[1]]
            if j < i or s.first_required[i] < j:
                return []
            node = s.props[j][1]
            return witness_moves(si, ev, node, (0, si, j + 1, c2), seen) \
                if node is not None else []
        if s.first_required[i] < len(s.props):
            return []
        node = s.extra_for(ev[1]) if ev[0] == "name" else ev[2].get(si)
        return witness_moves(si, ev, node, (0, si, len(s.props), c2), seen) \
            if node is not None else []

    def accepting(pos) -> bool:
        kind, si, i, c, seen = pos
        s = shapes[si]
        if seen != everything[si]:
            return False
        if kind == 1:
            return i == (1 << len(required[si])) - 1 and c >= s.min_props
        return s.first_required[i] == len(s.props) and c >= s.min_props

    def item(ev, symbol) -> list:
        key = conv.string_terminal(lit(ev[1]) if ev[0] == "name" else ev[1])
        return [key, conv.COLON, symbol]

    start = frozenset([(0, si, 0, 0, 0) for si in range(len(shapes))] +
                      [(1, si, 0, 0, 0) for si, s in enumerate(shapes) if s.tag is not None])
    rules, trans, acc = _run(conv, shapes, start, events, step, accepting, path, "obj")
    return _emit(conv, rules, trans, acc, start, conv.LBRACE, conv.RBRACE, item)


def emit_arrays(conv, shapes: list, path: str) -> list:
    """Alternatives (symbol lists) accepting the union of array ``shapes``."""
    def step(pos, _ev):
        kind, si, i, count = pos
        s = shapes[si]
        if s.max_items is not None and i >= s.max_items:
            return []
        nxt = i + 1 if s.max_items is not None else min(i + 1, s.loop)
        if s.contains is None:
            moves = [(s.node_at(i), (kind, si, nxt, 0))]
        else:
            pairs, rest, least, most = s.contains
            match, other = pairs[i] if i < len(pairs) else rest
            moves = [(other, (kind, si, nxt, count))] if other is not None else []
            if match is not None and (most is None or count < most):
                moves.append((match, (kind, si, nxt, min(count + 1, max(least, most or 0)))))
        if kind == 1:  # shadow of a oneOf alternative: trust only exact rejections
            moves = [(trusted(conv, n), p) for n, p in moves]
        return moves

    def accepting(pos) -> bool:
        _, si, i, count = pos
        s = shapes[si]
        return i >= s.min_items and (s.contains is None or count >= s.contains[2])

    start = frozenset([(0, si, 0, 0) for si in range(len(shapes))] +
                      [(1, si, 0, 0) for si, s in enumerate(shapes) if s.tag is not None])
    rules, trans, acc = _run(conv, shapes, start, [None], step, accepting, path, "arr")
    return _emit(conv, rules, trans, acc, start, conv.LBRACK, conv.RBRACK,
                 lambda _ev, symbol: [symbol])
