"""Pipeline files: loading TOML/YAML, located errors, --set overrides, and running them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import decodekit
from decodekit.errors import ConfigError, UserError
from decodekit.pipeline import Pipeline, PromptError, builtin_pipelines, resolve_pipeline


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama + tokenizer that pipeline files can name as their model."""
    from decodekit.testing import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.getbasetemp() / "tiny-llama-0"
    if not (path / "config.json").is_file():
        path.mkdir(exist_ok=True)
        tiny_llama(0).save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


SAMPLE_TOML = """\
model = "{model}"
max_new_tokens = 6
stop = ["fox"]
batch_size = 2

[strategy]
name = "sample"
options = {{ top_k = 20, seed = 7 }}

[[processors]]
name = "repetition_penalty"
options = {{ penalty = 1.3 }}

[[processors]]
name = "no_repeat_ngram"
[processors.options]
size = 2
"""

SAMPLE_YAML = """\
model: {model}
max_new_tokens: 6
stop: [fox]
batch_size: 2
strategy:
  name: sample
  options: {{top_k: 20, seed: 7}}
processors:
  - name: repetition_penalty
    options:
      penalty: 1.3
  - name: no_repeat_ngram
    options: {{size: 2}}
"""

PROMPTS = ["The quick brown", "A journey of a thousand", "To be, or not"]


def test_toml_and_yaml_give_the_same_pipeline(tiny_dir: Path, tmp_path: Path) -> None:
    toml = Pipeline.from_file(write(tmp_path, "p.toml", SAMPLE_TOML.format(model=tiny_dir)))
    yaml = Pipeline.from_file(write(tmp_path, "p.yaml", SAMPLE_YAML.format(model=tiny_dir)))
    assert toml.to_dict() == yaml.to_dict()
    settings = toml.to_dict()
    assert settings["strategy"] == {"name": "sample", "options": {"top_k": 20, "seed": 7}}
    assert [p["name"] for p in settings["processors"]] == ["repetition_penalty", "no_repeat_ngram"]
    assert settings["backend"] == {"name": "torch", "options": {}}
    # stop strings become the stop processor, after the configured processors
    assert toml.processor_specs()[-1] == ("stop", {"strings": ["fox"]})


def test_defaults_and_shorthand_names(tmp_path: Path) -> None:
    pipe = Pipeline.from_file(write(tmp_path, "p.toml", 'strategy = "beam"\nprocessors = ["stop"]\n'))
    assert pipe.spec.model == "default"
    assert pipe.spec.strategy.name == "beam" and pipe.spec.strategy.options == {}
    assert pipe.spec.max_new_tokens == 64 and pipe.spec.batch_size == 8
    assert pipe.spec.output_format == "jsonl"
    assert Pipeline.from_file(write(tmp_path, "empty.yaml", "")).spec.strategy.name == "greedy"


def test_relative_model_path_is_resolved_against_the_file(tiny_dir: Path) -> None:
    path = write(tiny_dir.parent, "relative.toml", f'model = "{tiny_dir.name}"\n')
    assert Pipeline.from_file(path).spec.model == str(tiny_dir)


def test_stop_strings_merge_into_a_configured_stop_processor() -> None:
    pipe = Pipeline.from_dict({"stop": "END", "processors": [
        {"name": "stop", "options": {"strings": ["a"], "include_stop_string": True}}]})
    assert pipe.processor_specs() == [("stop", {"strings": ["a", "END"], "include_stop_string": True})]


