"""Regular expressions over JSON text, for the JSON Schema converter.

Regexes are built as small immutable trees (tuples) and rendered to Python ``re`` syntax that
lark and interegular both accept. Character sets are tuples of inclusive code point ranges.

A JSON string's *content* is matched in its serialised form, exactly as
``json.dumps(value, ensure_ascii=False)`` writes it: ``"`` and ``\\`` are escaped, the control
characters U+0000-U+001F use ``\\b \\t \\n \\f \\r`` or ``\\u00xx`` (lower-case hex), and every
other character appears as itself. :func:`encode_set` turns a set of characters into the regex
of their serialised forms, so that the length of a string is the number of encoded units.

:func:`parse_pattern` translates an ECMA-262 ``pattern`` (what JSON Schema uses) into such a
tree, with the schema's search semantics (an unanchored pattern may match anywhere).
"""

from __future__ import annotations

from bisect import bisect_right

MAX_CODE = 0x10FFFF

# Tree nodes: ("lit", text) | ("set", ranges) | ("cat", parts) | ("alt", parts)
# | ("rep", node, min, max_or_None).
EMPTY = ("cat", ())
NOTHING = ("alt", ())


class PatternError(ValueError):
    """A regular expression uses syntax the converter cannot translate."""


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


# ---------------------------------------------------------------------------- ECMA-262 patterns

_CLASS_ESCAPES = {"d": DIGITS, "D": complement(DIGITS), "w": WORD, "W": complement(WORD),
                  "s": SPACE, "S": complement(SPACE)}
