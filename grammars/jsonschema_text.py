"""Grammar text of the JSON Schema converter, and the check that lark can use it as is.

Rules that derive the same structure are merged (as states of an automaton are), unreachable
ones dropped, and the LALR(1) tables built in strict mode: no shift/reduce or reduce/reduce
conflict, and no parser state whose terminals could match the same text.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from decodekit.errors import UnsupportedSchemaError

from .jsonschema_fsm import compile_tree, first_chars, product
from .jsonschema_regex import intersect, render

#: lark's LALR analysis recurses once per rule of a chain; Python's default limit (1,000 frames,
#: fewer left in a deep caller such as a worker process) is too low for large schemas
ANALYSIS_RECURSION_LIMIT = 20_000


@contextlib.contextmanager
def recursion_limit(at_least: int) -> Iterator[None]:
    """Raise Python's recursion limit to ``at_least`` for the block (never lower it)."""
    old = sys.getrecursionlimit()
    if old < at_least:
        sys.setrecursionlimit(at_least)
    try:
        yield
    finally:
        if old < at_least:
            sys.setrecursionlimit(old)


def check_lalr(conv, text: str) -> None:
    """Check the grammar is LALR(1) (no conflict) and that no parser state accepts two
    terminals that can match the same text (the contextual lexer would have to guess)."""
    from lark.common import ParserConf
    from lark.exceptions import GrammarError
    from lark.load_grammar import load_grammar
    from lark.parsers.lalr_analysis import LALR_Analyzer

    try:
        with recursion_limit(ANALYSIS_RECURSION_LIMIT):
            grammar, _ = load_grammar(text, "<schema>", None, False)
            _, rules, _ = grammar.compile(["start"], set())
            analysis = LALR_Analyzer(ParserConf(rules, {}, ["start"]), strict=True)
            analysis.compute_lalr()
    except GrammarError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UnsupportedSchemaError(
            "anyOf", "$", "the alternatives of the schema are ambiguous for an LALR(1) parser "
            f"({first})", approximable=False) from None
    trees = {name: tree for tree, name in conv.trees.items()}
    dfas: dict = {}
    checked: set = set()
    for actions in analysis.parse_table.states.values():
        names = sorted(n for n in actions if n in trees)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if (a, b) in checked:
                    continue
                checked.add((a, b))
                if not _disjoint_terminals(trees[a], trees[b], dfas):
                    raise UnsupportedSchemaError(
                        "anyOf", "$", f"two alternatives need overlapping terminals in the same "
                        f"place (/{render(trees[a])[:60]}/ and /{render(trees[b])[:60]}/)",
                        approximable=False)


def _matches_text(tree: tuple, text: str) -> bool:
    return re.fullmatch(render(tree), text, re.S) is not None


def _disjoint_terminals(a: tuple, b: tuple, dfas: dict) -> bool:
    if a[0] == "lit" and b[0] == "lit":
        return a[1] != b[1]
    (ra, na), (rb, nb) = first_chars(a), first_chars(b)
    if not na and not nb and not intersect(ra, rb):
        return True
    if a[0] == "lit" or b[0] == "lit":
        text, tree = (a[1], b) if a[0] == "lit" else (b[1], a)
        return not _matches_text(tree, text)
    for x in (a, b):
        if x not in dfas:
            dfas[x] = compile_tree(x)
    return product(dfas[a], dfas[b], "and").is_empty()


def _merge_equivalent(rules: dict) -> dict:
    """Map each rule to one representative of the rules that derive the same structure
    (the coarsest partition stable under substitution, as in automaton minimisation)."""
    names = sorted(rules, key=lambda n: (len(n), n))
    block = {n: 0 for n in names}
    count = 1
    while True:
        ids: dict = {}
        new = {}
        for n in names:
            sig = tuple(sorted(tuple(str(block.get(sym, sym)) for sym in a) for a in rules[n]))
            new[n] = ids.setdefault((block[n], sig), len(ids))
        block = new
        if len(ids) == count:
            break
        count = len(ids)
    first: dict = {}
    return {n: first.setdefault(block[n], n) for n in names}


def grammar_text(conv, start: str) -> str:
    rep_of = _merge_equivalent(conv.rules)
    rules, seen, todo, used_terms = {}, set(), [rep_of.get(start, start)], set()
    while todo:
        sym = todo.pop()
        if sym in seen:
            continue
        seen.add(sym)
        if sym in conv.rules:
            body = [[rep_of.get(x, x) for x in a] for a in conv.rules[sym]]
            rules[sym] = [a for i, a in enumerate(body) if a not in body[:i]]
            todo.extend(x for a in rules[sym] for x in a)
        else:
            used_terms.add(sym)
    lines = [f"start: {rep_of.get(start, start)}"]
    for name in sorted(rules, key=lambda n: (len(n), n)):
        lines.append(f"{name}: " + "\n    | ".join(" ".join(a) for a in rules[name]))
    for rx, name in conv.terminals.items():
        if name in used_terms:
            lines.append(f"{name}: /{rx}/")
    return "\n".join(lines) + "\n"
