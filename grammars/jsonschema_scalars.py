"""Regexes for JSON Schema scalars: bounded integers and numbers, string formats and lengths.

Numbers are matched in the forms ``json.dumps`` writes: integers as ``-?(0|[1-9][0-9]*)``,
floats as decimals (``12.5``) or with a normalised mantissa and an exponent (``1.5e-07``).
Bounds are enforced exactly on the written decimal value (so ``minimum: 0.1`` admits ``0.1``).
Every number tree goes through a DFA and comes back as a *greedy* tree: Python's leftmost-first
matching then returns the longest number, which is what a lexer needs.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from .jsonschema_fsm import DFA, compile_tree, minimize, product, to_greedy_tree, to_tree
from .jsonschema_pattern import parse_pattern
from .jsonschema_regex import EMPTY, FULL, NOTHING, AutomatonTooLarge, alt, cat, chars, cset, lit, opt, rep

DIGIT = cset(((48, 57),))
NONZERO = cset(((49, 57),))
_FRACTION = opt(cat(lit("."), rep(DIGIT, 1, None)))
#: Number texts inside which the number trees here are exact: canonical integers (not ``-0``) and
#: decimals of non-integers, without exponent. A difference of number languages is only exact
#: inside this set (``"1.0"`` is an integer that a tree for integers does not spell).
SAFE_NUMBERS = alt(lit("0"), cat(opt(lit("-")), NONZERO, rep(DIGIT, 0, None)),
                   cat(opt(lit("-")), alt(lit("0"), cat(NONZERO, rep(DIGIT, 0, None))), lit("."),
                       rep(DIGIT, 0, None), NONZERO, rep(DIGIT, 0, None)))
_EXPONENT = opt(cat(cset(chars("eE")), opt(cset(chars("+-"))), rep(DIGIT, 1, None)))
NUMBER = cat(opt(lit("-")), alt(lit("0"), cat(NONZERO, rep(DIGIT, 0, None))), _FRACTION, _EXPONENT)


@lru_cache(maxsize=512)
def greedy(node: tuple) -> tuple:
    """Rebuild a number tree so that leftmost-first matching is longest-match."""
    return number_tree(compile_tree(node))


def number_tree(dfa) -> tuple:
    """A tree for a number automaton: greedy when its only cycles are self-loops (ranges,
    fractions); otherwise (multiples) the automaton itself, which grammars spell out as rules
    (a regex would let leftmost-first matching stop inside a number)."""
    tree = to_greedy_tree(dfa)
    return tree if tree is not None else ("dfa", dfa)


# ---------------------------------------------------------------------------- integers

def _same_length(x: str, y: str) -> tuple:
    """Digit strings of equal length between ``x`` and ``y`` (inclusive)."""
    if x == y:
        return lit(x)
    n = len(x) - 1
    if x[1:] == "0" * n and y[1:] == "9" * n:
        return cat(cset(((ord(x[0]), ord(y[0])),)), rep(DIGIT, n, n))
    if x[0] == y[0]:
        return cat(lit(x[0]), _same_length(x[1:], y[1:]))
    lo_digit, hi_digit = ord(x[0]), ord(y[0])
    parts = []
    if x[1:] != "0" * n:
        parts.append(cat(lit(x[0]), _same_length(x[1:], "9" * n)))
        lo_digit += 1
    tail = None
    if y[1:] != "9" * n:
        tail = cat(lit(y[0]), _same_length("0" * n, y[1:]))
        hi_digit -= 1
    if lo_digit <= hi_digit:
        parts.append(cat(cset(((lo_digit, hi_digit),)), rep(DIGIT, n, n)))
    if tail is not None:
        parts.append(tail)
    return alt(*parts)


def naturals(lo: int, hi: int | None) -> tuple:
    """Canonical decimal naturals in ``[lo, hi]`` (``hi=None``: unbounded); ``lo >= 0``."""
    if hi is not None and hi < lo:
        return NOTHING
    parts = []
    top = len(str(hi)) if hi is not None else len(str(lo))
    for d in range(len(str(lo)), top + 1):
        a = max(lo, 10 ** (d - 1) if d > 1 else 0)
        b = 10 ** d - 1 if hi is None else min(hi, 10 ** d - 1)
        if a <= b:
            parts.append(_same_length(str(a).zfill(d), str(b).zfill(d)))
    if hi is None:
        parts.append(cat(NONZERO, rep(DIGIT, top, None)))
    return alt(*reversed(parts))


def integer_range(lo: int | None, hi: int | None) -> tuple:
    """Integers (as ``json.dumps`` writes them) in ``[lo, hi]``; ``None`` is unbounded."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(naturals(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        mag_lo = 1 if hi is None or hi >= 0 else -hi
        parts.append(cat(lit("-"), naturals(mag_lo, None if lo is None else -lo)))
    return greedy(alt(*parts))


