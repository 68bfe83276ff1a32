"""Combinators of the JSON Schema converter: schemas to disjunctive normal form.

A node's conjunction of schemas is expanded into *branches*, each a flat list of schema
objects that must all hold: ``$ref`` is inlined, ``allOf`` concatenates, ``anyOf``, ``oneOf``,
``if``/``then``/``else``, the ``dependencies`` keywords and ``enum`` values that are objects or
arrays multiply the branches, and ``not`` is pushed inwards (De Morgan, and exact negations of
``required``, ``properties``, size bounds, and of ``propertyNames`` and ``patternProperties`` as
*witnesses*: some key of a set whose value matches a schema). A ``oneOf`` marks each branch
with the alternative it came from, so that exactly one alternative can be required later.
"""

from __future__ import annotations

import json

from .jsonschema_fsm import compile_tree
from .jsonschema_regex import NOTHING

ANNOTATIONS = frozenset({
    "title", "description", "examples", "example", "default", "$schema", "$id", "id",
    "$comment", "deprecated", "readOnly", "writeOnly", "$anchor", "$dynamicAnchor", "$vocabulary",
    "$defs", "definitions", "contentMediaType", "contentEncoding", "contentSchema",
    "discriminator", "xml", "externalDocs", "then", "else"})
MAX_BRANCHES = 256
MAX_WITNESSES = 4

_COMBINATORS = frozenset({"$ref", "$recursiveRef", "$dynamicRef", "allOf", "anyOf", "oneOf", "not",
                          "if", "then", "else", "dependencies", "dependentRequired",
                          "dependentSchemas"})
_COUPLED = ({"properties", "patternProperties", "additionalProperties", "unevaluatedProperties"},
            {"items", "prefixItems", "additionalItems", "unevaluatedItems"},
            {"minimum", "exclusiveMinimum"}, {"maximum", "exclusiveMaximum"},
            {"if", "then", "else"}, {"contains", "minContains", "maxContains"},
            {"type", "nullable"}, {"$ref", "$recursiveRef", "$dynamicRef"})


def _key(name: str) -> str:
    return f".{name}" if name.isidentifier() else f"[{json.dumps(name)}]"


def _keyword_groups(core: dict) -> list:
    """Split a schema into sub-schemas that hold independently (their conjunction is it)."""
    groups, done = [], set()
    for k in core:
        if k in done:
            continue
        together = next((g for g in _COUPLED if k in g), {k})
        group = {x: core[x] for x in core if x in together}
        done |= set(group)
        groups.append(group)
    return groups


def _structured_literals(rest: dict):
    """``(scalar values, object/array values)`` of ``enum``/``const`` when some are structured."""
    if "const" in rest:
        values = [rest["const"]]
    elif isinstance(rest.get("enum"), list):
        values = rest["enum"]
    else:
        return None
    structured = [v for v in values if isinstance(v, (dict, list))]
    if not structured:
        return None
    if "const" in rest and "enum" in rest:
        return None
    return [v for v in values if not isinstance(v, (dict, list))], structured


def _excluded_names(schema) -> list | None:
    """The strings of ``{"not": {"enum": [...]}}`` (or ``const``), the only other keywords
    annotations, or ``None`` for any other schema."""
    if not isinstance(schema, dict) or set(schema) - ANNOTATIONS != {"not"}:
        return None
    sub = schema["not"]
    if not isinstance(sub, dict) or len(set(sub) - ANNOTATIONS) != 1:
        return None
    if "const" in sub:
        values = [sub["const"]]
    elif isinstance(sub.get("enum"), list):
        values = sub["enum"]
    else:
        return None
    return [v for v in values if isinstance(v, str)]


def _literal_schema(value) -> dict:
    """The schema of exactly one object or array value (its keys in their order)."""
    if isinstance(value, dict):
        return {"type": "object", "properties": {k: {"const": v} for k, v in value.items()},
                "required": list(value), "additionalProperties": False}
    return {"type": "array", "prefixItems": [{"const": v} for v in value], "items": False,
            "minItems": len(value)}