ERRORS = [
    # (file name, content, line, column, text in the message)
    ("syntax.toml", 'model = "m"\nmax_new_tokens = \n', 2, 18, "invalid TOML"),
    ("header.toml", 'model = "m"\n[strategy\n', 2, 10, "invalid TOML"),
    ("syntax.yaml", "model: m\n  chat: true\n", 2, 7, "invalid YAML"),
    ("unknown.toml", 'model = "m"\nmodle = "x"\n', 2, 1, "unknown key 'modle'; valid keys: model, backend"),
    ("unknown_in_table.toml", '[strategy]\nname = "greedy"\n  bogus = 1\n', 3, 3,
     "strategy.bogus: unknown key 'bogus'; valid keys: name, options"),
    ("unknown_table.toml", "chat = true\n\n[generation]\nmax = 3\n", 3, 2, "unknown key 'generation'"),
    ("type.toml", 'chat = true\nmax_new_tokens = "ten"\n', 2, 18,
     "max_new_tokens: Input should be a valid integer (got 'ten')"),
    ("limit.toml", "max_new_tokens = 0\n", 1, 18, "greater than 0"),
    ("bool.yaml", "chat: 1\n", 1, 7, "chat: Input should be a valid boolean"),
    ("format.toml", 'output_format = "csv"\n', 1, 17, "'jsonl' or 'text'"),
    ("strategy.toml", '\n[strategy]\nname = "sampel"\n', 3, 8,
     "unknown strategy 'sampel'; valid strategy names: {strategies}"),
    ("strategy_short.toml", 'chat = false\nstrategy = "sampel"\n', 2, 12, "valid strategy names: {strategies}"),
    ("option.toml", '[strategy]\nname = "sample"\n[strategy.options]\ntemperature = 0.5\ntop_q = 1\n', 5, 1,
     "unknown option 'top_q' for strategy 'sample'; valid options: temperature"),
    ("value.toml", '[strategy]\nname = "sample"\noptions = { top_k = 3, top_p = 2.0 }\n', 3, 32,
     "strategy.options.top_p: invalid options for strategy 'sample'"),
    ("beam.yaml", "strategy:\n  name: beam\n  options:\n    num_beams: 2\n    beams: 3\n", 5, 5,
     "unknown option 'beams' for strategy 'beam'"),
    ("processor.toml", '[[processors]]\nname = "stop"\n\n[[processors]]\nname = "no_repeat"\n', 5, 8,
     "processors.1.name: unknown processor 'no_repeat'; valid processor names: {processors}"),
    ("processor_option.yaml", "processors:\n  - name: no_repeat_ngram\n    options: {size: x}\n", 3, 21,
     "processors.0.options.size"),
    ("missing_name.toml", "[[processors]]\noptions = {}\n", 1, 3, "missing required key 'name'"),
    ("backend.toml", '[backend]\nname = "torch"\noptions = { devise = "cpu" }\n', 3, 13,
     "unknown option 'devise' for backend 'torch'; valid options: device"),
    ("stop.toml", 'stop = ["a", 2]\n', 1, 14, "stop.1: Input should be a valid string"),
    ("duplicate.yaml", "model: a\nchat: true\nmodel: b\n", 3, 1, "duplicate key 'model' (first given on line 1)"),
    ("blocked.toml", '[plugins]\nblock = ["decodekit.plugins.beam"]\n\n[strategy]\nname = "beam"\n', 5, 8,
     "valid strategy names: {not_beam}"),
]


def registered(kind: str) -> list[str]:
    return decodekit.get_plugin_system().registry.names(kind)


