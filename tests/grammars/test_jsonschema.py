"""JSON Schema to lark grammar: each keyword accepts exactly the valid JSON texts.

Every case is checked twice: the expected verdict must agree with ``jsonschema`` validation, and
the grammar (parsed by lark's LALR parser with the contextual lexer) must accept the
``json.dumps`` text of the valid values and reject the invalid ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")
lark = pytest.importorskip("lark")

from decodekit.errors import UnsupportedSchemaError, UserError  # noqa: E402
from decodekit.grammars.jsonschema import schema_to_lark  # noqa: E402

DEV_SET = Path(__file__).resolve().parents[2].parent / "shared" / "jsonschemabench"


@pytest.fixture(autouse=True)
def _no_lark_collision_scan(monkeypatch):
    """lark re-checks terminal collisions with interegular for every parser it builds (slow);
    schema_to_lark already proves the terminals of each parser state disjoint."""
    monkeypatch.setattr(lark.lexer, "has_interegular", False)


def parser(schema, **options):
    return lark.Lark(schema_to_lark(schema, **options), parser="lalr", lexer="contextual")


def accepts(p, text: str) -> bool:
    try:
        p.parse(text)
        return True
    except lark.exceptions.LarkError:
        return False


def check(schema, valid=(), invalid=(), **options) -> None:
    """Valid values are accepted and invalid ones rejected, both agreeing with jsonschema."""
    p = parser(schema, **options)
    validator = jsonschema.validators.validator_for(schema)(
        schema, format_checker=jsonschema.FormatChecker())
    for value in valid:
        assert validator.is_valid(value), value
        assert accepts(p, json.dumps(value, ensure_ascii=False)), value
    for value in invalid:
        assert not validator.is_valid(value), value
        assert not accepts(p, json.dumps(value, ensure_ascii=False)), value


def test_types_and_type_lists() -> None:
    check({"type": "null"}, [None], [0, False, "", [], {}])
    check({"type": "boolean"}, [True, False], [0, None, "true"])
    check({"type": "integer"}, [0, -7, 10**20], [1.5, "1", None])
    check({"type": "number"}, [0, -7, 1.5, 1e-05, -2.5e+300], ["1", None, True])
    check({"type": "string"}, ["", "a\"b\\c\n\u00e9\u2028\x01"], [1, None])
    check({"type": ["string", "null"]}, ["x", None], [1, [], {}])
    check({"type": "array"}, [[], [1, "a", None, [{}]]], [{}, "[]"])
    check({"type": "object"}, [{}, {"a": [1, {"b": None}]}], [[], "{}"])


def test_untyped_schema_accepts_any_value() -> None:
    check({}, [None, 1, "x", [1, [2]], {"a": {"b": []}}])
    check(True, [None, {"k": 1}])


def test_properties_declared_order_required_and_optional() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                                               "c": {"type": "boolean"}},
              "required": ["a", "c"], "additionalProperties": False}
    check(schema, [{"a": 1, "c": True}, {"a": 1, "b": "x", "c": False}],
          [{"a": 1}, {"c": True}, {"a": "1", "c": True}, {"a": 1, "c": True, "d": 0}])
    p = parser(schema)
    assert not accepts(p, '{"c": true, "a": 1}')  # only the declared order is accepted


def test_additional_properties_default_schema_and_forbidden() -> None:
    props = {"a": {"type": "integer"}}
    check({"type": "object", "properties": props}, [{"a": 1, "x": [1], "y": {}}], [{"a": "1"}])
    check({"type": "object", "properties": props, "additionalProperties": {"type": "string"}},
          [{"a": 1, "x": "s"}, {"x": "s", "y": "t"}], [{"a": 1, "x": 2}])
    check({"type": "object", "properties": props, "additionalProperties": False},
          [{"a": 1}, {}], [{"a": 1, "x": 1}, {"x": 1}])
    p = parser({"type": "object", "properties": props}, forbid_additional=True)
    assert accepts(p, '{"a": 1}') and not accepts(p, '{"a": 1, "x": 1}')


def test_pattern_properties_and_property_names() -> None:
    check({"type": "object", "patternProperties": {"^x-": {"type": "integer"}},
           "additionalProperties": False},
          [{"x-a": 1, "x-b": 2}, {}], [{"x-a": "1"}, {"y": 1}])
    check({"type": "object", "propertyNames": {"maxLength": 2}},
          [{"ab": 1}, {}], [{"abc": 1}])


def test_min_max_properties() -> None:
    check({"type": "object", "minProperties": 1, "maxProperties": 2},
          [{"a": 1}, {"a": 1, "b": 2}], [{}, {"a": 1, "b": 2, "c": 3}])


def test_enum_and_const() -> None:
    check({"enum": ["a", 1, None, [1, 2], {"k": "v"}]},
          ["a", 1, None, [1, 2], {"k": "v"}], ["b", 2, [1], {"k": "w"}, False])
    check({"const": "x\"y"}, ["x\"y"], ["x", ""])
    check({"type": "string", "enum": ["a", 1, "bbb"], "maxLength": 2}, ["a"], ["bbb", 1])


def test_any_of_and_one_of_exclusive() -> None:
    check({"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string"}]},
          [10, "x"], [9, None])
    one_of = {"type": "object", "oneOf": [
        {"properties": {"login": {"type": "string"}}, "required": ["login"]},
        {"properties": {"password": {"type": "string"}}, "required": ["password"]}]}
    check(one_of, [{"login": "a"}, {"password": "b"}],
          [{"login": "a", "password": "b"}, {"password": "b", "login": "a"}, {}])
    check({"oneOf": [{"type": "integer"}, {"minimum": 5}]}, [1, 4, 7.5, "x"], [5, 9, 4.5])
    check({"type": "object", "maxProperties": 1,
           "oneOf": [{"patternProperties": {"a": {"maximum": 20}}},
                     {"patternProperties": {"a": {"maximum": 80}}}]},
          [{"a": 50}], [{"a": 10}, {"foo": 1}, {}, {"a": "x"}])


def test_all_of_merges() -> None:
    check({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}},
                      "required": ["a"]},
                     {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
          [{"a": 1, "b": "x"}], [{"a": 1}, {"b": "x"}, {"a": "1", "b": "x"}])
    check({"allOf": [{"minLength": 2}, {"maxLength": 3}, {"type": "string"}]},
          ["ab", "abc"], ["a", "abcd"])


def test_not() -> None:
    check({"not": {"type": "string"}}, [1, None, []], ["x"])
    check({"type": "string", "not": {"enum": ["a", "b"]}}, ["c", "ab", ""], ["a", "b"])
    check({"type": "object", "not": {"required": ["a", "b"]}},
          [{"a": 1}, {"b": 2}, {}], [{"a": 1, "b": 2}])
    check({"not": {"required": ["a"]}}, [{}, {"b": 1}], [{"a": 1}, 1, "x", []])


def test_not_of_combinators_and_structures() -> None:
    check({"not": {"anyOf": [{"type": "string"}, {"minimum": 3}]}}, [1, -2.5], ["x", 5, None, {}])
    check({"not": {"not": {"type": "integer"}}}, [1], ["1", 1.5])
    check({"type": "object", "not": {"properties": {"a": {"type": "string"}}}},
          [{"a": 1}], [{}, {"a": "x"}, {"b": 1}])
    check({"type": "array", "not": {"minItems": 2}}, [[], [1]], [[1, 2]])


def test_if_then_else_and_dependencies() -> None:
    schema = {"if": {"properties": {"kind": {"const": "a"}}, "required": ["kind"]},
              "then": {"required": ["x"]}, "else": {"required": ["y"]}}
    check(schema, [{"kind": "a", "x": 1}, {"kind": "b", "y": 1}, {"y": 1}, 5],
          [{"kind": "a"}, {"kind": "b"}, {"kind": "a", "y": 1}])
    check({"type": "object", "dependentRequired": {"a": ["b"]}},
          [{"a": 1, "b": 2}, {"b": 1}, {}], [{"a": 1}])
    check({"$schema": "http://json-schema.org/draft-07/schema#",
           "type": "object", "properties": {"a": {}, "b": {}},
           "dependencies": {"a": {"properties": {"b": {"type": "integer"}}, "required": ["b"]}}},
          [{"a": 1, "b": 2}, {"b": "x"}], [{"a": 1}, {"a": 1, "b": "x"}])


def test_structured_const_and_enum() -> None:
    check({"const": {"a": [1, 2], "b": None}}, [{"a": [1, 2], "b": None}],
          [{"a": [1]}, {"a": [1, 2]}, {"a": [1, 2], "b": None, "c": 0}])
    check({"enum": [[1, "x"], 3]}, [[1, "x"], 3], [[1], [1, "x", 2], 4])


def test_ref_definitions_and_recursion() -> None:
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"], "additionalProperties": False}},
        "$ref": "#/$defs/node"}
    deep = {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}
    check(tree, [{"value": 1}, deep],
          [{"value": 1, "children": [{"value": "x"}]}, {"children": []}])
    check({"definitions": {"s": {"type": "string"}}, "type": "array",
           "items": {"$ref": "#/definitions/s"}}, [["a"]], [[1]])


def test_arrays_items_prefix_items_and_lengths() -> None:
    check({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
          [[1], [1, 2, 3]], [[], [1, 2, 3, 4], ["a"]])
    check({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
           "items": False}, [[], ["a"], ["a", 1]], [[1], ["a", 1, 2]])


def test_contains_and_multiple_of() -> None:
    check({"type": "array", "contains": {"const": 5}}, [[5], [1, 5, "x"]], [[], [1, "x"]])
    check({"type": "array", "contains": {"type": "integer"}, "minContains": 2, "maxContains": 2},
          [[1, "a", 2]], [[1], [1, 2, 3]])
    check({"type": "integer", "multipleOf": 25}, [0, 25, -150, 1000], [5, 130, -7])
    check({"type": "integer", "multipleOf": 3, "minimum": 1, "maximum": 20}, [3, 18], [0, 4, 21])
    check({"type": "integer", "multipleOf": 7, "minimum": -20}, [0, 7, -14, 700], [-21, 8, 701])
    check({"oneOf": [{"type": "integer"}, {"type": "number", "maximum": 0}],
           "not": {"multipleOf": 2}}, [3, -0.5], [4, -3])


def test_string_lengths_patterns_and_escapes() -> None:
    check({"type": "string", "minLength": 2, "maxLength": 3},
          ["ab", "a\"\\", "\n\t\u00e9"], ["a", "abcd"])
    check({"type": "string", "pattern": "^[a-z]+\\d$"}, ["ab1"], ["ab", "Ab1", "ab1 "])
    check({"type": "string", "pattern": "b\"c"}, ["ab\"cd"], ["abc"])
    check({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, ["abc"], ["abcd", ""])
    # no regex of reasonable size: the string is spelled out as rules, escapes included
    check({"type": "string", "pattern": "^[^x]+x[a-z\"]*(-[a-z]+)*$", "maxLength": 40},
          ["\n\"x", "ax-b-c", "a" * 30 + "x" + "b" * 9], ["ab", "ax-", "a" * 31 + "x" + "b" * 9])


@pytest.mark.parametrize("fmt,good,bad", [
    ("date", ["2024-02-29", "2023-12-31"], ["2023-02-29", "2023-13-01", "2023-1-01"]),
    ("time", ["23:59:59Z", "08:30:00.5+02:00"], ["24:00:00Z", "12:00"]),
    ("date-time", ["2024-01-01T10:00:00Z"], ["2024-01-01 10:00:00", "2024-01-01T10:00:00"]),
    ("email", ["a.b@example.com"], ["a@", "no-at-sign"]),
    ("uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567-e89b-12d3-a456"]),
    ("ipv4", ["192.168.0.1"], ["256.1.1.1", "1.2.3"]),
    ("ipv6", ["::1", "2001:db8::8a2e:370:7334"], ["1::2::3", "12345::"]),
    ("uri", ["https://example.com/a?b=c#d"], ["not a uri", "/relative"]),
])
def test_formats(fmt: str, good: list, bad: list) -> None:
    p = parser({"type": "string", "format": fmt})
    for text in good:
        assert accepts(p, json.dumps(text)), text
    for text in bad:
        assert not accepts(p, json.dumps(text)), text


def test_number_bounds_exact_and_exclusive() -> None:
    check({"type": "integer", "minimum": -5, "maximum": 120}, [-5, 0, 99, 120], [-6, 121, 1000])
    check({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, [1, 9], [0, 10])
    check({"type": "number", "minimum": 0.5, "maximum": 2.5},
          [0.5, 1, 2.25, 2.5, 1e-0], [0.49, 2.51, 3, -1, 1e-05])
    check({"type": "number", "exclusiveMaximum": 0}, [-1e-05, -3.5], [0, 0.1])
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "minimum": 1, "exclusiveMinimum": True}
    check(draft4, [1.5, 2], [1, 0.5])


def test_nullable_and_multiple_of_one() -> None:
    p = parser({"type": "string", "nullable": True})
    assert accepts(p, "null") and accepts(p, '"x"') and not accepts(p, "1")
    check({"type": "number", "multipleOf": 1}, [3, -2], [1.5])


def test_unsupported_keyword_names_keyword_and_path() -> None:
    # a step of 12345.5 needs too large a digit automaton
    schema = {"type": "object", "properties": {"age": {"type": "number", "multipleOf": 12345.5}}}
    with pytest.raises(UnsupportedSchemaError) as err:
        schema_to_lark(schema)
    assert err.value.keyword == "multipleOf"
    assert err.value.path == "$.properties.age.multipleOf"
    assert isinstance(err.value, UserError) and "allow_approximation" in str(err.value)
    p = parser(schema, allow_approximation=True)  # over-approximation: multipleOf is ignored
    assert accepts(p, '{"age": 4.2}')
    for bad in ({"type": "array", "uniqueItems": True}, {"type": "number", "multipleOf": 1234567},
                {"oneOf": [{"type": "string"}, {"oneOf": [{"type": "integer"}, {"minimum": 3}]}]}):
        with pytest.raises(UnsupportedSchemaError):
            schema_to_lark(bad)


def test_invalid_input_errors() -> None:
    with pytest.raises(UnsupportedSchemaError, match="not valid JSON"):
        schema_to_lark("{not json")
    with pytest.raises(UnsupportedSchemaError, match="remote|local"):
        schema_to_lark({"$ref": "https://example.com/s.json"})
    with pytest.raises(UnsupportedSchemaError, match="accepts no value"):
        schema_to_lark({"type": "string", "minLength": 3, "maxLength": 2})
    with pytest.raises(UnsupportedSchemaError, match="whitespace"):
        schema_to_lark({}, whitespace="loose")
    with pytest.raises(UnsupportedSchemaError, match="type"):
        schema_to_lark({"type": "strin"})


def test_schema_as_json_text_and_pydantic_model() -> None:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int
        y: float = 0.0
        label: str | None = None

    p = parser(Point)
    assert accepts(p, '{"x": 1}') and accepts(p, '{"x": 1, "y": 2.5, "label": null}')
    assert not accepts(p, '{"y": 2.5}') and not accepts(p, '{"x": "1"}')
    assert schema_to_lark(json.dumps(Point.model_json_schema())) == schema_to_lark(Point)


def test_whitespace_modes() -> None:
    schema = {"type": "object",
              "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    value = {"a": [1, 2]}
    compact, flexible = parser(schema), parser(schema, whitespace="flexible")
    assert accepts(compact, json.dumps(value)) and not accepts(compact, json.dumps(value, indent=2))
    assert not accepts(compact, '{"a":[1,2]}')
    assert accepts(flexible, json.dumps(value, indent=2)) and accepts(flexible, '{"a":[1,2]}')
    assert not accepts(flexible, '{"a": ' + " " * 100 + "[1]}")


def _load_benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "jsonschemabench.py"
    spec = importlib.util.spec_from_file_location("jsonschemabench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DEV_SET / "maskbench").is_dir(),
                    reason="the JSONSchemaBench development set (../shared/jsonschemabench) is "
                           "not present in this checkout")
def test_dev_set_sample() -> None:
    bench = _load_benchmark()
    files = bench.schema_files(DEV_SET, sample=60, seed=0)
    errors: dict = {}
    stats = bench.evaluate(bench.LarkEngine(), files, timeout=30.0, errors=errors)
    total = {k: sum(s[k] for s in stats.values()) for k in ("files", "compiled", "valid",
                                                             "valid_ok", "invalid_ok")}
    accepted_invalid = [k for k in errors if "invalid accepted" in k]
    assert total["invalid_ok"] == 0, accepted_invalid
    assert total["valid_ok"] >= 0.99 * total["valid"], errors
    assert total["compiled"] >= 0.85 * total["files"], errors


def test_benchmark_key_order_diagnostic() -> None:
    """The benchmark's key-order diagnostic puts each object's keys in the order of the
    ``properties`` block that lists them all (keys listed nowhere go last)."""
    bench = _load_benchmark()
    schema = {"properties": {"b": {}, "a": {"properties": {"y": {}, "x": {}}}},
              "oneOf": [{"properties": {"z": {}, "x": {}}}]}
    lists = bench._property_lists(schema, [])
    assert lists == [["b", "a"], ["y", "x"], ["z", "x"]]
    data = {"a": {"x": 1, "y": [{"x": 2, "z": 3}]}, "q": 0, "b": 2}
    assert list(bench.in_declared_order(data, lists)) == ["b", "a", "q"]
    assert bench.in_declared_order(data, lists)["a"] == {"y": [{"z": 3, "x": 2}], "x": 1}


def test_multiple_of_a_fraction() -> None:
    check({"type": "number", "multipleOf": 1.5}, [0, 1.5, 3, -4.5, 3.0, 10.5], [1, 0.5, 2.25, "3"])
    check({"type": "integer", "multipleOf": 1.5}, [0, 3, -6, 9], [1.5, 4.5, 2])
    # steps combine by their least common multiple (0.5 and 0.75: 1.5)
    check({"type": "number", "allOf": [{"multipleOf": 0.5}, {"multipleOf": 0.75}]},
          [1.5, 3, 4.5], [0.5, 0.75, 2.25])
    check({"multipleOf": 0.5, "allOf": [{"multipleOf": 3}]}, [3, 6, -9], [1.5, 4.5, 4])
    check({"type": "number", "not": {"multipleOf": 1.5}}, [1, 2, 0.5, 4.25], [1.5, 3, 0, "x"])
    # decimal steps are exact decimals (validators dividing floats may disagree on these)
    p = parser({"type": "number", "multipleOf": 0.01, "minimum": 0, "maximum": 1})
    for text in ("0", "0.01", "0.07", "0.5", "1", "0.99", "1.0"):
        assert accepts(p, text), text
    for text in ("0.999", "1.01", "0.123", "-0.01", "2", "1e-05"):
        assert not accepts(p, text), text


def test_integer_multiples_over_ranges() -> None:
    # a large step over a short range is listed; a one-sided range uses the digit automaton
    check({"type": "integer", "multipleOf": 8721, "exclusiveMinimum": -100000,
           "exclusiveMaximum": -10000}, [-17442, -95931], [-8721, -104652, -17441, 0])
    check({"type": "integer", "multipleOf": 5, "minimum": 3}, [5, 10, 1000005],
          [0, -5, 7, 3])
    check({"type": "integer", "multipleOf": 132, "maximum": -7},
          [-132, -264, -13200], [0, 132, -133])
    # the factors 2 and 5 of a step only look at the last digits: 1320 = 40 * 33
    check({"type": "integer", "multipleOf": 1320, "minimum": 1},
          [1320, 2640, 13200000000, 1320 * 7919], [0, -1320, 660, 1321, 2640 + 33 * 40 // 2])
    check({"type": "integer", "multipleOf": 1320, "exclusiveMaximum": 0},
          [-1320, -2640 * 1001], [0, 1320, -1321, -40])


def test_enum_filtered_by_the_whole_schema() -> None:
    # "not" of array and object constraints is checked value by value under a top-level enum
    check({"allOf": [{"enum": [[0]]}, {"not": {"enum": [[False]]}}]}, [[0]], [[False], 0])
    check({"allOf": [{"enum": [{"foobar": 1}, {"x": 2}]},
                     {"not": {"patternProperties": {"b.*": False, "f.*": True}}}]},
          [{"foobar": 1}], [{"x": 2}])
    check({"allOf": [{"enum": [35, 36, 4.5]}, {"not": {"multipleOf": 1.5}}]}, [35], [36, 4.5])
    with pytest.raises(UnsupportedSchemaError, match="accepts no value"):
        schema_to_lark({"const": [1], "not": {"items": {"type": "integer"}}})
    # without an enum it is a witness (some key matching "b.*"); with forbid_additional
    # (which a validator does not know) the closed object can have no such key
    check({"not": {"patternProperties": {"b.*": False}}}, [{"ab": 1}, {"x": 2, "b": None}],
          [{}, {"a": 1}, 1, "b"])
    with pytest.raises(UnsupportedSchemaError, match="accepts no value"):
        schema_to_lark({"enum": [{"a": 1}], "not": {"patternProperties": {"b": False}}},
                       forbid_additional=True)


def test_not_of_property_names_outside_an_enum() -> None:
    # "not every key avoids {a, b}": some key is "a" or "b"
    schema = {"type": "object", "additionalProperties": {"type": "integer"},
              "not": {"propertyNames": {"not": {"enum": ["a", "b", 3]}}}}
    check(schema, [{"a": 1}, {"b": 2, "x": 1}], [{}, {"x": 1}, {"3": 1}, []])
    check({"not": {"propertyNames": {"not": {"const": "k"}}}}, [{"k": None}], [{"j": 1}, 1, "k"])


def test_not_of_pattern_properties_needs_a_witness() -> None:
    # "not every key matching a has a non-integer value": some key matching a has an integer
    schema = {"type": "object", "not": {"patternProperties": {"a": {"not": {"type": "integer"}}}}}
    check(schema, [{"a": 1}, {"x": "s", "ba": -2}, {"ab": "s", "ac": 3}],
          [{}, {"b": 1}, {"ab": "s"}, {"ab": 1.5}, {"x": {"a": 1}}])
    # declared properties can be the witness; each pattern is an alternative
    schema = {"type": "object", "properties": {"ab": {"type": "string"}, "b": {"type": "integer"}},
              "not": {"patternProperties": {"^a": {"not": {"type": "integer"}},
                                            "b$": {"not": {"type": "string"}}}}}
    check(schema, [{"ab": "x"}, {"b": 1, "ax": 2}, {"cb": "y"}],
          [{"b": 1}, {"b": 1, "ax": "y"}, {"ax": "y"}, {}])
    # two witnesses at once, within a size bound
    schema = {"type": "object", "maxProperties": 2, "allOf": [
        {"not": {"patternProperties": {"a": {"not": {"type": "integer"}}}}},
        {"not": {"patternProperties": {"b": {"not": {"type": "string"}}}}}]}
    check(schema, [{"a": 1, "b": "s"}, {"ab": 1, "bb": "t"}, {"b": "s", "a": 0}],
          [{"a": 1}, {"b": "s"}, {"ab": "s"}, {"a": 1, "b": 2}, {"a": 1, "c": 0, "b": "s"}])
    # a witness whose value is an object
    schema = {"not": {"patternProperties": {"a": {"not": {"type": "object", "required": ["b"]}}}}}
    check(schema, [{"a": {"b": 1}}, {"x": 1, "ya": {"b": None, "c": 2}}],
          [{}, {"a": {"c": 1}}, {"a": 1}, 1, "a", [{"a": {"b": 1}}]])


def test_not_of_property_names_needs_a_witness_key() -> None:
    check({"type": "object", "not": {"propertyNames": {"pattern": "^[ab]+$"}}},
          [{"c": 1}, {"a": 1, "bc": None}], [{}, {"a": 1, "ab": 2}])
    # not all keys avoid "c", "5" or "7" (anchors inside a group), and an array of such objects
    check({"not": {"propertyNames": {"not": {"pattern": "(^[^5]*$)|7"}}}},
          [{"a": 1}, {"57": 1}, {"5": 1, "b": 2}], [{}, {"5": 1}, {"a5": 1, "x5": 0}, 3])
    check({"type": "array", "items": {"type": "object", "not": {"propertyNames": {"maxLength": 1}}}},
          [[], [{"ab": 1}], [{"a": 1, "bc": 2}]], [[{}], [{"a": 1}], [{"ab": 1}, {"c": 2}]])


def test_witness_inside_one_of_and_repeated_patterns() -> None:
    # a oneOf alternative with a witness: exactly one alternative must hold
    schema = {"oneOf": [{"not": {"patternProperties": {"a": {"not": {"type": "integer"}}}}},
                        {"type": "object", "maxProperties": 1}]}
    check(schema, [{"a": 1, "b": 2}, {}, {"b": 2}, {"a": "x"}, {"b": 1, "ab": 3, "c": None}],
          [{"a": 1}, 5, {"a": "x", "b": 1}, {"ab": 7}])
    schema = {"oneOf": [{"not": {"patternProperties": {"a": {"not": {"type": "integer"}}}}},
                        {"not": {"patternProperties": {"b": {"not": {"type": "string"}}}}}]}
    check(schema, [{"a": 1}, {"b": "s"}, {"ab": "s"}, {"ab": 1}],
          [{}, {"a": 1, "b": "s"}, {"c": 1}, {"ab": None}, [], "a"])
    # the same pattern and schema in several schemas counts once (here 2 patterns, not 6)
    pp = {"patternProperties": {"^a": {"type": "integer"}, "^b": {"type": "string"}}}
    schema = {"type": "object", "allOf": [pp, dict(pp, additionalProperties=False), pp]}
    check(schema, [{}, {"a": 1, "b": "x"}, {"ab": 2}], [{"a": "x"}, {"c": 1}, {"b": 2}])


@pytest.mark.skipif(not (DEV_SET / "maskbench" / "Github_easy---o63934.json").is_file(),
                    reason="the JSONSchemaBench development set (../shared/jsonschemabench) is "
                           "not present in this checkout")
def test_large_grammar_analysis_does_not_depend_on_the_callers_stack_depth() -> None:
    """lark's LALR analysis of a large schema's grammar recurses deeply; the converter gives it
    room, so a caller deep in its own stack (a worker process, a web handler) gets the same
    result as a shallow one."""
    schema = json.loads((DEV_SET / "maskbench" / "Github_easy---o63934.json").read_text())["schema"]

    def at_depth(n: int) -> str:
        return at_depth(n - 1) if n else schema_to_lark(schema)
    assert at_depth(800).startswith("start:")  # 800 of Python's default 1,000 frames in use