class Combinators:
    """Mixin of the converter: DNF expansion (needs ``resolve``, ``unsupported``, ``invalid``,
    ``new_rule``, ``node`` and ``old_draft``)."""

    def expand(self, conj: list, chain: tuple = ()) -> list:
        """Disjunctive normal form: branches of flat ``(dict, path)`` conjunctions."""
        branches: list = [[]]
        for schema, path in conj:
            branches = self._product(branches, self._expand_one(schema, path, chain), path)
        return branches

    def _product(self, left: list, right: list, path: str) -> list:
        out = [a + b for a in left for b in right]
        if len(out) > MAX_BRANCHES:
            self.unsupported("anyOf", path, f"more than {MAX_BRANCHES} combinations of "
                             "alternatives", approximable=False)
        return out

    def _expand_one(self, schema, path: str, chain: tuple) -> list:
        if schema is True:
            return [[]]
        if schema is False:
            return []
        if not isinstance(schema, dict):
            self.invalid("schema", path, "an object or a boolean")
        parts: list = [[]]
        if "$ref" in schema or "$recursiveRef" in schema or "$dynamicRef" in schema:
            kw = next(k for k in ("$ref", "$recursiveRef", "$dynamicRef") if k in schema)
            target, tpath = self.resolve(schema[kw], f"{path}.{kw}")
            if id(target) in chain:
                self.unsupported(kw, f"{path}.{kw}", "the reference loops back to itself without "
                                 "an object or array in between", approximable=False)
            parts = self._expand_one(target, tpath, chain + (id(target),))
            if self.old_draft and kw == "$ref":
                return parts
        rest = {k: v for k, v in schema.items() if k not in _COMBINATORS}
        literals = _structured_literals(rest)
        if literals is not None:
            scalars, structured = literals
            rest = {k: v for k, v in rest.items() if k not in ("enum", "const")}
            alts = [[({"enum": scalars}, path)]] if scalars else []
            alts += [[(_literal_schema(v), f"{path}.enum")] for v in structured]
            parts = self._product(parts, alts, path)
        if any(k not in ANNOTATIONS for k in rest):
            parts = [p + [(rest, path)] for p in parts]
        if "if" in schema:
            cond = schema["if"]
            then = self._product(self._expand_one(cond, f"{path}.if", chain),
                                 self._expand_one(schema.get("then", True), f"{path}.then", chain),
                                 path)
            other = self._product(self._not(cond, f"{path}.if", chain),
                                  self._expand_one(schema.get("else", True), f"{path}.else", chain),
                                  path)
            parts = self._product(parts, then + other, path)
        for kw in ("dependencies", "dependentRequired", "dependentSchemas"):
            deps = schema.get(kw, {})
            if not isinstance(deps, dict):
                self.invalid(kw, f"{path}.{kw}", "an object")
            for name, dep in deps.items():
                absent = [({"__forbid__": [name]}, path)]
                if isinstance(dep, list):
                    present = [[({"required": [name] + dep}, f"{path}.{kw}")]]
                else:
                    present = self._product([[({"required": [name]}, path)]], self._expand_one(
                        dep, f"{path}.{kw}{_key(name)}", chain), path)
                parts = self._product(parts, [absent] + present, path)
        for kw in ("allOf", "anyOf", "oneOf"):
            if kw not in schema:
                continue
            subs = schema[kw]
            if not isinstance(subs, list) or not subs:
                self.invalid(kw, f"{path}.{kw}", "a non-empty array of schemas")
            paths = [f"{path}.{kw}[{i}]" for i in range(len(subs))]
            if kw == "allOf":
                for s, p in zip(subs, paths):
                    parts = self._product(parts, self._expand_one(s, p, chain), p)
                continue
            marker = [self.new_rule("oneof"), 0] if kw == "oneOf" and len(subs) > 1 else None
            alts = []
            for i, (s, p) in enumerate(zip(subs, paths)):
                for b in self._expand_one(s, p, chain):
                    alts.append(b + [({"__oneof__": [marker[0], i]}, f"{path}.oneOf")]
                                if marker else b)
            parts = self._product(parts, alts, path)
        if "not" in schema:
            parts = self._product(parts, self._not(schema["not"], f"{path}.not", chain), path)
        return parts

    def _not(self, sub, path: str, chain: tuple = ()) -> list:
        """Branches of the values that do not match ``sub``."""
        if sub is True or sub == {}:
            return []
        if sub is False:
            return [[]]
        if not isinstance(sub, dict):
            self.invalid("not", path, "a schema")
        core = {k: v for k, v in sub.items() if k not in ANNOTATIONS}
        if "$ref" in core and (self.old_draft or len(core) == 1):
            target, tpath = self.resolve(core["$ref"], f"{path}.$ref")
            if id(target) in chain:
                return [[({"__not__": sub}, path)]]
            return self._not(target, tpath, chain + (id(target),))
        if not core:
            return []
        out: list = []
        for group in _keyword_groups(core):
            out += self._not_group(group, path, chain)
        return out

    def _not_group(self, group: dict, path: str, chain: tuple) -> list:
        """Branches of the values that fail the keywords of ``group`` (checked together)."""
        (kw, value), = list(group.items())[:1]
        if len(group) == 1:
            if kw == "not":
                return self._expand_one(value, f"{path}.not", chain)
            if kw == "anyOf" and isinstance(value, list):
                out: list = [[]]
                for i, s in enumerate(value):
                    out = self._product(out, self._not(s, f"{path}.anyOf[{i}]", chain), path)
                return out
            if kw == "allOf" and isinstance(value, list):
                return [b for i, s in enumerate(value)
                        for b in self._not(s, f"{path}.allOf[{i}]", chain)]
            if kw == "required" and isinstance(value, list) and value:
                # "required" holds for every non-object: its negation is an object without n
                return [[({"type": "object"}, path), ({"__forbid__": [n]}, path)] for n in value]
            names = _excluded_names(value) if kw == "propertyNames" else None
            if names is not None:
                # some key is one of the names (propertyNames holds for every non-object)
                return [[({"type": "object", "required": [n]}, path)] for n in names]
            if kw == "propertyNames":  # some key fails the names' schema
                return [[({"type": "object"}, path),
                         ({"__witness__": [{"not": value}, True]}, path)]]
            if kw == "patternProperties" and isinstance(value, dict) and \
                    all(isinstance(p, str) for p in value):
                # some key matching a pattern has a value failing that pattern's schema
                return [[({"type": "object"}, path),
                         ({"__witness__": [{"pattern": p}, {"not": s}]}, path)]
                        for p, s in value.items()]
            if kw == "properties" and isinstance(value, dict):
                return [[({"type": "object", "required": [n], "properties": {n: {"not": s}}},
                          path)] for n, s in value.items()]
            inverse = {"minProperties": ("object", "maxProperties", -1),
                       "maxProperties": ("object", "minProperties", 1),
                       "minItems": ("array", "maxItems", -1), "maxItems": ("array", "minItems", 1),
                       "minLength": ("string", "maxLength", -1),
                       "maxLength": ("string", "minLength", 1)}
            if kw in inverse and isinstance(value, int) and not isinstance(value, bool):
                kind, other, step = inverse[kw]
                return [] if value + step < 0 else [[({"type": kind, other: value + step}, path)]]
        return [[({"__not__": group}, path)]]

    def witness_sets(self, witnesses: list) -> list | None:
        """``(key tree, (value schema, path))`` of each ``__witness__`` marker (some key of
        the set has a value matching the schema), or ``None`` when one can never hold."""
        if len(witnesses) > MAX_WITNESSES:
            self.unsupported("not", witnesses[0][1], f"more than {MAX_WITNESSES} negated "
                             "propertyNames or patternProperties on one object",
                             approximable=False)
        out = []
        for (key_schema, value_schema), path in witnesses:
            keys = self.node([(key_schema, path)])
            if keys.pending or "string" in keys.inexact:
                self.unsupported("not", path, "the keys of a negated propertyNames or "
                                 "patternProperties must be a pattern without formats",
                                 approximable=False)
            tree = keys.scalars.get("string", NOTHING)
            if tree == NOTHING or compile_tree(tree).is_empty():
                return None
            out.append((tree, (value_schema, path)))
        return out
