"""ECMA-262 regular expressions (JSON Schema's ``pattern``) to regex trees.

:func:`parse_pattern` translates a pattern into a tree over (decoded) string content with the
schema's search semantics: an unanchored pattern may match anywhere in the string. Character
classes follow ECMA-262 (``\\d`` is ``[0-9]``, ``\\w`` is ASCII, ``.`` excludes line
terminators). Back references, lookarounds, word boundaries, Unicode property escapes and
anchors inside the pattern (other than at the ends of a top-level alternative, also through a
group that is the whole alternative, as in ``(^a$)|b``) are rejected with :class:`PatternError`.
"""

from __future__ import annotations

from .jsonschema_regex import DIGITS, EMPTY, FULL, LINE_TERMINATORS, SPACE, WORD, alt, cat, complement, cset, norm, rep


class PatternError(ValueError):
    """A regular expression uses syntax the converter cannot translate."""


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
        if len(core) == 1 and core[0][0] == "g" and \
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
