"""Static checks: mypy on decodekit/ and ruff, with the configuration in pyproject.toml.

Skipped when the tools are not installed (the ``dev`` extra installs them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What ruff must find clean: the whole repository.
RUFF_PATHS = ["."]


def test_mypy_is_clean_on_decodekit() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache")],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ruff_is_clean() -> None:
    pytest.importorskip("ruff")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *RUFF_PATHS], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_package_is_typed() -> None:
    assert (REPO / "decodekit" / "py.typed").is_file()
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"py.typed"' in pyproject and "[tool.mypy]" in pyproject and "[tool.ruff]" in pyproject
