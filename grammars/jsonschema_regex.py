"""Regular expressions over JSON text, for the JSON Schema converter.

Regexes are built as small immutable trees (tuples) and rendered to Python ``re`` syntax that
lark and interegular both accept. Character sets are tuples of inclusive code point ranges.

A JSON string's *content* is matched in its serialised form, exactly as
``json.dumps(value, ensure_ascii=False)`` writes it: ``"`` and ``\\`` are escaped, the control
characters U+0000-U+001F use ``\\b \\t \\n \\f \\r`` or ``\\u00xx`` (lower-case hex), and every
other character appears as itself. :func:`encode_set` turns a set of characters into the regex
of their serialised forms, so that the length of a string is the number of encoded units.

:mod:`decodekit.grammars.jsonschema_pattern` translates ``pattern`` keywords into such trees.
"""

from __future__ import annotations

from bisect import bisect_right

MAX_CODE = 0x10FFFF

# Tree nodes: ("lit", text) | ("set", ranges) | ("cat", parts) | ("alt", parts)
# | ("rep", node, min, max_or_None) | ("dfa", automaton): an automaton that has no regex of
# reasonable size (rendering it raises AutomatonTooLarge; grammars spell it out as rules).
EMPTY = ("cat", ())
NOTHING = ("alt", ())


class AutomatonTooLarge(ValueError):
    """An automaton, or the regex of one, is too large."""


# ---------------------------------------------------------------------------- character sets