_CONTROL_ESCAPES = {"t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
_BOL, _EOL = ("bol",), ("eol",)


class _Parser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def error(self, msg: str) -> PatternError:
        return PatternError(f"{msg} at offset {self.i} of pattern {self.s!r}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def disjunction(self) -> list:
        alts = [self.alternative()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.alternative())
        return alts

    def alternative(self) -> list:
        seq = []
        while self.peek() not in ("", "|", ")"):
            seq.append(self.term())
        return seq

    def term(self):
        c = self.peek()
        if c == "^":
            self.i += 1
            return _BOL
        if c == "$":
            self.i += 1
            return _EOL
        if c == "\\" and self.peek(1) in ("b", "B"):
            raise self.error("word boundary assertions are not supported")
        atom = self.atom()
        return self.quantifier(atom)

    def quantifier(self, atom):
        c = self.peek()
        lo = hi = None
        if c and c in "*+?":
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            j = self.s.find("}", self.i)
            body = self.s[self.i + 1:j] if j > 0 else ""
            parts = body.split(",")
            if j > 0 and 1 <= len(parts) <= 2 and parts[0].isdigit() and (
                    len(parts) == 1 or parts[1] == "" or parts[1].isdigit()):
                lo = int(parts[0])
                hi = lo if len(parts) == 1 else (int(parts[1]) if parts[1] else None)
                if hi is not None and hi < lo:
                    raise self.error("quantifier range out of order")
                self.i = j + 1
        if lo is None:
            return atom
        if atom in (_BOL, _EOL):
            raise self.error("quantified anchor")
        if self.peek() == "?":
            self.i += 1
        return ("q", atom, lo, hi)

    def atom(self):
        c = self.peek()
        self.i += 1
        if c == ".":
            return ("cs", complement(LINE_TERMINATORS))
        if c == "[":
            return ("cs", self.char_class())
        if c == "(":
            if self.peek() == "?":
                if self.s.startswith("?:", self.i):
                    self.i += 2
                elif self.peek(1) == "<" and self.peek(2) not in ("=", "!"):
                    j = self.s.find(">", self.i)
                    if j < 0:
                        raise self.error("unterminated group name")
                    self.i = j + 1
                else:
                    raise self.error("lookaround assertions are not supported")
            alts = self.disjunction()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.i += 1
            return ("g", alts)
        if c == ")":
            raise self.error("unbalanced ')'")
        if c in "*+?":
            raise self.error("nothing to repeat")
        if c == "\\":
            return ("cs", self.escape(in_class=False))
        return ("cs", ((ord(c), ord(c)),))

    def escape(self, in_class: bool) -> tuple:
        c = self.peek()
        if not c:
            raise self.error("trailing backslash")
        self.i += 1
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c]
        if c in _CONTROL_ESCAPES:
            o = _CONTROL_ESCAPES[c]
        elif c == "b" and in_class:
            o = 8
        elif c == "0" and not self.peek().isdigit():
            o = 0
        elif c.isdigit():
            raise self.error("back references and octal escapes are not supported")
        elif c == "c" and self.peek().isalpha():
            o = ord(self.peek()) % 32
            self.i += 1
        elif c in "xu":
            n = 2 if c == "x" else 4
            digits = self.s[self.i:self.i + n]
            if len(digits) == n and all(d in "0123456789abcdefABCDEF" for d in digits):
                o = int(digits, 16)
                self.i += n
            else:
                o = ord(c)
        elif c in "pPk":
            raise self.error(f"escape \\{c} is not supported")
        else:
            o = ord(c)
        return ((o, o),)

    def char_class(self) -> tuple:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: list = []
        while True:
            c = self.peek()
            if not c:
                raise self.error("unterminated character class")
            if c == "]":
                self.i += 1
                break
            lo = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self.class_atom()
                if len(lo) == 1 and len(hi) == 1 and lo[0][0] == lo[0][1] and hi[0][0] == hi[0][1]:
                    if hi[0][0] < lo[0][0]:
                        raise self.error("character class range out of order")
                    ranges.append((lo[0][0], hi[0][0]))
                    continue
                ranges.extend(lo + hi + ((45, 45),))
                continue
            ranges.extend(lo)
        ranges = norm(ranges)
        return complement(ranges) if negate else ranges

    def class_atom(self) -> tuple:
        c = self.peek()
        self.i += 1
        if c == "\\":
            return self.escape(in_class=True)
        return ((ord(c), ord(c)),)


def _has_anchor(node) -> bool:
    if node in (_BOL, _EOL):
        return True
    if node[0] == "q":
        return _has_anchor(node[1])
    if node[0] == "g":
        return any(_has_anchor(t) for alt_ in node[1] for t in alt_)
    return False


def _build(node) -> tuple:
    kind = node[0]
    if kind == "cs":
        return cset(node[1])
    if kind == "q":
        return rep(_build(node[1]), node[2], node[3])
    if kind == "g":
        return alt(*(cat(*(_build(t) for t in seq)) for seq in node[1]))
    raise PatternError("anchors (^, $) are only supported at the start and end of the pattern")


def _top_alternatives(alts: list) -> list:
    """Lift alternatives of a group that spans a whole top-level alternative."""
    out = []
    for seq in alts:
        core = [t for t in seq if t not in (_BOL, _EOL)]
        if len(core) == 1 and core[0][0] == "g" and len(core[0][1]) > 1 and \
                all(t in (_BOL, _EOL) for t in seq[:seq.index(core[0])]) and \
                any(_has_anchor(t) for a in core[0][1] for t in a):
            pos = seq.index(core[0])
            for inner in core[0][1]:
                out.extend(_top_alternatives([seq[:pos] + inner + seq[pos + 1:]]))
        else:
            out.append(seq)
    return out


def parse_pattern(pattern: str) -> tuple:
    """Translate an ECMA-262 regex into a tree over (decoded) string content.

    Parameters
    ----------
    pattern
        The ``pattern`` keyword's value.

    Returns
    -------
    tuple
        A tree matching every string the pattern matches anywhere (``^`` and ``$`` anchor it
        at the start and end); :func:`encode` turns it into a tree over serialised content.

    Raises
    ------
    PatternError
        For invalid syntax, back references, lookarounds, word boundaries, Unicode property
        escapes, and anchors anywhere but at the ends of the pattern.
    """
    p = _Parser(pattern)
    alts = p.disjunction()
    if p.i != len(pattern):
        raise p.error("unbalanced ')'")
    anything = rep(cset(FULL), 0, None)
    out = []
    for seq in _top_alternatives(alts):
        start = end = False
        while seq and seq[0] == _BOL:
            start, seq = True, seq[1:]
        while seq and seq[-1] == _EOL:
            end, seq = True, seq[:-1]
        body = cat(*(_build(t) for t in seq))
        out.append(cat(EMPTY if start else anything, body, EMPTY if end else anything))
    return alt(*out)
