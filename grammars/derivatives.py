"""Byte automata of regular expressions, built lazily by derivatives.

A terminal such as a JSON string of at most 255 characters has thousands of automaton states,
of which a generation visits a handful. Building them all up front (interegular's ``to_fsm``
followed by the UTF-8 rewrite of :mod:`decodekit.grammars.automata`) costs seconds per
terminal; here a state is a regular expression term and its successor on a byte is the term's
Brzozowski derivative, computed the first time it is needed and memoised.

interegular parses the expression; its tree is rewritten over bytes (a character class becomes
the UTF-8 byte-range sequences of its code points) into hash-consed terms:

* ``("b", mask)``: one byte whose bit is set in the 256-bit integer ``mask``;
* ``("c", a, b)``: concatenation (nested to the right);
* ``("a", (a, b, ...))``: alternation (a sorted tuple of distinct terms);
* ``("r", a, lo, hi)``: ``a`` repeated ``lo`` to ``hi`` times (``hi`` ``None``: unbounded).

Term ``0`` is the empty language and term ``1`` the empty string. The smart constructors keep
every term other than ``0`` non-empty, so every live state can still reach acceptance.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

__all__ = ["EMPTY", "EPS", "NotLazy", "TermTable"]

EMPTY = 0
EPS = 1
#: deepest term the recursive derivative is allowed on (deeper ones use the eager automaton)
MAX_DEPTH = 400
_MAX_CP = 0x10FFFF


class NotLazy(Exception):
    """The expression uses a feature the derivative construction does not handle."""


def _utf8_sequences(lo: int, hi: int, out: list[list[tuple[int, int]]]) -> None:
    """Split code points ``lo..hi`` (no surrogates) into UTF-8 byte-range sequences."""
    for limit in (0x7F, 0x7FF, 0xFFFF):
        if lo <= limit < hi:
            _utf8_sequences(lo, limit, out)
            _utf8_sequences(limit + 1, hi, out)
            return
    if hi <= 0x7F:
        out.append([(lo, hi)])
        return
    n = len(chr(lo).encode("utf-8"))
    for i in range(1, n):
        m = (1 << (6 * i)) - 1
        if lo & ~m != hi & ~m:
            if lo & m:
                _utf8_sequences(lo, lo | m, out)
                _utf8_sequences((lo | m) + 1, hi, out)
                return
            if hi & m != m:
                _utf8_sequences(lo, (hi & ~m) - 1, out)
                _utf8_sequences(hi & ~m, hi, out)
                return
    out.append(list(zip(chr(lo).encode("utf-8"), chr(hi).encode("utf-8"))))


def _ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in sorted(set(cps)):
        if out and out[-1][1] + 1 == cp:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_CP:
        out.append((nxt, _MAX_CP))
    return out


def _without_surrogates(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in ranges:
        if hi < 0xD800 or lo > 0xDFFF:
            out.append((lo, hi))
            continue
        if lo < 0xD800:
            out.append((lo, 0xD7FF))
        if hi > 0xDFFF:
            out.append((0xE000, hi))
    return out


@functools.lru_cache(maxsize=512)
def _parse(regex: str) -> Any:
    """interegular's parse tree of ``regex`` (immutable, so shared between grammars)."""
    import interegular

    return interegular.parse_pattern(regex)


def _refine(masks: frozenset[int]) -> tuple[list[int], list[int]]:
    """The partition of the 256 bytes by ``masks``: each byte's class (classes numbered by
    their lowest byte) and each class's lowest byte."""
    parts = [(1 << 256) - 1]
    for m in masks:  # refine the partition of the 256 bytes by each mask
        parts = [q for p in parts for q in (p & m, p & ~m) if q]
    cls = [0] * 256
    lows = []
    for c, p in enumerate(parts):
        lows.append((p & -p).bit_length() - 1)
        while p:
            low = p & -p
            cls[low.bit_length() - 1] = c
            p ^= low
    order = sorted(range(len(parts)), key=lows.__getitem__)
    rank = {c: i for i, c in enumerate(order)}
    return [rank[c] for c in cls], [lows[c] for c in order]


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