# ---------------------------------------------------------------------------- decimals

def _digits(frac: Fraction) -> str:
    """Fraction digits of a value in [0, 1) with a finite decimal expansion."""
    s = format(Decimal(frac.numerator) / Decimal(frac.denominator), "f")
    return s.split(".")[1].rstrip("0") if "." in s else ""


def _frac_cmp(f: str, op: str, nonempty: bool) -> tuple:
    """Digit strings D (``0.D`` compared with ``0.f``) satisfying ``op`` in ge/gt/le/lt."""
    if not f:
        if op == "ge":
            return rep(DIGIT, 1 if nonempty else 0, None)
        if op == "gt":
            return cat(rep(DIGIT, 0, None), NONZERO, rep(DIGIT, 0, None))
        if op == "le":
            return rep(lit("0"), 1 if nonempty else 0, None)
        return NOTHING
    d = ord(f[0])
    if op in ("ge", "gt"):
        above = cset(((d + 1, 57),)) if d < 57 else NOTHING
        return alt(cat(above, rep(DIGIT, 0, None)), cat(lit(f[0]), _frac_cmp(f[1:], op, False)))
    below = cset(((48, d - 1),)) if d > 48 else NOTHING
    return alt(cat(below, rep(DIGIT, 0, None)), cat(lit(f[0]), _frac_cmp(f[1:], op, False)),
               EMPTY if not nonempty else NOTHING)


def _with_fraction(int_part: tuple, lower: tuple | None, upper: tuple | None) -> tuple:
    """``int_part`` followed by an optional fraction whose value satisfies the bounds.

    ``lower``/``upper`` are ``(digits, inclusive)`` on the fraction value, or ``None``.
    """
    def fractions(nonempty: bool) -> tuple:
        trees = [rep(DIGIT, 1 if nonempty else 0, None)]
        if lower is not None:
            trees.append(_frac_cmp(lower[0], "ge" if lower[1] else "gt", nonempty))
        if upper is not None:
            trees.append(_frac_cmp(upper[0], "le" if upper[1] else "lt", nonempty))
        dfa = compile_tree(trees[0])
        for t in trees[1:]:
            dfa = product(dfa, compile_tree(t), "and")
        return to_tree(dfa)
    zero_ok = (lower is None or (lower[0] == "" and lower[1])) and (
        upper is None or upper[0] != "" or upper[1])
    return cat(int_part, alt(cat(lit("."), fractions(True)), EMPTY if zero_ok else NOTHING))


