"""Command-line conveniences: ``--json`` on every command, logging, progress for batch runs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from decodekit.cli import build_parser, configure_logging, main
from decodekit.manager import PluginSystem
from decodekit.pipeline import Pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decodekit.testing import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture()
def pipeline_file(tiny_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'model = "{tiny_dir}"\nmax_new_tokens = 6\noutput_format = "text"\n', encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _reset_logging():
    logger = logging.getLogger("decodekit")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_every_command_has_json(clean_env: None) -> None:
    parser = build_parser(PluginSystem())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name, p in sub.choices.items()
               if not any("--json" in a.option_strings for a in p._actions)]
    assert missing == []


def test_run_prompt_json_prints_one_record(pipeline_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = Pipeline.from_file(pipeline_file).run(["The quick"])[0]
    capsys.readouterr()
    assert main(["run", str(pipeline_file), "--prompt", "The quick", "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    assert record["text"] == expected.text and record["token_ids"] == expected.token_ids
    assert record["stats"]["new_tokens"] == len(expected.token_ids)


def test_run_input_json_overrides_text_output(pipeline_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"id": "a", "prompt": "The quick"}\n"To be"\n', encoding="utf-8")
    capsys.readouterr()
    assert main(["run", str(pipeline_file), "--input", str(prompts)]) == 0
    text_lines = capsys.readouterr().out.splitlines()
    assert main(["run", str(pipeline_file), "--input", str(prompts), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("id") for r in records] == ["a", None]
    assert [r["text"] for r in records] == text_lines


def test_log_level_sends_library_messages_to_stderr(pipeline_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from decodekit import api

    api._CACHE.clear()
    capsys.readouterr()
    assert main(["--log-level", "debug", "run", str(pipeline_file), "--prompt", "Hi", "--json"]) == 0
    err = capsys.readouterr().err
    assert "decodekit: INFO: decodekit.api: loaded model" in err
    assert "decodekit: DEBUG: decodekit.loop: greedy: 1 prompt(s)" in err
    # the default (warning) is quiet
    assert main(["run", str(pipeline_file), "--prompt", "Hi", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_log_level_from_environment_is_checked(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DECODEKIT_LOG_LEVEL", "loud")
    assert main(["strategies"]) == 2
    assert "log level 'loud' is not valid; choose one of debug, info, warning, error" in capsys.readouterr().err
    monkeypatch.setenv("DECODEKIT_LOG_LEVEL", "INFO")
    configure_logging()
    assert logging.getLogger("decodekit").level == logging.INFO


def test_batch_progress_is_logged(pipeline_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("\n".join(json.dumps(f"prompt {i}") for i in range(3)) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--log-level", "info", "run", str(pipeline_file), "--input", str(prompts),
                 "--output", str(tmp_path / "out.txt")]) == 0
    err = capsys.readouterr().err
    assert "generated 3 of 3 prompts" in err
    assert len((tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()) == 3


def test_plugin_command_without_json_mode_gets_one(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    from decodekit import hookimpl, manager

    def setup(parser: argparse.ArgumentParser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("say").add_argument("word")
        actions.add_parser("data")

        def run(args: argparse.Namespace) -> int:
            print(json.dumps({"n": 1}) if args.action == "data" else f"hello\n{args.word}")
            return 0
        return run

    class Plugin:
        @hookimpl
        def decodekit_register_commands(self, register):
            register("hello", setup, "say hello")

    system = manager.get_plugin_system()
    system.register(Plugin(), name="hello-plugin")
    try:
        capsys.readouterr()
        assert main(["hello", "say", "you"]) == 0
        assert capsys.readouterr().out == "hello\nyou\n"
        assert main(["hello", "say", "you", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"command": "hello", "status": 0, "output": ["hello", "you"]}
        assert main(["hello", "--json", "data"]) == 0
        assert json.loads(capsys.readouterr().out)["output"] == {"n": 1}
    finally:
        system.unregister("hello-plugin")
