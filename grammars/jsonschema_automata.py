"""Scalars whose automaton has no good regular expression, spelled out as rules.

A ``pattern`` combined with ``maxLength`` (say ``[a-z]+(-[a-z]+)*`` of at most 64 characters)
has a small automaton, but any regex for it grows with the length bound times the pattern's
structure; the multiples of 7 have a regex, but leftmost-first matching (lark's lexer) could
stop inside a number. Such a scalar becomes a right-linear grammar instead: one rule per
automaton state, one terminal per character class (the classes leaving a state are disjoint, so
the contextual lexer never has to choose), a string's ``json.dumps`` escapes spelled character by
character, and a number ending where the automaton may stop (an empty alternative).
"""

from __future__ import annotations

from .jsonschema_fsm import DFA
from .jsonschema_regex import chars, complement, cset, intersect, lit, norm

_SPECIAL = norm([(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
_SHORT = {0x22: '"', 0x5C: "\\", 8: "b", 9: "t", 10: "n", 12: "f", 13: "r"}


def has_automaton(tree: tuple) -> bool:
    """Whether a regex tree contains an automaton node (``("dfa", ...)``)."""
    if tree[0] == "dfa":
        return True
    if tree[0] in ("cat", "alt"):
        return any(has_automaton(p) for p in tree[1])
    return tree[0] == "rep" and has_automaton(tree[1])


def _by_target(pairs) -> dict:
    out: dict = {}
    for key, target in pairs:
        out.setdefault(target, []).append(key)
    return out


def string_rule(conv, dfa: DFA) -> str:
    """The symbol of a rule for the JSON strings whose decoded content ``dfa`` accepts."""
    quote = conv.terminal(lit('"'))
    names = [conv.new_rule("str") for _ in dfa.trans]
    for q, trans in enumerate(dfa.trans):
        alts = []
        short, long_ = [], []
        for target, classes in _by_target((c, t) for c, t in trans.items()).items():
            ranges = norm(dfa.interval(c) for c in classes)
            plain = intersect(ranges, complement(_SPECIAL))
            if plain:
                alts.append([conv.terminal(cset(plain)), names[target]])
            for lo, hi in intersect(ranges, _SPECIAL):
                for code in range(lo, hi + 1):
                    if code in _SHORT:
                        short.append((_SHORT[code], target))
                    else:
                        long_.append((f"{code:04x}"[2:], target))
        if short or long_:
            alts.append([conv.terminal(lit("\\")), _escape_rule(conv, names, short, long_)])
        if q in dfa.finals:
            alts.append([quote])
        conv.rules[names[q]] = alts
    start = conv.new_rule("str")
    conv.rules[start] = [[quote, names[0]]]
    return start


def number_rule(conv, dfa: DFA) -> str:
    """The symbol of a rule for the number texts ``dfa`` accepts (no escapes, no delimiter)."""
    names = [conv.new_rule("num") for _ in dfa.trans]
    for q, trans in enumerate(dfa.trans):
        alts = [[conv.terminal(cset(norm(dfa.interval(c) for c in classes))), names[target]]
                for target, classes in _by_target((c, t) for c, t in trans.items()).items()]
        if q in dfa.finals:
            alts.append([])
        conv.rules[names[q]] = alts
    return names[0]


def _escape_rule(conv, names: list, short: list, long_: list) -> str:
    """After a backslash: the escape letter, or ``u00`` and two hex digits."""
    rule = conv.new_rule("esc")
    alts = [[conv.terminal(cset(chars("".join(letters)))), names[target]]
            for target, letters in _by_target(short).items()]
    if long_:
        hex_rule = conv.new_rule("esc")
        hex_alts = []
        for high, pairs in _by_target(((code[1], t), code[0]) for code, t in long_).items():
            low_rule = conv.new_rule("esc")
            conv.rules[low_rule] = [
                [conv.terminal(cset(chars("".join(lows)))), names[target]]
                for target, lows in _by_target(pairs).items()]
            hex_alts.append([conv.terminal(lit(high)), low_rule])
        conv.rules[hex_rule] = hex_alts
        alts.append([conv.terminal(lit("u00")), hex_rule])
    conv.rules[rule] = alts
    return rule



def decimal_multiples(step, max_states: int = 400) -> DFA | None:
    """DFA of the decimal texts (``json.dumps`` forms without an exponent) of the multiples
    of ``step``, or ``None`` when it would need more than ``max_states`` states.

    ``step`` is a positive :class:`fractions.Fraction` whose denominator divides a power of
    ten (a decimal from a schema). A multiple of ``p/q`` with ``q`` dividing ``10**d`` has at
    most ``d`` fraction digits and is ``m / 10**d`` with ``m`` a multiple of
    ``k = p * 10**d / q``: the automaton reads the digits as ``m`` modulo ``k`` and accepts
    where the missing fraction digits (zeros) leave the remainder zero.
    """
    d = next((d for d in range(0, 64) if 10 ** d % step.denominator == 0), None)
    if d is None:
        return None
    k = step.numerator * 10 ** d // step.denominator
    if 3 + k * (d + 2) > max_states:
        return None
    bounds = tuple(sorted({0, 45, 46, 47} | set(range(48, 59))))
    cls = {ch: bounds.index(ord(ch)) for ch in "-.0123456789"}

    # 0 start, 1 after "-", 2 a lone "0"; integer part remainders; then, per count f of
    # fraction digits read (0: just after the point), the remainders
    def integer(r: int) -> int:
        return 3 + r

    def fraction(f: int, r: int) -> int:
        return 3 + k + f * k + r

    trans: list = [dict() for _ in range(3 + k * (d + 2))]
    finals = {2}
    trans[0][cls["-"]] = 1
    for s in (0, 1):
        trans[s][cls["0"]] = 2
        for digit in range(1, 10):
            trans[s][cls[str(digit)]] = integer(digit % k)
    if d:
        trans[2][cls["."]] = fraction(0, 0)
    for r in range(k):
        if r * 10 ** d % k == 0:
            finals.add(integer(r))
        for digit in range(10):
            trans[integer(r)][cls[str(digit)]] = integer((10 * r + digit) % k)
        if d:
            trans[integer(r)][cls["."]] = fraction(0, r)
        for f in range(d + 1):
            if f and r * 10 ** (d - f) % k == 0:
                finals.add(fraction(f, r))
            if f < d:
                for digit in range(10):
                    trans[fraction(f, r)][cls[str(digit)]] = fraction(f + 1, (10 * r + digit) % k)
    return DFA(bounds, trans, finals)
