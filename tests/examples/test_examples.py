"""The runnable scripts in examples/: each one on the tiny model (fast), and briefly on the
default model (end to end)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny() -> Any:
    from decodekit.testing import tiny_model

    return tiny_model(0)


def test_extract_pydantic_returns_a_valid_model(tiny: Any) -> None:
    from pydantic import BaseModel, ConfigDict, Field

    class Short(BaseModel):  # a random tiny model needs short fields to finish in its context
        model_config = ConfigDict(extra="forbid")
        initials: str = Field(max_length=3, pattern="^[A-Z]+$")
        birth_year: int = Field(ge=1000, le=2100)

    mod = _script("extract_pydantic")
    person = mod.extract("Ada Lovelace was born in London in 1815.", tiny, max_new_tokens=200, schema=Short)
    assert isinstance(person, Short)
    assert 1000 <= person.birth_year <= 2100
    schema = mod.Person.model_json_schema()
    assert set(schema["required"]) == {"name", "birth_year", "city"} and schema["additionalProperties"] is False


def test_sql_generation_follows_the_grammar(tiny: Any) -> None:
    from decodekit.grammars import compile

    mod = _script("sql_generation")
    sql = mod.write_sql("all users", tiny, max_new_tokens=40)
    matcher = compile("sql", tiny.tokenizer).matcher()
    ids = tiny.tokenizer.encode(sql, add_special_tokens=False)
    assert sql.strip()
    assert matcher.accept_tokens(ids) == len(ids)  # a prefix of a query, or a whole one


def test_diverse_json_gives_distinct_schema_valid_candidates(tiny: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    mod = _script("diverse_json")
    objs = mod.candidates("a bakery product", tiny, n=2, max_new_tokens=300)
    assert len(objs) == 2
    for obj in objs:
        jsonschema.validate(obj, mod.SCHEMA)
    assert json.dumps(objs[0]) != json.dumps(objs[1])


def test_completion_drafts_gives_k_drafts(tiny: Any) -> None:
    mod = _script("completion_drafts")
    drafts = mod.drafts("def add(a, b):", tiny, k=3, max_new_tokens=6)
    assert len(drafts) == 3


@pytest.mark.e2e
@pytest.mark.parametrize("name,argv", [
    ("extract_pydantic", ["--max-new-tokens", "60"]),
    ("sql_generation", ["--max-new-tokens", "40"]),
    ("diverse_json", ["--candidates", "2", "--max-new-tokens", "60"]),
    ("completion_drafts", ["--drafts", "2", "--max-new-tokens", "8"]),
])
def test_scripts_run_on_the_default_model(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script(name)
    assert mod.main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if name == "diverse_json":
        assert all(json.loads(line) for line in out.splitlines())
    sys.modules.pop(f"examples_{name}", None)