@pytest.mark.parametrize(("name", "text", "line", "column", "message"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_file_errors_name_file_line_and_column(tmp_path: Path, name: str, text: str, line: int,
                                               column: int, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        Pipeline.from_file(path)
    err = info.value
    assert (err.path, err.line, err.column) == (str(path), line, column)
    assert str(err).startswith(f"{path}:{line}:{column}: ")
    strategies = registered("strategy")
    assert message.format(strategies=", ".join(strategies), processors=", ".join(registered("processor")),
                          not_beam=", ".join(n for n in strategies if n != "beam")) in str(err)


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"list\.yaml:1:1: .*mapping"):
        Pipeline.from_file(write(tmp_path, "list.yaml", "- a\n- b\n"))


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\.toml, \.yaml or \.yml"):
        Pipeline.from_file(write(tmp_path, "p.json", "{}"))
    with pytest.raises(UserError, match="not found.*builtin pipelines: quickstart"):
        Pipeline.from_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("name", ["greedy.toml", "beam.yaml", "sample.toml"])
def test_example_pipelines_are_valid(name: str) -> None:
    pipe = Pipeline.from_file(Path(__file__).resolve().parents[2] / "examples" / name)
    assert pipe.spec.model == "default" and pipe.spec.chat is True
    assert pipe.spec.strategy.name == name.split(".")[0]


def test_builtin_pipeline_by_name() -> None:
    assert "quickstart" in builtin_pipelines()
    assert resolve_pipeline("quickstart").name == "quickstart.toml"
    pipe = Pipeline.from_file("quickstart")
    assert pipe.spec.model == "default" and pipe.spec.chat is True


def test_from_dict_errors_name_the_key_path() -> None:
    with pytest.raises(ConfigError, match=r"^strategy\.options\.top_k: invalid options") as info:
        Pipeline.from_dict({"strategy": {"name": "sample", "options": {"top_k": -1}}})
    assert info.value.line is None


def test_grammar_without_an_engine_is_located(tmp_path: Path) -> None:
    if decodekit.get_plugin_system().registry.names("grammar_engine"):
        pytest.skip("a grammar engine is installed, so a grammar is valid")
    with pytest.raises(ConfigError, match=r":2:11: grammar: a grammar needs a grammar engine"):
        Pipeline.from_file(write(tmp_path, "g.toml", 'chat = true\ngrammar = "root ::= x"\n'))


# -- overrides ------------------------------------------------------------------------------


def test_overrides_set_nested_values_and_leave_the_original_alone(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = Pipeline.from_file(write(tmp_path, "p.toml", SAMPLE_TOML.format(model=tiny_dir)))
    new = pipe.with_overrides(["strategy.options.top_k=5", "max_new_tokens=3", "chat=true",
                               "processors.no_repeat_ngram.options.size=4",
                               "processors.0.options.penalty=1.5", 'stop=["x", "y"]',
                               "strategy.options.seed=null", "system_prompt=42"])
    s = new.spec
    assert s.strategy.options == {"top_k": 5, "seed": None}
    assert (s.max_new_tokens, s.chat, s.stop, s.system_prompt) == (3, True, ["x", "y"], "42")
    assert s.processors[0].options == {"penalty": 1.5}
    assert s.processors[1].options == {"size": 4}
    assert pipe.spec.strategy.options == {"top_k": 20, "seed": 7}
    # replacing the whole strategy drops the old options
    assert pipe.with_overrides(["strategy=greedy"]).spec.strategy.model_dump() == {"name": "greedy",
                                                                                   "options": {}}
    beam = pipe.with_overrides(["strategy={name = 'beam', options = {num_beams = 2}}"])
    assert beam.spec.strategy.options == {"num_beams": 2}


@pytest.mark.parametrize(("assignment", "message"), [
    ("foo=1", "--set foo=1: unknown setting 'foo'; valid keys: model, backend, strategy"),
    ("strategy.options.top_z=1", "unknown option 'top_z' for strategy 'sample'; valid options: temperature, "
                                 "top_k, top_p, min_p, seed"),
    ("strategy.opts.top_k=1", "unknown key 'opts' of strategy; valid keys: name, options"),
    ("processors.7.options.size=1", "no processor '7' in this pipeline; give an index or a name of its "
                                    "processors: 0, 1, repetition_penalty, no_repeat_ngram"),
    ("processors.0.options.size=1", "unknown option 'size' for processor 'repetition_penalty'"),
    ("max_new_tokens.x=1", "max_new_tokens takes a value, not sub-keys"),
    ("max_new_tokens=ten", "--set max_new_tokens=ten: Input should be a valid integer (got 'ten')"),
    ("strategy.options.top_k=-1", "--set strategy.options.top_k=-1: invalid options for strategy 'sample'"),
    ("strategy.name=nope", "unknown strategy 'nope'; valid strategy names: "),
    ("top_k", "--set top_k: expected KEY=VALUE"),
    ("strategy..top_k=1", "empty part in key path"),
])
def test_invalid_overrides(tiny_dir: Path, tmp_path: Path, assignment: str, message: str) -> None:
    pipe = Pipeline.from_file(write(tmp_path, "p.toml", SAMPLE_TOML.format(model=tiny_dir)))
    with pytest.raises(ConfigError) as info:
        pipe.with_overrides([assignment])
    assert message in str(info.value)
    assert str(info.value).startswith(f"--set {assignment}: ")


def test_override_that_makes_file_options_invalid_points_at_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", SAMPLE_TOML.format(model=tiny_dir))
    expected = rf"^{re.escape(str(path))}:8:13: .*unknown options 'top_k', 'seed' for strategy 'beam'"
    with pytest.raises(ConfigError, match=expected):
        Pipeline.from_file(path).with_overrides(["strategy.name=beam"])


# -- running --------------------------------------------------------------------------------


def test_run_equals_generate_with_the_same_settings(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = Pipeline.from_file(write(tmp_path, "p.toml", SAMPLE_TOML.format(model=tiny_dir)))
    one_batch = pipe.with_overrides(["batch_size=8"])
    results = one_batch.run(PROMPTS)
    expected = decodekit.generate(PROMPTS, model=str(tiny_dir), strategy="sample",
                                  options={"top_k": 20, "seed": 7},
                                  processors=[("repetition_penalty", {"penalty": 1.3}),
                                              ("no_repeat_ngram", {"size": 2}), ("stop", {"strings": ["fox"]})],
                                  max_new_tokens=6)
    assert [g.token_ids for g in results] == [g.token_ids for g in expected]
    assert [g.text for g in results] == [g.text for g in expected]
    assert all(g.stats.batch_size == 3 for g in results)
    # batch_size 2: the first two prompts go together, the third alone
    batched = pipe.run(PROMPTS)
    assert [g.stats.batch_size for g in batched] == [2, 2, 1]
    pairs = decodekit.generate(PROMPTS[:2], model=pipe.load(), **pipe.generate_kwargs())
    alone = decodekit.generate(PROMPTS[2], model=pipe.load(), **pipe.generate_kwargs())
    assert [g.token_ids for g in batched] == [g.token_ids for g in [*pairs, alone]]


def test_run_takes_one_prompt_or_token_ids_and_loads_the_model_once(tiny_dir: Path) -> None:
    pipe = Pipeline.from_dict({"model": str(tiny_dir), "max_new_tokens": 4})
    model = pipe.load()
    ids = model.tokenizer.encode("The quick brown")
    by_text = pipe.run("The quick brown")
    by_ids = pipe.run([ids, "The quick brown"])
    assert len(by_text) == 1 and len(by_ids) == 2
    assert by_ids[0].token_ids == by_ids[1].token_ids == by_text[0].token_ids
    assert pipe.load() is model
    with pytest.raises(UserError, match="no prompts"):
        pipe.run([])
    with pytest.raises(PromptError, match=r"^prompt 2: the prompt is empty") as info:
        pipe.with_overrides(["batch_size=4"]).run(["The quick", ids, "", "To be"])
    assert info.value.index == 2
    with pytest.raises(PromptError, match=r"^prompt 1: the prompt has token ids outside the vocabulary"):
        pipe.run(["The quick", [1, len(model.tokenizer) + 5]])


def test_stream_yields_the_text_of_run(tiny_dir: Path) -> None:
    pipe = Pipeline.from_dict({"model": str(tiny_dir), "max_new_tokens": 8, "chat": True})
    stream = pipe.stream("The quick brown")
    text = "".join(delta.text for delta in stream)
    assert stream.generations is not None
    assert text == stream.text == pipe.run(["The quick brown"])[0].text
    with pytest.raises(UserError, match="one prompt"):
        pipe.stream(["a", "b"])  # type: ignore[arg-type]
