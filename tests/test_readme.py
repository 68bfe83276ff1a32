"""The README's test command is what CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = [line for line in ci if "pytest" in line and not line.startswith("#")]
    assert len(command) == 1, command
    readme = (ROOT / "README.md").read_text()
    assert f"\n{command[0]}\n" in readme
