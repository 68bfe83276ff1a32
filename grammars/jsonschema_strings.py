"""Strings whose automaton has no regular expression of reasonable size, spelled out as rules.

A ``pattern`` combined with ``maxLength`` (say ``[a-z]+(-[a-z]+)*`` of at most 64 characters)
has a small automaton, but any regex for it grows with the length bound times the pattern's
structure. Such a string becomes a right-linear grammar instead: one rule per automaton state,
one terminal per character class (the classes leaving a state are disjoint, so the contextual
lexer never has to choose), the escapes of ``json.dumps`` spelled character by character.
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
