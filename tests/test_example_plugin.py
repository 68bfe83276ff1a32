"""The example third-party plugin package (docs/examples/decodekit-plugin-example), installed
with pip into a temporary virtual environment: listed, used by name, and blocked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "decodekit-plugin-example"

# Runs inside the virtual environment: each argument list is one `decodekit` command line; prints
# one JSON object per command with its exit status, stdout and stderr.
DRIVER = """
import contextlib, io, json, sys
from decodekit.cli import main
from decodekit.manager import reset_plugin_system
for argv in json.loads(sys.argv[1]):
    reset_plugin_system()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    print(json.dumps({"status": status, "out": out.getvalue(), "err": err.getvalue()}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
                   check=True, capture_output=True)
    python = root / ("Scripts" if os.name == "nt" else "bin") / "python"
    # build from a copy so that no build output lands in the source tree; pip comes from the
    # parent environment (system site packages): no network, no build isolation
    source = shutil.copytree(EXAMPLE, root / "src-copy")
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                             "--no-index", "--disable-pip-version-check", "-q", str(source)],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    return python


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decodekit.testing import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _run(python: Path, commands: list[list[str]], **env: str) -> list[dict]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DECODEKIT_BLOCK_PLUGINS", "DECODEKIT_PLUGINS")}
    environ.update(env)
    result = subprocess.run([str(python), "-c", DRIVER, json.dumps(commands)], capture_output=True,
                            text=True, env=environ, timeout=300)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _pipeline(tmp_path: Path, tiny_dir: Path) -> str:
    text = (EXAMPLE / "pipeline.toml").read_text(encoding="utf-8")
    path = tmp_path / "pipeline.toml"
    path.write_text(f"model = {json.dumps(str(tiny_dir))}\n{text}", encoding="utf-8")
    return str(path)


def test_installed_plugin_is_listed_and_used_by_name(venv: Path, tiny_dir: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, tiny_dir)
    plugins, strategies, processors, run, run_again = _run(venv, [
        ["plugins", "--json"], ["strategies", "--options", "--json"], ["processors", "--json"],
        ["run", pipeline, "--prompt", "The quick brown"], ["run", pipeline, "--prompt", "The quick brown"]])
    listed = {p["name"]: p for p in json.loads(plugins["out"])}
    assert listed["example"]["version"] == "0.1.0"
    assert listed["example"]["builtin"] is False
    assert listed["example"]["hooks"] == ["decodekit_register_processors", "decodekit_register_strategies"]
    epsilon = {s["name"]: s for s in json.loads(strategies["out"])}["epsilon_sample"]
    assert epsilon["plugin"] == "example"
    assert [o["name"] for o in epsilon["options"]] == ["epsilon", "temperature"]
    assert "ascii_only" in {p["name"] for p in json.loads(processors["out"])}
    assert run["status"] == 0, run["err"]
    assert run["out"].strip() and run["out"].isascii()
    assert run_again["out"] == run["out"]  # seeded by the pipeline file


def test_blocked_by_environment(venv: Path, tiny_dir: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, tiny_dir)
    plugins, run = _run(venv, [["plugins", "--json"], ["run", pipeline, "--prompt", "Hi"]],
                        DECODEKIT_BLOCK_PLUGINS="example")
    assert "example" not in {p["name"] for p in json.loads(plugins["out"])}
    assert run["status"] == 2
    assert "epsilon_sample" in run["err"] and "greedy" in run["err"]  # unknown name, valid ones listed


def test_blocked_by_pipeline_file(venv: Path, tiny_dir: Path, tmp_path: Path) -> None:
    blocked = Path(_pipeline(tmp_path, tiny_dir))
    blocked.write_text(blocked.read_text(encoding="utf-8") + '\n[plugins]\nblock = ["example"]\n',
                       encoding="utf-8")
    (run,) = _run(venv, [["run", str(blocked), "--prompt", "Hi"]])
    assert run["status"] == 2
    assert "epsilon_sample" in run["err"]