def norm(ranges) -> tuple:
    """Sort and merge inclusive ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def complement(ranges) -> tuple:
    """All code points not in ``ranges``."""
    out, start = [], 0
    for lo, hi in norm(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE:
        out.append((start, MAX_CODE))
    return tuple(out)


def intersect(a, b) -> tuple:
    """Code points in both ``a`` and ``b``."""
    return complement(complement(a) + complement(b))


def chars(text: str) -> tuple:
    """The set of the characters of ``text``."""
    return norm((ord(c), ord(c)) for c in text)


def size(ranges) -> int:
    """Number of code points in ``ranges``."""
    return sum(hi - lo + 1 for lo, hi in ranges)


def contains(ranges, code: int) -> bool:
    """Whether ``code`` is in the normalised ``ranges``."""
    i = bisect_right(ranges, (code, MAX_CODE + 1)) - 1
    return i >= 0 and ranges[i][0] <= code <= ranges[i][1]


FULL = ((0, MAX_CODE),)
DIGITS = ((48, 57),)
WORD = norm([(48, 57), (65, 90), (95, 95), (97, 122)])
SPACE = norm([(9, 13), (32, 32), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
              (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
              (0xFEFF, 0xFEFF)])
LINE_TERMINATORS = norm([(10, 10), (13, 13), (0x2028, 0x2029)])
_SPECIAL = norm([(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
_SHORT_ESCAPES = {0x22: '"', 0x5C: "\\", 8: "b", 9: "t", 10: "n", 12: "f", 13: "r"}


# ---------------------------------------------------------------------------- tree builders

def lit(text: str) -> tuple:
    """The literal ``text``."""
    return ("lit", text) if text else EMPTY


def cset(ranges) -> tuple:
    """One character from ``ranges``."""
    ranges = norm(ranges)
    if not ranges:
        return NOTHING
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return ("lit", chr(ranges[0][0]))
    return ("set", ranges)


def cat(*parts) -> tuple:
    """Concatenation, flattened; ``NOTHING`` absorbs."""
    out: list = []
    for p in parts:
        if p == NOTHING:
            return NOTHING
        items = p[1] if p[0] == "cat" else (p,)
        for q in items:
            if q[0] == "lit" and out and out[-1][0] == "lit":
                out[-1] = ("lit", out[-1][1] + q[1])
            elif q[0] == "rep" and q[2] == 0 and q[3] is None and out and out[-1] == q[1]:
                out[-1] = ("rep", q[1], 1, None)  # x x* -> x+
            else:
                out.append(q)
    return out[0] if len(out) == 1 else ("cat", tuple(out))


def alt(*parts) -> tuple:
    """Alternation, flattened, duplicates removed, order kept (it matters to ``re``)."""
    out: list = []
    for p in parts:
        for q in (p[1] if p[0] == "alt" else (p,)):
            if q not in out:
                out.append(q)
    return out[0] if len(out) == 1 else ("alt", tuple(out))


def rep(node: tuple, lo: int, hi: int | None) -> tuple:
    """``node`` repeated ``lo`` to ``hi`` times (``None``: unbounded)."""
    if hi is not None and (hi < lo or hi == 0):
        return EMPTY if hi == 0 and lo == 0 else NOTHING
    if node == EMPTY:
        return EMPTY
    if node == NOTHING:
        return EMPTY if lo == 0 else NOTHING
    if lo == hi == 1:
        return node
    return ("rep", node, lo, hi)


def opt(node: tuple) -> tuple:
    """``node`` or nothing (greedy)."""
    return rep(node, 0, 1)


# ---------------------------------------------------------------------------- JSON encoding

def encode_char(c: str) -> str:
    """The serialised form of one character inside a JSON string."""
    o = ord(c)
    if o in _SHORT_ESCAPES:
        return "\\" + _SHORT_ESCAPES[o]
    if o < 0x20:
        return f"\\u{o:04x}"
    return c


def encode_text(text: str) -> tuple:
    """Literal tree of the serialised form of ``text`` (without quotes)."""
    return lit("".join(encode_char(c) for c in text))


def encode_set(ranges) -> tuple:
    """Tree matching the serialised form of any one character of ``ranges``."""
    ranges = norm(ranges)
    plain = intersect(ranges, complement(_SPECIAL))
    special = intersect(ranges, _SPECIAL)
    short, longs = [], []
    for lo, hi in special:
        for o in range(lo, hi + 1):
            (short if o in _SHORT_ESCAPES else longs).append(o)
    escapes = []
    if short:
        escapes.append(cset(chars("".join(_SHORT_ESCAPES[o] for o in short))))
    if longs:
        by_high = {}
        for o in longs:
            by_high.setdefault(f"{o:04x}"[2], []).append(f"{o:04x}"[3])
        escapes.append(cat(lit("u00"), alt(*(cat(lit(h), cset(chars("".join(lows))))
                                               for h, lows in by_high.items()))))
    parts = [cset(plain)] if plain else []
    if escapes:
        parts.append(cat(lit("\\"), alt(*escapes)))
    return alt(*parts) if parts else NOTHING


ANY_CHAR = encode_set(FULL)


def encode(node: tuple) -> tuple:
    """Map a tree over string content to a tree over its serialised form."""
    kind = node[0]
    if kind == "lit":
        return encode_text(node[1])
    if kind == "set":
        return encode_set(node[1])
    if kind == "cat":
        return cat(*(encode(p) for p in node[1]))
    if kind == "alt":
        return alt(*(encode(p) for p in node[1]))
    if kind == "dfa":
        raise AutomatonTooLarge("an automaton is spelled out as rules, not encoded")
    return rep(encode(node[1]), node[2], node[3])


def string_of(content: tuple) -> tuple:
    """A JSON string whose (decoded) content matches ``content``."""
    return cat(lit('"'), encode(content), lit('"'))


# ---------------------------------------------------------------------------- rendering

# '"' is written \x22: lark's grammar loader turns an escaped backslash followed by '"' into '"'.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ,:;=@%&'!<>~`#")


def _esc(o: int, in_class: bool) -> str:
    c = chr(o)
    if c in _SAFE or (o > 0x7F and c.isprintable()):
        return c
    if o < 0x80 and not c.isalnum() and c.isprintable() and c != '"':
        return "\\" + c
    if o <= 0xFF:
        return f"\\x{o:02x}"
    return c


def _render_set(ranges) -> str:
    comp = complement(ranges)
    if not comp:
        return "(?s:.)"
    negate = size(comp) < size(ranges)
    body = []
    for lo, hi in (comp if negate else ranges):
        if lo == hi:
            body.append(_esc(lo, True))
        elif hi == lo + 1:
            body.append(_esc(lo, True) + _esc(hi, True))
        else:
            body.append(f"{_esc(lo, True)}-{_esc(hi, True)}")
    return "[" + ("^" if negate else "") + "".join(body) + "]"


def render(node: tuple) -> str:
    """Python ``re`` syntax for a tree (no anchors, no lookarounds)."""
    kind = node[0]
    if kind == "dfa":
        raise AutomatonTooLarge("this automaton has no regular expression of reasonable size")
    if kind == "lit":
        return "".join(_esc(ord(c), False) for c in node[1])
    if kind == "set":
        return _render_set(node[1])
    if kind == "cat":
        return "".join(_group(p) if p[0] == "alt" else render(p) for p in node[1])
    if kind == "alt":
        if not node[1]:
            return "(?!)"
        return "|".join(render(p) for p in node[1])
    inner, lo, hi = node[1], node[2], node[3]
    base = _group(inner) if inner[0] in ("cat", "alt", "rep") or (
        inner[0] == "lit" and len(inner[1]) > 1) else render(inner)
    if (lo, hi) == (0, None):
        q = "*"
    elif (lo, hi) == (1, None):
        q = "+"
    elif (lo, hi) == (0, 1):
        q = "?"
    elif hi is None:
        q = f"{{{lo},}}"
    elif lo == hi:
        q = f"{{{lo}}}"
    else:
        q = f"{{{lo},{hi}}}"
    return base + q


def _group(node: tuple) -> str:
    return "(?:" + render(node) + ")"


def not_in(words) -> tuple:
    """Content tree of every string except ``words`` (a trie, so the regex stays small)."""
    trie: dict = {}
    for w in words:
        t = trie
        for ch in w:
            t = t.setdefault(ch, {})
        t[""] = {}
    anything = rep(cset(FULL), 0, None)

    def build(t: dict) -> tuple:
        kids = sorted(k for k in t if k)
        if not t:
            return anything
        parts = [cat(cset(complement(chars("".join(kids)))), anything)]
        parts += [cat(lit(k), build(t[k])) for k in kids]
        if "" not in t:
            parts.append(("cat", ()))
        return alt(*parts)

    return build(trie)
