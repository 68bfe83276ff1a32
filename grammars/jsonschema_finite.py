"""Schemas with finitely many values: the values kept by a reference validator.

A schema whose top-level conjunction (the schema itself and, recursively, the members of its
``allOf``) holds an ``enum`` or a ``const`` accepts at most those values, whatever else it says.
When the rest of such a schema uses keywords the converter cannot enforce exactly (``not`` of
object constraints, ``multipleOf`` of a fraction, ...), each candidate value can still be
checked against the whole schema: the schema's language is then exactly the candidates that
validate, and the converter only has to spell out that ``enum``.

The check uses the ``jsonschema`` package, which the ``grammar`` extra installs; in an
installation without it, :func:`finite_values` answers ``None`` and the converter reports the
keyword it could not enforce.
"""

from __future__ import annotations

__all__ = ["candidate_values", "finite_values"]

_CANDIDATE_LIMIT = 1000


def candidate_values(schema) -> list | None:
    """The values of the first ``enum``/``const`` of the top-level conjunction, or ``None``.

    Parameters
    ----------
    schema
        A JSON Schema (a dict or a boolean).

    Returns
    -------
    list or None
        A list every valid value is a member of, or ``None`` when the conjunction names none.
    """
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    subs = schema.get("allOf")
    if isinstance(subs, list):
        for sub in subs:
            found = candidate_values(sub)
            if found is not None:
                return found
    return None


def _portable(node) -> bool:
    """Whether a validator judges ``node`` as the converter would: no ``format`` (an annotation
    to a validator, an assertion to the converter) and no reference outside the document."""
    if isinstance(node, list):
        return all(_portable(x) for x in node)
    if not isinstance(node, dict):
        return True
    for key, value in node.items():
        if key == "format":
            return False
        if key in ("$ref", "$recursiveRef", "$dynamicRef") and (
                not isinstance(value, str) or not value.startswith("#")):
            return False
        if key in ("enum", "const", "default", "examples", "example"):
            continue
        if not _portable(value):
            return False
    return True


def finite_values(schema) -> list | None:
    """The values of a schema with an ``enum``/``const`` at the top, filtered by validation.

    Parameters
    ----------
    schema
        A JSON Schema (a dict or a boolean).

    Returns
    -------
    list or None
        The candidate values (see :func:`candidate_values`) that validate against the whole
        schema, in their order, possibly empty; ``None`` when the schema names no candidates,
        has more than 1,000, uses ``format`` or a non-local reference, is not a valid schema,
        or the ``jsonschema`` package is not installed.
    """
    values = candidate_values(schema)
    if values is None or len(values) > _CANDIDATE_LIMIT or not _portable(schema):
        return None
    try:
        import jsonschema
        from jsonschema import validators
    except ImportError:
        return None
    try:  # anything the validator cannot judge leaves the schema to the converter's error
        cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        validator = cls(schema)
        kept = [v for v in values if validator.is_valid(v)]
    except Exception:  # noqa: BLE001 - an invalid schema or an unresolvable reference
        return None
    return kept
