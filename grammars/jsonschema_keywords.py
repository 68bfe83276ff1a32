"""Keywords of one flat conjunction of schemas (no ``allOf``/``anyOf``/``oneOf``/``$ref`` left).

:func:`flat_parts` reads the validation keywords of every schema of the conjunction and returns
what the values may be: a regex tree per scalar kind (``null``, ``boolean``, ``number``,
``string``, each tree over the serialised value), and the object and array shapes.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

from .jsonschema_automata import decimal_multiples
from .jsonschema_fsm import AutomatonTooLarge, compile_tree, product, to_tree
from .jsonschema_pattern import PatternError, parse_pattern
from .jsonschema_regex import NOTHING, alt, lit
from .jsonschema_scalars import (
    SAFE_NUMBERS,
    _to_fraction,
    format_tree,
    greedy,
    integer_multiples,
    number_literal,
    number_range,
    number_tree,
    string_content,
)
from .jsonschema_shapes import ArrayShape, ObjectShape, matches, not_in

TYPES = ("null", "boolean", "integer", "number", "string", "object", "array")
UNSUPPORTED = ("unevaluatedItems",)
STANDARD_FORMATS = frozenset({"idn-email", "idn-hostname", "iri", "iri-reference", "uri-reference",
                              "uri-template", "json-pointer", "relative-json-pointer", "regex",
                              "duration"})
MAX_PATTERNS = 4


def _key(name: str) -> str:
    return f".{name}" if name.isidentifier() else f"[{json.dumps(name)}]"


def _types(conv, d: dict, path: str) -> set | None:
    if "type" not in d:
        return None
    t = d["type"]
    names = [t] if isinstance(t, str) else t
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        conv.invalid("type", f"{path}.type", "a type name or a list of type names")
    out = set()
    for n in names:
        if n == "any":
            return set(TYPES)
        if n not in TYPES:
            conv.invalid("type", f"{path}.type", "one of " + ", ".join(TYPES))
        out |= {"number", "integer"} if n == "number" else {n}
    if d.get("nullable") is True:
        out.add("null")
    return out


def _json_eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_eq(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def _count(conv, d: dict, kw: str, path: str) -> int:
    v = d[kw]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        conv.invalid(kw, f"{path}.{kw}", "a non-negative integer")
    return v


class _Bounds:
    def __init__(self) -> None:
        self.lo = self.hi = None
        self.lo_incl = self.hi_incl = True

    def add(self, conv, value, incl: bool, upper: bool, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            conv.invalid(path.rsplit(".", 1)[-1], path, "a finite number")
        f = _to_fraction(value)
        if upper:
            if self.hi is None or f < self.hi or (f == self.hi and not incl):
                self.hi, self.hi_incl = f, incl
        elif self.lo is None or f > self.lo or (f == self.lo and not incl):
            self.lo, self.lo_incl = f, incl


def flat_parts(conv, branch: list) -> tuple:
    """``(scalar trees by kind, object shapes, array shapes)`` of a flat conjunction."""
    types = set(TYPES)
    enum = None
    min_len, max_len, string_trees = 0, None, []
    bounds, integer_only, multiple, multiple_path = _Bounds(), False, 1, ""
    fraction, fraction_path = None, ""
    nots, forbid, tags, witnesses = [], set(), [], []
    for d, path in branch:
        if "__oneof__" in d:
            tags.append(tuple(d["__oneof__"]))
            continue
        if "__forbid__" in d:
            forbid.update(d["__forbid__"])
            continue
        if "__witness__" in d:
            witnesses.append((d["__witness__"], path))
            continue
        if "__not__" in d:
            nots.append((d["__not__"], path))
            continue
        t = _types(conv, d, path)
        if t is not None:
            types &= t
        for kw, v in d.items():
            p = f"{path}.{kw}"
            if kw in ("enum", "const"):
                if kw == "enum" and not isinstance(v, list):
                    conv.invalid(kw, p, "an array")
                vals = v if kw == "enum" else [v]
                enum = vals if enum is None else [
                    x for x in enum if any(_json_eq(x, y) for y in vals)]
            elif kw == "minLength":
                min_len = max(min_len, _count(conv, d, kw, path))
            elif kw == "maxLength":
                n = _count(conv, d, kw, path)
                max_len = n if max_len is None else min(max_len, n)
            elif kw == "pattern":
                if not isinstance(v, str):
                    conv.invalid(kw, p, "a regular expression string")
                try:
                    string_trees.append(parse_pattern(v))
                except PatternError as exc:
                    conv.unsupported(kw, p, str(exc))
            elif kw == "format" and isinstance(v, str):
                tree = format_tree(v)
                if tree is not None:
                    string_trees.append(tree)
                elif v in STANDARD_FORMATS:
                    conv.unsupported(kw, p, f"format {v!r} is not supported")
            elif kw in ("minimum", "maximum"):
                excl = d.get("exclusive" + kw.capitalize()) is True
                bounds.add(conv, v, not excl, kw == "maximum", p)
            elif kw in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
                bounds.add(conv, v, False, kw == "exclusiveMaximum", p)
            elif kw == "multipleOf":
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    conv.invalid(kw, p, "a positive number")
                if v == int(v):
                    integer_only = True
                    multiple = math.lcm(multiple, int(v))
                    multiple_path = p
                else:  # the decimal the schema wrote; steps combine by their lcm
                    step = Fraction(repr(v))
                    step = step if fraction is None else Fraction(
                        math.lcm(step.numerator, fraction.numerator),
                        math.gcd(step.denominator, fraction.denominator))
                    fraction, fraction_path = step, p
            elif kw == "uniqueItems" and v is True:
                conv.unsupported(kw, p, "unique items cannot be enforced by a grammar")
            elif kw in UNSUPPORTED:
                conv.unsupported(kw, p, "this keyword is not supported")
    path = branch[0][1] if branch else "$"
    if fraction is not None:
        if multiple > 1:  # lcm(n, p/q) = lcm(n, p) / gcd(1, q)
            fraction = Fraction(math.lcm(fraction.numerator, multiple))
        if fraction.denominator == 1:  # an integer step after all
            integer_only, multiple, multiple_path = True, fraction.numerator, fraction_path
            fraction = None
    scalars = _scalar_trees(conv, types, integer_only, bounds, min_len, max_len, string_trees, path)
    if multiple > 1 and "number" in scalars:
        tree = integer_multiples(multiple, bounds.lo, bounds.lo_incl, bounds.hi, bounds.hi_incl)
        if tree is None:
            conv.unsupported("multipleOf", multiple_path, f"multiples of {multiple} over this "
                             "range cannot be written as a regular expression here")
        else:
            scalars["number"] = tree
    if fraction is not None and "number" in scalars:
        steps = decimal_multiples(fraction)
        if steps is None:
            conv.unsupported("multipleOf", fraction_path, f"multiples of {fraction} need too "
                             "large an automaton")
        else:
            scalars["number"] = number_tree(product(steps, compile_tree(scalars["number"]),
                                                    "and"))
    objects = arrays = []
    if enum is not None:
        scalars, objects, arrays = _enum_parts(conv, enum, scalars, path)
    else:
        if "object" in types:
            shape = _object_shape(conv, branch, forbid, witnesses)
            objects = [shape] if shape is not None else []
        if "array" in types:
            shape = _array_shape(conv, branch)
            arrays = [shape] if shape is not None else []
    for sub, p in nots:
        scalars, objects, arrays = _subtract(conv, sub, p, scalars, objects, arrays)
    tags.sort()
    tag = (tuple(o for o, _ in tags), tuple(i for _, i in tags)) if tags else None
    # kinds whose trees miss some json.dumps texts of valid values ("1.0" for an integer;
    # a format, which validators check in their own ways)
    integer_texts = "integer" in types and (integer_only or "number" not in types)
    # (a fractional step: its tree has no exponent forms, such as "1.5e+20")
    inexact = ({"number"} if integer_texts or fraction is not None else set()) | (
        {"string"} if any(kw == "format" for d, _ in branch for kw in d) else set())
    return {k: t for k, t in scalars.items() if t != NOTHING}, objects, arrays, tag, inexact


def _difference(tree: tuple, other: tuple, kind: str) -> tuple:
    dfa = product(compile_tree(tree), compile_tree(other), "diff")
    if kind != "number":
        return to_tree(dfa)
    return number_tree(product(dfa, compile_tree(SAFE_NUMBERS), "and"))


def _scalar_trees(conv, types, integer_only, bounds, min_len, max_len, string_trees, path) -> dict:
    out = {}
    if "null" in types:
        out["null"] = lit("null")
    if "boolean" in types:
        out["boolean"] = alt(lit("true"), lit("false"))
    if "integer" in types:
        integer = integer_only or "number" not in types
        out["number"] = number_range(bounds.lo, bounds.lo_incl, bounds.hi, bounds.hi_incl, integer)
    if "string" in types:
        try:
            content = string_content(min_len, max_len, string_trees)
        except AutomatonTooLarge:
            conv.unsupported("pattern", path, "the combination of pattern, format and length "
                             "constraints is too complex to express as one regular expression")
            content = string_content(0, None, string_trees[:1])
        out["string"] = content
    return out


def _enum_parts(conv, enum: list, scalars: dict, path: str) -> tuple:
    """The scalar trees of the ``enum`` values that the other keywords admit."""
    literal: dict = {}
    automata: dict = {}
    for v in enum:
        kind = _kind(v)
        if kind in ("object", "array"):  # only when both enum and const hold structured values
            conv.unsupported("enum", path, "enum and const with object or array values together")
            continue
        if kind not in scalars:
            continue
        if kind not in automata:
            automata[kind] = compile_tree(scalars[kind])
        if kind == "number":  # the spellings of the value that the type and bounds admit
            tree = number_tree(product(compile_tree(number_literal(v)), automata[kind], "and"))
        elif automata[kind].accepts(v if kind == "string" else json.dumps(v)):
            tree = lit(v if kind == "string" else json.dumps(v))
        else:
            continue
        literal.setdefault(kind, []).append(tree)
    trees = {k: (greedy(alt(*v)) if k == "number" else alt(*v)) for k, v in literal.items()}
    return trees, [], []


def _subtract(conv, sub, path, scalars, objects, arrays) -> tuple:
    neg = conv.node([(sub, path)])
    if neg.pending or ("string" in neg.inexact and "string" in scalars):
        conv.unsupported("not", path, "a recursive schema or a format cannot be negated")
        return scalars, objects, arrays
    scalars = dict(scalars)
    for kind, tree in neg.scalars.items():
        if kind in scalars:
            scalars[kind] = _difference(scalars[kind], tree, kind)
    any_node = conv.node([])
    if neg.objects and objects:
        if any(not s.props and not s.min_props and s.max_props is None and len(s.extras) == 1 and
               s.extras[0] == (None, any_node) and not s.witnesses for s in neg.objects):
            objects = []
        else:
            conv.unsupported("not", path, "negated object constraints cannot be enforced")
    if neg.arrays and arrays:
        if any(not s.prefix and s.items is any_node and not s.min_items and s.max_items is None
               for s in neg.arrays):
            arrays = []
        else:
            conv.unsupported("not", path, "negated array constraints cannot be enforced")
    return scalars, objects, arrays


def _object_shape(conv, branch, forbid, witnesses=()) -> ObjectShape | None:
    names, required, per, unevaluated, name_schemas = [], [], [], [], []
    min_p, max_p, explicit = 0, None, False
    for d, path in branch:
        props = d.get("properties", {})
        if not isinstance(props, dict):
            conv.invalid("properties", f"{path}.properties", "an object of schemas")
        names += [n for n in props if n not in names]
        req = d.get("required", [])
        if isinstance(req, list):
            if not all(isinstance(n, str) for n in req):
                conv.invalid("required", f"{path}.required", "an array of strings")
            required += [n for n in req if n not in required]
        pats = []
        pattern_props = d.get("patternProperties", {})
        if not isinstance(pattern_props, dict):
            conv.invalid("patternProperties", f"{path}.patternProperties", "an object of schemas")
        for pat, sch in pattern_props.items():
            ppath = f"{path}.patternProperties[{json.dumps(pat)}]"
            try:
                pats.append((parse_pattern(pat), sch, ppath))
            except PatternError as exc:
                conv.unsupported("patternProperties", ppath, str(exc), approximable=False)
        add = (d["additionalProperties"], f"{path}.additionalProperties") \
            if "additionalProperties" in d else None
        if "unevaluatedProperties" in d:
            unevaluated.append((d["unevaluatedProperties"], f"{path}.unevaluatedProperties"))
        explicit |= add is not None or "unevaluatedProperties" in d
        if "propertyNames" in d:
            name_schemas.append((d["propertyNames"], f"{path}.propertyNames"))
        if "minProperties" in d:
            min_p = max(min_p, _count(conv, d, "minProperties", path))
        if "maxProperties" in d:
            n = _count(conv, d, "maxProperties", path)
            max_p = n if max_p is None else min(max_p, n)
        per.append((props, pats, add, path))
    names += [n for n in required if n not in names]
    names += [n for n in forbid if n not in names]
    declares = any("properties" in d or "required" in d for d, _ in branch)
    closed = [(False, branch[0][1])] if conv.forbid_additional and declares and not explicit \
        else []
    name_tree = None
    if name_schemas:
        name_tree = conv.node(name_schemas).scalars.get("string", NOTHING)
    props = []
    for n in names:
        schemas, declared, patterned = [], False, False
        for props_c, pats, add, path in per:
            matched = [(s, p) for t, s, p in pats if matches(t, n)]
            if n in props_c:
                schemas.append((props_c[n], f"{path}.properties{_key(n)}"))
                declared = True
            schemas += matched
            patterned |= bool(matched)
            if n not in props_c and not matched and add is not None:
                schemas.append(add)
        if not declared and not patterned:
            schemas += unevaluated + closed
        node = None
        if n not in forbid and (name_tree is None or matches(name_tree, n)):
            node = conv.node(schemas)
            node = node if node.symbol is not None else None
        if node is None and n in required:
            return None
        props.append((n, node, n in required))
    extras = _extras(conv, per, names, name_tree, unevaluated + closed)
    if max_p is not None and min_p > max_p:
        return None
    found = conv.witness_sets(witnesses)
    if found is None:
        return None
    return ObjectShape(props, extras, min_p, max_p, witnesses=found)


def _extras(conv, per, names, name_tree, leftover) -> list:
    unique: dict = {}  # the same pattern and schema from several schemas count once
    for ci, (_, pats, _, _) in enumerate(per):
        for t, s, p in pats:
            unique.setdefault((t, conv._canonical(s)), (set(), t, s, p))[0].add(ci)
    all_pats = list(unique.values())
    adds = [add for _, _, add, _ in per if add is not None]
    if not all_pats:
        node = conv.node(adds + leftover)
        if node.symbol is None:
            return []
        if name_tree is None:
            return [(None, node)]
        key = product(compile_tree(not_in(names)), compile_tree(name_tree), "and")
        return [] if key.is_empty() else [(to_tree(key), node)]
    if len(all_pats) > MAX_PATTERNS:
        conv.unsupported("patternProperties", per[0][3], f"more than {MAX_PATTERNS} patterns",
                         approximable=False)
    base = compile_tree(not_in(names))
    if name_tree is not None:
        base = product(base, compile_tree(name_tree), "and")
    dfas = [compile_tree(t) for _, t, _, _ in all_pats]
    by_node: dict = {}
    for mask in range(1 << len(all_pats)):
        inc = [i for i in range(len(all_pats)) if mask >> i & 1]
        schemas = [(all_pats[i][2], all_pats[i][3]) for i in inc]
        owners = set().union(*(all_pats[i][0] for i in inc))
        schemas += [add for ci, (_, _, add, _) in enumerate(per) if ci not in owners and add]
        if not inc:
            schemas += leftover
        node = conv.node(schemas)
        if node.symbol is not None:
            by_node.setdefault(id(node), (node, []))[1].append(mask)
    out = []
    for node, masks in by_node.values():
        if len(masks) == 1 << len(all_pats):  # the same value whatever the key
            out.append((None if name_tree is None else to_tree(base), node))
            continue
        if not names and name_tree is None and len(all_pats) == 1 and masks == [1]:
            out.append((all_pats[0][1], node))  # the pattern itself, no automaton needed
            continue
        region = None
        for mask in masks:
            part = base
            for i, d in enumerate(dfas):
                part = product(part, d, "and" if mask >> i & 1 else "diff")
            region = part if region is None else product(region, part, "or")
        if not region.is_empty():
            out.append((to_tree(region), node))
    return out


def _array_shape(conv, branch) -> ArrayShape | None:
    lists, tails, min_i, max_i = [], [], 0, None
    for d, path in branch:
        items = d.get("items", True)
        if "prefixItems" in d:
            pre, tail = d["prefixItems"], (items, f"{path}.items")
            kw = "prefixItems"
        elif isinstance(items, list):
            pre, tail = items, (d.get("additionalItems", True), f"{path}.additionalItems")
            kw = "items"
        else:
            pre, tail, kw = [], (items, f"{path}.items"), "items"
        if not isinstance(pre, list):
            conv.invalid(kw, f"{path}.{kw}", "an array of schemas")
        lists.append([(s, f"{path}.{kw}[{i}]") for i, s in enumerate(pre)])
        tails.append(tail)
        if "minItems" in d:
            min_i = max(min_i, _count(conv, d, "minItems", path))
        if "maxItems" in d:
            n = _count(conv, d, "maxItems", path)
            max_i = n if max_i is None else min(max_i, n)
    prefix = []
    for i in range(max((len(x) for x in lists), default=0)):
        node = conv.node([x[i] if i < len(x) else t for x, t in zip(lists, tails)])
        if node.symbol is None:
            max_i = i if max_i is None else min(max_i, i)
            break
        prefix.append(node)
    items = conv.node(tails)
    if items.symbol is None:
        items = None
        max_i = len(prefix) if max_i is None else min(max_i, len(prefix))
    if max_i is not None and min_i > max_i:
        return None
    contains = _contains(conv, branch, lists, tails, len(prefix))
    return ArrayShape(prefix, items, min_i, max_i, contains=contains)


def _contains(conv, branch, lists, tails, size: int) -> tuple | None:
    """``contains`` as (match, other) nodes per item, and the bounds on the count of matches."""
    found = [(d, path) for d, path in branch if "contains" in d]
    if not found:
        return None
    if len(found) > 1:
        conv.unsupported("contains", f"{found[1][1]}.contains", "only one contains per array "
                         "can be counted")
    d, path = found[0]
    least = _count(conv, d, "minContains", path) if "minContains" in d else 1
    most = _count(conv, d, "maxContains", path) if "maxContains" in d else None
    if least == 0 and most is None:
        return None
    cond = (d["contains"], f"{path}.contains")
    negated = ({"not": d["contains"]}, f"{path}.contains")

    def pair(conj):
        nodes = (conv.node(conj + [cond]), conv.node(conj + [negated]))
        return tuple(n if n.symbol is not None else None for n in nodes)
    pairs = [pair([x[i] if i < len(x) else t for x, t in zip(lists, tails)]) for i in range(size)]
    return pairs, pair(list(tails)), least, most
