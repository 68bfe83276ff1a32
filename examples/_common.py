"""Shared command-line arguments of the example scripts."""

from __future__ import annotations

import argparse
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--model`` and ``--max-new-tokens``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct), a model directory, a .gguf "
                        "file or a Hub id")
    p.add_argument("--max-new-tokens", type=int, default=96, help="generation limit")
    return p


def load(reference: str) -> Any:
    """Load a model handle with decodekit."""
    import decodekit

    return decodekit.load(reference)
