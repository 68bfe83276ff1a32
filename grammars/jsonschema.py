"""JSON Schema to lark grammar.

:func:`schema_to_lark` turns a JSON Schema into an LALR(1) lark grammar whose language is the set
of JSON texts, as ``json.dumps(value, ensure_ascii=False)`` writes them, of the values that
validate against the schema. Structure (objects, arrays, alternatives) lives in rules; terminals
are keys, punctuation and whole scalars (one terminal per value position), and no two terminals
a parser state accepts overlap, so lark's contextual lexer is never ambiguous.

Supported keywords: ``type`` (also lists), ``enum``/``const`` (objects and arrays too),
``nullable``, ``allOf``, ``anyOf``, ``oneOf`` (exactly one alternative: scalars through automata,
objects and arrays by following every alternative), ``not`` (of scalar constraints, of whole
types, of ``required``, ``properties`` and size bounds, of ``propertyNames`` and
``patternProperties``: some key outside the names, or matching a pattern with a value failing
its schema; and through ``allOf``/``anyOf``/``not``),
``if``/``then``/``else``, ``dependencies``/``dependentRequired``/``dependentSchemas``, local
``$ref`` with ``$defs``/``definitions`` (recursion included), ``properties`` (in declared order),
``required``, ``additionalProperties``, ``patternProperties``, ``propertyNames``,
``unevaluatedProperties``, ``minProperties``/``maxProperties``, ``items``, ``prefixItems``,
``additionalItems``, ``contains``/``minContains``/``maxContains``, ``minItems``/``maxItems``,
``minLength``/``maxLength``, ``pattern`` (ECMA-262), ``format`` (date, time, date-time, email,
hostname, ipv4, ipv6, uri, uuid; unknown formats are annotations),
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (exact, draft-4 boolean form
too) and ``multipleOf`` (an integer step: a divisor of a power of ten, a listed range or a digit
automaton; a decimal step such as ``0.01``: a digit automaton over the decimal text).
Any other keyword is supported under a top-level ``enum``/``const`` when the ``jsonschema``
package is installed: the grammar is then the enum of the values that validate.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from decodekit.errors import UnsupportedSchemaError

from .jsonschema_automata import has_automaton, number_rule, string_rule
from .jsonschema_combinators import ANNOTATIONS, Combinators
from .jsonschema_finite import finite_values
from .jsonschema_fsm import AutomatonTooLarge, compile_tree, product, to_tree
from .jsonschema_keywords import flat_parts
from .jsonschema_regex import alt, cat, chars, cset, lit, opt, render, rep, string_of
from .jsonschema_scalars import SAFE_NUMBERS, greedy, number_tree
from .jsonschema_shapes import emit_arrays, emit_objects
from .jsonschema_text import check_lalr, grammar_text

__all__ = ["schema_to_lark", "UnsupportedSchemaError"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_WS = cat(rep(cset(chars(" \t")), 0, 8),
          opt(cat(opt(lit("\r")), lit("\n"), rep(cset(chars(" \t")), 0, 40))))
_SEPARATORS = {
    "compact": (lit("{"), lit("}"), lit("["), lit("]"), lit(", "), lit(": ")),
    "flexible": (cat(lit("{"), _WS), cat(_WS, lit("}")), cat(lit("["), _WS), cat(_WS, lit("]")),
                 cat(_WS, lit(","), _WS), cat(_WS, lit(":"), _WS)),
}


class _Node:
    """The grammar of one conjunction of schemas: a symbol and what it accepts."""

    def __init__(self, conj: list, path: str, rule: str) -> None:
        self.conj, self.path, self.symbol = conj, path, rule
        self.pending, self.referenced = True, False
        self.scalars: dict = {}
        self.objects: list = []
        self.arrays: list = []
        self.object_alts: list = []
        self.array_alts: list = []
        self.inexact: set = set()
        self.exact: bool | None = None


class _Converter(Combinators):
    """State of one conversion: rules, terminals, and the nodes built so far (by content)."""

    def __init__(self, root, whitespace: str, forbid_additional: bool, approx: bool) -> None:
        self.root, self.forbid_additional, self.approx = root, forbid_additional, approx
        draft = str(root.get("$schema", "")) if isinstance(root, dict) else ""
        self.old_draft = any(f"draft-0{i}" in draft for i in (3, 4, 6, 7))
        self.rules: dict = {}
        self.terminals: dict = {}
        self.nodes: dict = {}
        self.canon: dict = {}
        self.counter = 0
        self.trees: dict = {}
        self.part_rules: dict = {}
        self.widened: dict = {}
        self.string_terminals: dict = {}
        names = ("LBRACE", "RBRACE", "LBRACK", "RBRACK", "COMMA", "COLON")
        for name, tree in zip(names, _SEPARATORS[whitespace]):
            self.terminals[render(tree)] = self.trees[tree] = name
            setattr(self, name, name)
        self.ids: dict = {}
        self._collect_ids(root)

    # -------------------------------------------------------------- helpers
    def unsupported(self, keyword: str, path: str, reason: str, approximable: bool = True) -> None:
        """Raise, unless approximations are allowed (then the keyword is ignored)."""
        if not (self.approx and approximable):
            raise UnsupportedSchemaError(keyword, path, reason, approximable=approximable)

    def invalid(self, keyword: str, path: str, expected: str):
        """Raise for a keyword whose value is not valid JSON Schema."""
        raise UnsupportedSchemaError(keyword, path, f"invalid value, expected {expected}",
                                     approximable=False)

    def new_rule(self, prefix: str) -> str:
        """A fresh rule name."""
        self.counter += 1
        return f"{prefix}{self.counter}"

    def terminal(self, tree: tuple) -> str:
        """The terminal of a regex tree (one per distinct regex)."""
        name = self.trees.get(tree)
        if name is None:
            try:
                rx = render(tree)
            except RecursionError:
                raise AutomatonTooLarge("regular expression nests too deeply") from None
            name = self.terminals.get(rx)
            if name is None:
                name = self.terminals[rx] = f"T{len(self.terminals)}"
            self.trees[tree] = name
        return name

    def string_terminal(self, content: tuple) -> str:
        """The terminal of the JSON strings whose content matches ``content``."""
        name = self.string_terminals.get(content)
        if name is None:
            name = self.string_terminals[content] = self.terminal(string_of(content))
        return name

    def _collect_ids(self, schema) -> None:
        """Index the subschemas by ``$id``/``id`` and ``$anchor`` (for non-pointer ``$ref``)."""
        if isinstance(schema, dict):
            for k in ("$id", "id", "$anchor"):
                if isinstance(schema.get(k), str):
                    self.ids.setdefault(schema[k] if k != "$anchor" else "#" + schema[k], schema)
            for k, v in schema.items():
                if k not in ("enum", "const", "default", "examples", "example"):
                    self._collect_ids(v)
        elif isinstance(schema, list):
            for v in schema:
                self._collect_ids(v)

    def _canonical(self, schema) -> str:
        if not isinstance(schema, (dict, list)):
            return json.dumps(schema, sort_keys=True)
        got = self.canon.get(id(schema))
        if got is None:
            got = json.dumps(self._strip(schema), sort_keys=True, default=str)
            self.canon[id(schema)] = (got, schema)
            return got
        return got[0]

    def _strip(self, schema):
        if not isinstance(schema, dict):
            return [self._strip(s) for s in schema] if isinstance(schema, list) else schema
        out = {}
        for k, v in schema.items():
            if k in ANNOTATIONS:  # definitions too: references are absolute pointers
                continue
            if k in _SCHEMA_MAPS and isinstance(v, dict):
                out[k] = {n: self._strip(s) for n, s in v.items()}
            elif k in ("enum", "const", "required"):
                out[k] = v
            else:
                out[k] = self._strip(v)
        return out

    def resolve(self, ref, path: str):
        """The schema a local ``$ref`` points to, and a path naming it."""
        if not isinstance(ref, str):
            self.invalid("$ref", path, "a string")
        if ref in self.ids:
            return self.ids[ref], f"$ref({ref})"
        base = self.root.get("$id", self.root.get("id")) if isinstance(self.root, dict) else None
        if isinstance(base, str) and ref.startswith(base.split("#")[0]) and "#" in ref:
            ref = ref[len(base.split("#")[0]):]
        if not ref.startswith("#"):
            self.unsupported("$ref", path, f"only local references are supported, not {ref!r}",
                             approximable=False)
        target = self.root
        for part in [p for p in ref[1:].split("/") if p] if ref != "#" else []:
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                self.unsupported("$ref", path, f"reference {ref!r} does not resolve",
                                 approximable=False)
        return target, f"$ref({ref})"

    # -------------------------------------------------------------- nodes
    def node(self, conj: list) -> _Node:
        """The node of a conjunction of ``(schema, path)``."""
        conj = [(s, p) for s, p in conj if s is not True and s != {}]
        if any(s is False for s, _ in conj):
            conj = [(False, conj[0][1])]
        key = "\x00".join(self._canonical(s) for s, _ in conj)
        found = self.nodes.get(key)
        if found is not None:
            found.referenced |= found.pending
            return found
        path = conj[0][1] if conj else "$"
        node = self.nodes[key] = _Node(conj, path, self.new_rule("n"))
        untagged: dict = {}
        tagged: dict = {}
        try:
            parts = [self.flat(branch) for branch in self.expand(conj)]
            if not _tags_consistent(p[3] for p in parts):
                self.unsupported("oneOf", path, "a oneOf nested in an alternative of another "
                                 "oneOf cannot be made exclusive")
                parts = [(sc, ob, ar, None, inexact) for sc, ob, ar, _, inexact in parts]
            for sc, objects, arrays, tag, inexact in parts:
                node.inexact |= inexact
                for shape in objects + arrays:
                    shape.tag = tag
                node.objects += objects
                node.arrays += arrays
                target = untagged if tag is None else \
                    tagged.setdefault(tag[0], {}).setdefault(tag[1], {})
                for kind, tree in sc.items():
                    target.setdefault(kind, []).append(tree)
            if tagged and "string" in node.inexact and any(
                    sum("string" in t for t in alts.values()) > 1 for alts in tagged.values()):
                self.unsupported("oneOf", path, "alternatives with a format cannot be made "
                                 "exclusive: validators check formats in their own ways")
            node.scalars = _exclusive_scalars(untagged, tagged)
            node.pending = False
            alts = self._scalar_alternatives(node.scalars)
            if node.objects:
                node.object_alts = emit_objects(self, node.objects, path)
                alts += node.object_alts
            if node.arrays:
                node.array_alts = emit_arrays(self, node.arrays, path)
                alts += node.array_alts
        except AutomatonTooLarge as exc:
            raise UnsupportedSchemaError(
                "pattern", path, f"the regular expressions are too complex to combine ({exc})",
                approximable=False) from None
        if not alts:
            node.symbol = None
            if node.referenced:
                self.unsupported("$ref", path, "a recursive schema that accepts no value",
                                 approximable=False)
        elif len(alts) == 1 and len(alts[0]) == 1 and not node.referenced:
            node.symbol = alts[0][0]
        else:
            self.rules[node.symbol] = alts
        return node

    def _scalar_alternatives(self, scalars: dict) -> list:
        """One terminal for the scalars (strings as rules when they need an automaton)."""
        alts = []
        spelled = {k for k in ("number", "string") if k in scalars and has_automaton(scalars[k])}
        order = [k for k in ("null", "boolean", "number", "string") if k in scalars
                 and k not in spelled]
        if order:
            alts.append([self.terminal(alt(*(string_of(scalars[k]) if k == "string"
                                             else scalars[k] for k in order)))])
        if "number" in spelled:
            alts.append([number_rule(self, compile_tree(scalars["number"]))])
        if "string" in spelled:
            alts.append([string_rule(self, compile_tree(scalars["string"]))])
        return alts

    def widen(self, node: _Node, kinds: frozenset) -> _Node:
        """``node`` accepting every value of ``kinds`` too (for what a shadow cannot trust)."""
        key = (node.symbol, kinds)
        if key not in self.widened:
            anything = self.node([])
            wide = _Node(node.conj, node.path, self.new_rule("wide"))
            wide.pending, wide.exact = False, frozenset()
            wide.scalars = dict(node.scalars)
            for kind in kinds & set(anything.scalars):
                wide.scalars[kind] = anything.scalars[kind]
            source = {part: anything if kind in kinds else node
                      for part, kind in (("objects", "object"), ("arrays", "array"))}
            wide.objects, wide.object_alts = source["objects"].objects, \
                source["objects"].object_alts
            wide.arrays, wide.array_alts = source["arrays"].arrays, source["arrays"].array_alts
            self.rules[wide.symbol] = self._scalar_alternatives(wide.scalars) + \
                wide.object_alts + wide.array_alts
            self.widened[key] = wide
        return self.widened[key]

    def part_symbol(self, node: _Node, part: str) -> str:
        """A symbol for only the objects (``part="objects"``) or only the arrays of ``node``."""
        alts = node.object_alts if part == "objects" else node.array_alts
        if alts == self.rules.get(node.symbol):
            return node.symbol
        name = self.part_rules.get((node.symbol, part))
        if name is None:
            name = self.part_rules[(node.symbol, part)] = self.new_rule("part")
            self.rules[name] = alts
        return name

    def union_node(self, nodes: list, path: str) -> _Node:
        """A node for values matching any of ``nodes`` (only as an over-approximation)."""
        self.unsupported("anyOf", path, "alternatives overlap and differ in their constraints on "
                         "the same key or item, which an LALR grammar cannot keep apart")
        return self.node([({"anyOf": [{"allOf": [s for s, _ in n.conj]} for n in nodes]}, path)])

    # -------------------------------------------------------------- flat conjunctions
    def flat(self, branch: list) -> tuple:
        """Scalar trees, object shapes and array shapes of a flat conjunction."""
        return flat_parts(self, branch)


def _tags_consistent(tags) -> bool:
    """Each ``oneOf`` is always combined with the same other ``oneOf``s (no nesting)."""
    owner: dict = {}
    for tag in tags:
        if tag is not None:
            for one_of in tag[0]:
                if owner.setdefault(one_of, tag[0]) != tag[0]:
                    return False
    return True


def _exclusive_scalars(untagged: dict, tagged: dict) -> dict:
    """Union of untagged scalar trees and, per ``oneOf``, of the values of exactly one of its
    alternatives."""
    out = {k: list(v) for k, v in untagged.items()}
    for alternatives in tagged.values():
        for kind in {k for trees in alternatives.values() for k in trees}:
            mine = [alt(*t[kind]) for t in alternatives.values() if kind in t]
            if len(mine) == 1:
                out.setdefault(kind, []).append(mine[0])
                continue
            dfas = [compile_tree(t) for t in mine]
            for i, d in enumerate(dfas):
                for j, other in enumerate(dfas):
                    if i != j:
                        d = product(d, other, "diff")
                if kind == "number":  # exact only where a value has a single spelling
                    d = product(d, compile_tree(SAFE_NUMBERS), "and")
                if not d.is_empty():
                    tree = number_tree(d) if kind == "number" else to_tree(d)
                    out.setdefault(kind, []).append(tree)
    return {k: (greedy(alt(*v)) if k == "number" and len(v) > 1 else alt(*v))
            for k, v in out.items()}


def schema_to_lark(schema: dict | str | type, *, whitespace: str = "compact",
                   forbid_additional: bool = False, allow_approximation: bool = False) -> str:
    """Convert a JSON Schema to an LALR(1) lark grammar.

    Parameters
    ----------
    schema
        The schema: a dict, its JSON text, or a pydantic model class.
    whitespace
        ``"compact"``: exactly the separators of ``json.dumps`` (``", "`` and ``": "``, nothing
        else), so a model cannot run away in whitespace. ``"flexible"``: around each bracket,
        comma and colon, up to 8 spaces or tabs, one line break and 40 more spaces or tabs.
    forbid_additional
        Treat every object schema that declares ``properties`` or ``required`` and says nothing
        about additional properties as ``additionalProperties: false`` (the spec's default
        allows them; free-form objects such as ``{}`` stay free).
    allow_approximation
        Ignore what cannot be enforced instead of raising: keywords ``multipleOf`` (steps
        whose automaton is too large), ``uniqueItems``, ``contains``, ``if``, ``dependencies``/``dependentRequired``/
        ``dependentSchemas``, ``unevaluatedItems``, unsupported ``pattern`` syntax and standard
        formats without a regex here; ``oneOf`` is then treated as ``anyOf``, and ``not`` of
        object or array constraints is dropped. The grammar then accepts a superset of the
        schema's language (an over-approximation).

    Returns
    -------
    str
        The grammar, with start rule ``start``.

    Raises
    ------
    UnsupportedSchemaError
        A keyword cannot be enforced exactly (its JSON path is in the message), the schema is
        invalid, or it accepts no value.

    Notes
    -----
    Properties are accepted in the order the schema declares them (those only named in
    ``required`` come after), and additional properties after all declared ones. Strings are
    matched in their ``json.dumps`` form (``ensure_ascii=False``), so ``minLength``,
    ``maxLength`` and ``pattern`` count and match decoded characters. Numbers are accepted as
    ``json.dumps`` writes them: an ``integer`` has no fraction or exponent; a bounded
    ``number`` is a decimal or has a one-digit mantissa (``1.5e-07``).
    """
    if whitespace not in _SEPARATORS:
        raise UnsupportedSchemaError("whitespace", "$", f"unknown whitespace mode {whitespace!r}; "
                                     "valid modes: compact, flexible", approximable=False)
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    elif isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise UnsupportedSchemaError("schema", "$", f"the schema text is not valid JSON "
                                         f"({exc})", approximable=False) from None
    if not isinstance(schema, (dict, bool)):
        raise UnsupportedSchemaError("schema", "$", "a schema must be a JSON object, a boolean, "
                                     "JSON text or a pydantic model class", approximable=False)
    conv = _Converter(schema, whitespace, forbid_additional, allow_approximation)
    try:
        root = conv.node([(schema, "$")])
    except RecursionError:
        raise UnsupportedSchemaError("$ref", "$", "the schema nests too deeply",
                                     approximable=False) from None
    except UnsupportedSchemaError:
        # a top-level enum/const bounds the language: keep the values a validator accepts
        # (which knows nothing of forbid_additional)
        values = None if forbid_additional else finite_values(schema)
        if values is None:
            raise
        return schema_to_lark({"enum": values}, whitespace=whitespace,
                              allow_approximation=allow_approximation)
    if root.symbol is None:
        raise UnsupportedSchemaError("schema", "$", "the schema accepts no value",
                                     approximable=False)
    text = grammar_text(conv, root.symbol)
    try:
        check_lalr(conv, text)
    except RecursionError:
        raise UnsupportedSchemaError("schema", "$", "the grammar has too long chains of rules "
                                     "(a large automaton) to analyse", approximable=False) from None
    return text