def _decimals(lo: Fraction, lo_incl: bool, hi: Fraction | None, hi_incl: bool) -> tuple:
    """Non-negative decimals without exponent in the interval (``lo >= 0``)."""
    a_int = int(lo)
    low = (_digits(lo - a_int), lo_incl)
    if hi is None:
        return alt(_with_fraction(lit(str(a_int)), low, None),
                   _with_fraction(naturals(a_int + 1, None), None, None))
    b_int = int(hi)
    high = (_digits(hi - b_int), hi_incl)
    if a_int == b_int:
        return _with_fraction(lit(str(a_int)), low, high)
    parts = [_with_fraction(lit(str(a_int)), low, None)]
    if b_int - a_int > 1:
        parts.append(_with_fraction(naturals(a_int + 1, b_int - 1), None, None))
    parts.append(_with_fraction(lit(str(b_int)), None, high))
    return alt(*parts)


def _exponents(lo: int | None, hi: int | None) -> tuple:
    """``e``/``E`` and an exponent in ``[lo, hi]`` (``None``: unbounded)."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(cat(opt(lit("+")), rep(lit("0"), 0, None), naturals(max(lo or 0, 0), hi)))
    if lo is None or lo < 0:
        mag = naturals(1 if hi is None or hi >= 0 else -hi, None if lo is None else -lo)
        parts.append(cat(lit("-"), rep(lit("0"), 0, None), mag))
    return cat(cset(chars("eE")), alt(*parts))


def _log10_floor(x: Fraction) -> int:
    e = len(str(int(x))) - 1 if x >= 1 else -len(_digits(x)) + len(_digits(x).lstrip("0")) - 1
    return e


def _scientific(lo: Fraction, lo_incl: bool, hi: Fraction | None, hi_incl: bool) -> tuple:
    """Positive numbers ``m e E`` with ``1 <= m < 10`` (one leading digit) in the interval."""
    if hi is not None and hi <= 0:
        return NOTHING
    mantissa = cat(NONZERO, _FRACTION)
    parts = []
    full_lo = None if lo == 0 else _log10_floor(lo) + (0 if lo == Fraction(10) ** _log10_floor(lo)
                                                        and lo_incl else 1)
    full_hi = None if hi is None else _log10_floor(hi) - 1
    if full_lo is None or full_hi is None or full_lo <= full_hi:
        parts.append(cat(mantissa, _exponents(full_lo, full_hi)))
    edges = set()
    if lo > 0:
        edges.add(_log10_floor(lo))
    if hi is not None and hi > 0:
        edges.add(_log10_floor(hi))
    for e in sorted(edges):
        if (full_lo is None or e >= full_lo) and (full_hi is None or e <= full_hi):
            continue
        scale = Fraction(10) ** e
        m_lo, m_lo_incl = max(lo / scale, Fraction(1)), lo_incl if lo / scale >= 1 else True
        if hi is None or hi / scale >= 10:
            m_hi, m_hi_incl = Fraction(10), False
        else:
            m_hi, m_hi_incl = hi / scale, hi_incl
        if m_lo > m_hi or (m_lo == m_hi and not (m_lo_incl and m_hi_incl)):
            continue
        m = _decimals(m_lo, m_lo_incl, m_hi, m_hi_incl)
        parts.append(cat(m, _exponents(e, e)))
    return alt(*parts)


def _to_fraction(x) -> Fraction:
    return Fraction(Decimal(repr(x))) if isinstance(x, float) else Fraction(x)


@lru_cache(maxsize=512)
def number_range(lo, lo_incl: bool, hi, hi_incl: bool, integer: bool) -> tuple:
    """Numbers (integers when ``integer``) between bounds; ``None`` bounds are open."""
    if integer:
        ilo = None if lo is None else _ceil_int(_to_fraction(lo), lo_incl)
        ihi = None if hi is None else _floor_int(_to_fraction(hi), hi_incl)
        if ilo is not None and ihi is not None and ilo > ihi:
            return NOTHING
        return integer_range(ilo, ihi)
    if lo is None and hi is None:
        return greedy(NUMBER)
    flo = None if lo is None else _to_fraction(lo)
    fhi = None if hi is None else _to_fraction(hi)
    if flo is not None and fhi is not None and (
            flo > fhi or (flo == fhi and not (lo_incl and hi_incl))):
        return NOTHING
    parts = []
    if fhi is None or fhi > 0 or (fhi == 0 and hi_incl):
        a, a_incl = (Fraction(0), True) if flo is None or flo < 0 else (flo, lo_incl)
        parts += [_scientific(a, a_incl, fhi, hi_incl), _decimals(a, a_incl, fhi, hi_incl)]
    if flo is None or flo < 0:
        a, a_incl = (Fraction(0), True) if fhi is None or fhi > 0 else (-fhi, hi_incl)
        b = None if flo is None else -flo
        parts.append(cat(lit("-"), alt(_scientific(a, a_incl, b, lo_incl),
                                       _decimals(a, a_incl, b, lo_incl))))
    elif flo == 0 and lo_incl:  # -0.0 == 0
        parts.append(cat(lit("-0"), opt(cat(lit("."), rep(lit("0"), 1, None)))))
    return greedy(alt(*parts))


def integer_multiples(k: int, lo, lo_incl: bool, hi, hi_incl: bool) -> tuple | None:
    """Integers that are multiples of ``k`` within the bounds, or ``None`` when nothing here
    can say it (``k`` over 200 with a range too long to list)."""
    tree = _integer_multiples(k, lo, lo_incl, hi, hi_incl)
    if tree is not None or k > 200:
        return tree
    ilo = None if lo is None else _ceil_int(_to_fraction(lo), lo_incl)
    ihi = None if hi is None else _floor_int(_to_fraction(hi), hi_incl)
    return number_tree(product(_multiples_automaton(k), compile_tree(integer_range(ilo, ihi)),
                               "and"))


def _integer_multiples(k: int, lo, lo_incl: bool, hi, hi_incl: bool) -> tuple | None:
    """:func:`integer_multiples` as a regex or a short list, or ``None``."""
    ilo = None if lo is None else _ceil_int(_to_fraction(lo), lo_incl)
    ihi = None if hi is None else _floor_int(_to_fraction(hi), hi_incl)

    def listed(a: int, b: int) -> list | None:
        if b < a:
            return []
        if (b - a) // k > 2000:
            return None
        return [str(v) for v in range(-((-a) // k) * k, b + 1, k)]

    if ilo is not None and ihi is not None:
        few = listed(ilo, ihi)
        if few is not None and len(few) <= 200:
            return alt(*(lit(t) for t in _longest_first(few)))
    digits = next((d for d in range(1, 7) if 10 ** d % k == 0), None)
    if digits is None:  # divisibility by k is an automaton on the digits; bounds intersect it
        if not _automaton_fits(k):
            return None
        return number_tree(product(_multiples_automaton(k), compile_tree(integer_range(ilo, ihi)),
                                   "and"))
    suffixes = None if digits is None else alt(
        *(lit(str(v).zfill(digits)) for v in range(0, 10 ** digits, k)))
    small = [] if digits is None else [str(v) for v in range(k, 10 ** digits, k)]
    # a run of digits, then the last digits: leftmost-first matching still finds the longest
    unbounded = None if digits is None else alt(cat(NONZERO, rep(DIGIT, 0, None), suffixes),
                                                *(lit(t) for t in _longest_first(small)))
    parts, texts = [], []
    if ihi is None or ihi >= 0:  # zero and the positive multiples
        if ihi is None and (ilo is None or ilo <= 0):
            if unbounded is None:
                return None
            parts.append(unbounded)
            texts.append("0")
        else:
            found = listed(max(ilo or 0, 0), ihi) if ihi is not None else None
            if found is None:
                return None
            texts += found
    if ilo is None or ilo < 0:  # the negative multiples
        if ilo is None and (ihi is None or ihi >= -1):
            if unbounded is None:
                return None
            parts.append(cat(lit("-"), unbounded))
        else:
            top = min(ihi, -1) if ihi is not None else -1
            found = listed(ilo, top) if ilo is not None else None
            if found is None:
                return None
            texts += found
    return alt(*parts, *(lit(t) for t in _longest_first(texts)))


def _automaton_fits(k: int) -> bool:
    """Whether the divisibility automaton of ``k`` stays small: its minimal size grows with
    the part of ``k`` prime to 10 (the factors 2 and 5 only look at the last digits)."""
    odd = k
    for p in (2, 5):
        while odd % p == 0:
            odd //= p
    return odd <= 1000 and k <= 4000


def _multiples_automaton(k: int):
    """DFA of the canonical integers divisible by ``k`` (states: sign, then remainder)."""
    bounds = tuple(sorted({0, 45, 46} | set(range(48, 59))))
    cls = {ch: bounds.index(ord(ch)) for ch in "-0123456789"}
    trans = [dict() for _ in range(3 + 2 * k)]  # start, after "-", "0", remainders (+, -)
    trans[0][cls["-"]], trans[0][cls["0"]] = 1, 2
    finals = {2}
    for sign_state, base in ((0, 3), (1, 3 + k)):
        for d in range(1, 10):
            trans[sign_state][cls[str(d)]] = base + d % k
        for r in range(k):
            for d in range(10):
                trans[base + r][cls[str(d)]] = base + (10 * r + d) % k
        finals.add(base)
    return minimize(DFA(bounds, trans, finals))


def _longest_first(texts: list) -> list:
    return sorted(set(texts), key=lambda t: (-len(t), t))


def number_literal(value) -> tuple:
    """Tree of the spellings of a number: its ``json.dumps`` text, and the integer or plain
    decimal of the same value with any trailing zeros (``1.0`` admits ``1``, ``1e-05`` admits
    ``0.00001``)."""
    import json
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    parts = [lit(json.dumps(value))]
    if d == d.to_integral_value():
        text = str(int(d)) if d else "0"
        parts += [lit(text), cat(lit(text + "."), rep(lit("0"), 1, None))]
    else:
        parts.append(cat(lit(format(d, "f")), rep(lit("0"), 0, None)))
    return alt(*parts)


def _ceil_int(x: Fraction, incl: bool) -> int:
    n = -((-x.numerator) // x.denominator)
    return n + 1 if n == x and not incl else n


def _floor_int(x: Fraction, incl: bool) -> int:
    n = x.numerator // x.denominator
    return n - 1 if n == x and not incl else n


# ---------------------------------------------------------------------------- formats

_DAY31 = "(0[1-9]|[12][0-9]|3[01])"
_DATE = ("([0-9]{4}-(0[13578]|1[02])-" + _DAY31 + "|[0-9]{4}-(0[469]|11)-(0[1-9]|[12][0-9]|30)"
         "|[0-9]{4}-02-(0[1-9]|1[0-9]|2[0-8])"
         "|([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)")
_TIME = ("([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
         "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = f"{_OCTET}(\\.{_OCTET}){{3}}"
_H16 = "[0-9A-Fa-f]{1,4}"
_URI_CHAR = "([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})"


def _ipv6() -> str:
    forms = [f"({_H16}:){{7}}{_H16}", f"({_H16}:){{6}}{_IPV4}"]
    for left in range(0, 8):  # groups before "::", which stands for at least one zero group
        head = f"({_H16}:){{{left - 1}}}{_H16}" if left else ""
        right = 7 - left
        forms.append(f"{head}::({_H16}(:{_H16}){{0,{right - 1}}})?" if right else f"{head}::")
        if left <= 5:
            forms.append(f"{head}::({_H16}:){{0,{5 - left}}}{_IPV4}")
    return "(" + "|".join(forms) + ")"


FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}[Tt]{_TIME}",
    "email": f"{_ATEXT}+(\\.{_ATEXT}+)*@{_LABEL}(\\.{_LABEL})*",
    "uuid": "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "uri": f"[A-Za-z][A-Za-z0-9+.-]*:{_URI_CHAR}*(#{_URI_CHAR}*)?",
    "ipv4": _IPV4,
    "ipv6": _ipv6(),
    "hostname": f"{_LABEL}(\\.{_LABEL})*",
}
_FORMAT_TREES: dict = {}


def format_tree(name: str) -> tuple | None:
    """Content tree of a supported ``format``, or ``None`` when it is not supported."""
    if name not in FORMATS:
        return None
    if name not in _FORMAT_TREES:
        _FORMAT_TREES[name] = parse_pattern("^" + FORMATS[name] + "$")
    return _FORMAT_TREES[name]


# ---------------------------------------------------------------------------- string content

def _length_range(node: tuple) -> tuple:
    kind = node[0]
    if kind == "lit":
        return len(node[1]), len(node[1])
    if kind == "set":
        return 1, 1
    if kind == "rep":
        lo, hi = _length_range(node[1])
        return lo * node[2], None if node[3] is None or hi is None else hi * node[3]
    ranges = [_length_range(p) for p in node[1]]
    if kind == "cat":
        return sum(r[0] for r in ranges), (None if any(r[1] is None for r in ranges)
                                           else sum(r[1] for r in ranges))
    if not ranges:
        return 0, 0
    return min(r[0] for r in ranges), (None if any(r[1] is None for r in ranges)
                                       else max(r[1] for r in ranges))


def _bound_length(node: tuple, m: int, n: int | None) -> tuple | None:
    """``node`` restricted to lengths in ``[m, n]`` by adjusting one repetition, if possible."""
    lo, hi = _length_range(node)
    if lo >= m and (n is None or (hi is not None and hi <= n)):
        return node
    if node[0] == "alt":
        parts = [_bound_length(p, m, n) for p in node[1]]
        return None if any(p is None for p in parts) else alt(*parts)
    items = list(node[1]) if node[0] == "cat" else [node]
    variable = [i for i, p in enumerate(items) if _length_range(p)[0] != _length_range(p)[1]]
    if len(variable) != 1 or items[variable[0]][0] != "rep":
        return None
    i = variable[0]
    _, inner, a, b = items[i]
    unit, unit_hi = _length_range(inner)
    if unit != unit_hi or unit == 0:
        return None
    fixed = sum(_length_range(p)[0] for j, p in enumerate(items) if j != i)
    new_lo = max(a, -(-(m - fixed) // unit))
    new_hi = b if n is None else (n - fixed) // unit if b is None else min(b, (n - fixed) // unit)
    items[i] = rep(inner, new_lo, new_hi)
    return cat(*items)


def string_content(min_len: int, max_len: int | None, constraints: list) -> tuple:
    """Content tree for strings of a length range matching every tree in ``constraints``.

    When the combination has no regex of reasonable size, the tree is ``("dfa", automaton)``.
    """
    return _string_content(min_len, max_len, tuple(constraints))


@lru_cache(maxsize=512)
def _string_content(min_len: int, max_len: int | None, constraints: tuple) -> tuple:
    if not constraints:
        return rep(cset(FULL), min_len, max_len)
    if len(constraints) == 1:
        node = constraints[0]
    else:
        dfa = compile_tree(constraints[0])
        for c in constraints[1:]:
            dfa = product(dfa, compile_tree(c), "and")
        node = _tree_or_automaton(dfa)
    if min_len == 0 and max_len is None:
        return node
    if node[0] != "dfa":
        bounded = _bound_length(node, min_len, max_len)
        if bounded is not None:
            return bounded
    dfa = product(compile_tree(node), compile_tree(rep(cset(FULL), min_len, max_len)), "and")
    return _tree_or_automaton(dfa)


def _tree_or_automaton(dfa) -> tuple:
    """A regex tree for ``dfa``, or the automaton itself (grammars then spell it as rules)."""
    try:
        return to_tree(dfa)
    except AutomatonTooLarge:
        return ("dfa", dfa)