class TermTable:
    """Hash-consed terms with memoised nullability and derivatives (shared by the terminals of
    one grammar; picklable)."""

    def __init__(self) -> None:
        self.terms: list[tuple[Any, ...]] = [("0",), ("e",)]
        self.ids: dict[tuple[Any, ...], int] = {("0",): 0, ("e",): 1}
        self.nullable: list[bool] = [False, True]
        self.depth: list[int] = [0, 0]
        self.masks: set[int] = set()
        self._deriv: dict[int, int] = {}
        self._first: dict[int, frozenset[int]] = {}
        self._partitions: dict[frozenset[int], tuple[list[int], list[int]]] = {}
        self._charsets: dict[tuple[Any, ...], int] = {}
        self.lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()
        for memo in ("_deriv", "_first", "_partitions", "_charsets"):  # memos are only caches
            self.__dict__.setdefault(memo, {})

    # -- smart constructors -------------------------------------------------------------------

    def _intern(self, key: tuple[Any, ...], nullable: bool, depth: int) -> int:
        tid = self.ids.get(key)
        if tid is None:
            tid = self.ids[key] = len(self.terms)
            self.terms.append(key)
            self.nullable.append(nullable)
            self.depth.append(depth)
        return tid

    def byte_set(self, mask: int) -> int:
        """The term matching one byte of ``mask``."""
        if not mask:
            return EMPTY
        self.masks.add(mask)
        return self._intern(("b", mask), False, 1)

    def cat(self, a: int, b: int) -> int:
        """Concatenation."""
        if a == EMPTY or b == EMPTY:
            return EMPTY
        if a == EPS:
            return b
        if b == EPS:
            return a
        ta = self.terms[a]
        if ta[0] == "c":
            return self.cat(ta[1], self.cat(ta[2], b))
        return self._intern(("c", a, b), self.nullable[a] and self.nullable[b],
                            1 + max(self.depth[a], self.depth[b]))

    def alt(self, items: list[int]) -> int:
        """Alternation."""
        flat: set[int] = set()
        for t in items:
            term = self.terms[t]
            if term[0] == "a":
                flat.update(term[1])
            elif t != EMPTY:
                flat.add(t)
        if not flat:
            return EMPTY
        if len(flat) == 1:
            return flat.pop()
        key = tuple(sorted(flat))
        return self._intern(("a", key), any(self.nullable[t] for t in key),
                            1 + max(self.depth[t] for t in key))

    def rep(self, a: int, lo: int, hi: int | None) -> int:
        """``a`` repeated ``lo`` to ``hi`` times (``None``: no upper bound)."""
        if hi is not None and hi < lo:
            return EMPTY
        if hi == 0 or a == EPS:
            return EPS
        if a == EMPTY:
            return EPS if lo == 0 else EMPTY
        if lo == 1 and hi == 1:
            return a
        return self._intern(("r", a, lo, hi), lo == 0 or self.nullable[a], 1 + self.depth[a])

    # -- derivatives ----------------------------------------------------------------------------

    def derive(self, t: int, byte: int) -> int:
        """The derivative of term ``t`` by ``byte`` (memoised)."""
        key = t * 256 + byte
        hit = self._deriv.get(key)
        if hit is not None:
            return hit
        term = self.terms[t]
        kind = term[0]
        if kind == "b":
            out = EPS if term[1] >> byte & 1 else EMPTY
        elif kind == "c":
            out = self.cat(self.derive(term[1], byte), term[2])
            if self.nullable[term[1]]:
                out = self.alt([out, self.derive(term[2], byte)])
        elif kind == "a":
            out = self.alt([self.derive(x, byte) for x in term[1]])
        elif kind == "r":
            _, a, lo, hi = term
            out = self.cat(self.derive(a, byte), self.rep(a, max(lo - 1, 0), None if hi is None else hi - 1))
        else:  # "0" and "e"
            out = EMPTY
        self._deriv[key] = out
        return out

    def first_masks(self, t: int) -> frozenset[int]:
        """Byte masks that can match the first byte of term ``t`` (memoised)."""
        hit = self._first.get(t)
        if hit is not None:
            return hit
        term = self.terms[t]
        kind = term[0]
        if kind == "b":
            out = frozenset((term[1],))
        elif kind == "c":
            out = self.first_masks(term[1])
            if self.nullable[term[1]]:
                out = out | self.first_masks(term[2])
        elif kind == "a":
            out = frozenset().union(*(self.first_masks(x) for x in term[1]))
        elif kind == "r":
            out = self.first_masks(term[1])
        else:
            out = frozenset()
        self._first[t] = out
        return out

    def local_classes(self, t: int) -> tuple[list[int], list[int]]:
        """The bytes term ``t`` tells apart: the class of each byte, and one byte per class
        (bytes of one class have the same derivative)."""
        masks = self.first_masks(t)
        hit = self._partitions.get(masks)
        if hit is not None:
            return hit
        if len(masks) <= 62:
            # each byte's membership in every mask as the bits of one integer: bytes with
            # the same integer form one class
            key = np.zeros(256, dtype=np.int64)
            for i, m in enumerate(masks):
                member = np.unpackbits(np.frombuffer(m.to_bytes(32, "little"), dtype=np.uint8), bitorder="little")
                key |= member.astype(np.int64) << i
            _, lowest, inverse = np.unique(key, return_index=True, return_inverse=True)
            order = np.argsort(lowest)  # classes by lowest byte
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            cls = rank[inverse.reshape(-1)].tolist()
            reps = np.sort(lowest).tolist()
        else:
            cls, reps = _refine(masks)
        out = (cls, reps)
        self._partitions[masks] = out
        return out

    # -- from interegular's parse tree --------------------------------------------------------

    def charset(self, ranges: list[tuple[int, int]]) -> int:
        """The term matching the UTF-8 encoding of one code point in ``ranges``."""
        key = tuple(ranges)
        hit = self._charsets.get(key)
        if hit is not None:
            return hit
        seqs: list[list[tuple[int, int]]] = []
        for lo, hi in _without_surrogates(ranges):
            _utf8_sequences(lo, hi, seqs)
        single = 0
        alts = []
        for seq in seqs:
            if len(seq) == 1:
                single |= _mask(*seq[0])
                continue
            term = EPS
            for lo, hi in reversed(seq):
                term = self.cat(self.byte_set(_mask(lo, hi)), term)
            alts.append(term)
        out = self.alt([self.byte_set(single), *alts])
        self._charsets[key] = out
        return out

    def from_regex(self, regex: str) -> int:
        """The term of a Python regular expression (after
        :func:`decodekit.grammars.automata.prepare_regex`).

        Raises
        ------
        NotLazy
            For look-around and flags other than ``i`` and ``s``.
        """
        try:
            tree = _parse(regex)
        except Exception as exc:
            raise NotLazy(str(exc)) from None
        with self.lock:
            return self._convert(tree, 0)

    def _convert(self, node: Any, flags: int) -> int:
        from interegular.patterns import Pattern, REFlags, _CharGroup, _Concatenation, _NonCapturing, _Repeated

        if isinstance(node, Pattern):
            flags = (flags | node.added_flags.value) & ~node.removed_flags.value
            if flags & ~(REFlags.CASE_INSENSITIVE.value | REFlags.SINGLE_LINE.value):
                raise NotLazy(f"regex flags {flags}")
            return self.alt([self._convert(opt, flags) for opt in node.options])
        if isinstance(node, _Concatenation):
            out = EPS
            for part in reversed(node.parts):
                if isinstance(part, _NonCapturing):
                    raise NotLazy("look-around")
                out = self.cat(self._convert(part, flags), out)
            return out
        if isinstance(node, _Repeated):
            return self.rep(self._convert(node.base, flags), int(node.min),
                            None if node.max is None else int(node.max))
        if isinstance(node, _CharGroup):
            chars = set(node.chars)
            if flags & REFlags.CASE_INSENSITIVE.value:
                chars |= {c.lower() for c in node.chars} | {c.upper() for c in node.chars}
                chars = {c for c in chars if len(c) == 1}
            ranges = _ranges([ord(c) for c in chars])
            return self.charset(_complement(ranges) if node.negated else ranges)
        name = type(node).__name__
        if name == "__DotCls":
            if flags & REFlags.SINGLE_LINE.value:
                return self.charset([(0, _MAX_CP)])
            return self.charset(_complement([(10, 10)]))
        if name == "__EmptyCls" or getattr(node, "__name__", "") == "__EmptyCls":
            return EPS
        raise NotLazy(f"unsupported regex node {name}")
