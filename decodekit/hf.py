"""decodekit's grammar engine for users of ``transformers.generate``.

Example::

    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
    from decodekit.hf import GrammarLogitsProcessor

    proc = GrammarLogitsProcessor("json", tokenizer)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]),
                         max_new_tokens=200)

transformers gives a logits processor only the token ids so far, and reorders rows freely (beam
search), so the processor keys grammar state by the generated ids of each row: the state of a
row is its parent's (the same ids without the last token) advanced by one token. Use one
processor per ``generate`` call, or call :meth:`GrammarLogitsProcessor.reset` in between.

decodekit strategies also run inside ``transformers`` as ``custom_generate`` callables (no
remote code): ``model.generate(ids, custom_generate=decodekit.hf.contrastive,
decodekit_options={"top_k": 4, "alpha": 0.6}, max_new_tokens=64)``. Every registered strategy
has one (:data:`STRATEGY_CALLABLES`); :func:`custom_generate` makes one for any strategy name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from decodekit.errors import MissingDependencyError

try:
    from transformers import LogitsProcessor as _Base
except ImportError as exc:  # pragma: no cover - transformers is what this module is for
    raise MissingDependencyError("transformers", extra="torch", feature="decodekit.hf") from exc


class GrammarLogitsProcessor(_Base):  # type: ignore[misc]
    """A ``transformers`` logits processor that allows only tokens a grammar allows.

    Parameters
    ----------
    grammar
        Anything :func:`decodekit.grammars.compile` accepts: a builtin grammar name, lark text,
        a JSON Schema, a pydantic model class, or an already compiled grammar.
    tokenizer
        The model's tokenizer.
    engine
        Grammar engine name.
    eos_token_ids
        End-of-sequence ids (default: the tokenizer's); allowed only when the text is complete.
    **options
        More compile options (``start``, ``schema_options``...).
    """

    def __init__(self, grammar: Any, tokenizer: Any, *, engine: str = "lark",
                 eos_token_ids: list[int] | tuple[int, ...] | None = None, **options: Any) -> None:
        from decodekit.grammars import compile

        if eos_token_ids is None and getattr(tokenizer, "eos_token_id", None) is not None:
            eos_token_ids = (tokenizer.eos_token_id,)
        if eos_token_ids is not None:
            options["eos_token_ids"] = tuple(eos_token_ids)
        self.compiled = compile(grammar, tokenizer, engine=engine, **options)
        self.eos_token_ids = tuple(getattr(self.compiled, "eos_token_ids", eos_token_ids or ()))
        self._states: dict[tuple[int, ...], Any] = {}
        self._prompt_len: int | None = None

    def reset(self) -> None:
        """Forget the rows of the previous ``generate`` call."""
        self._states = {}
        self._prompt_len = None

    def _state(self, ids: tuple[int, ...], previous: dict[tuple[int, ...], Any]) -> Any:
        """Matcher for generated ids ``ids`` (``None``: the ids broke the grammar)."""
        if not ids:
            return self.compiled.matcher()
        parent = previous.get(ids[:-1], False)
        if parent is False:  # not seen at the previous step: replay from the start
            parent = self.compiled.matcher()
            if parent.accept_tokens(list(ids[:-1])) != len(ids) - 1:
                parent = None
        if parent is None:
            return None
        if parent.is_terminated():
            return parent  # padding after end-of-sequence
        child = parent.fork()
        return child if child.accept(ids[-1]) else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prompt_len is None or input_ids.shape[1] < self._prompt_len:
            self.reset()
            self._prompt_len = int(input_ids.shape[1])
        size = int(self.compiled.vocab_size)
        if scores.shape[-1] < size:
            from decodekit.grammars.errors import VocabularyMismatchError

            raise VocabularyMismatchError(f"the logits have {scores.shape[-1]} entries but the "
                                          f"grammar's vocabulary has {size} tokens")
        previous = self._states
        current: dict[tuple[int, ...], Any] = {}
        generated = input_ids[:, self._prompt_len:].tolist()
        blocked = torch.ones_like(scores, dtype=torch.bool)
        for r, ids in enumerate(generated):
            key = tuple(ids)
            state = current.get(key, False)
            if state is False:
                state = self._state(key, previous)
                current[key] = state
            if state is None:  # a row that left the grammar (e.g. a -inf beam): let it end
                blocked[r, list(self.eos_token_ids)] = False
                continue
            mask = state.mask()
            if not mask.any():
                from decodekit.grammars.errors import GrammarDeadEndError

                raise GrammarDeadEndError(f"row {r}: no token of the vocabulary can continue the "
                                          f"grammar after {len(ids)} generated tokens", position=len(ids))
            blocked[r, :size] = torch.from_numpy(~mask)
        self._states = current
        return scores.masked_fill(blocked, float("-inf"))


# -- decodekit strategies as transformers ``custom_generate`` callables ---------------------------

#: Stopping criteria a ``custom_generate`` callable honours (through ``max_length`` and the EOS ids
#: of the generation config); any other criterion is refused rather than silently ignored.
_HONOURED_CRITERIA = ("MaxLengthCriteria", "EosTokenCriteria")


class _IdsOnlyTokenizer:
    """Stand-in tokenizer when the caller gives none: ids in, ids out (no text is needed)."""

    chat_template = None

    def __init__(self, eos_token_id: int | None, pad_token_id: int) -> None:
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return ""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        raise ValueError("decodekit.hf custom_generate callables work on token ids; pass "
                         "decodekit_tokenizer=... to use text features such as stop strings")


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, torch.Tensor):
        return tuple(int(v) for v in value.flatten().tolist())
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _run_strategy(strategy: str, model: Any, input_ids: torch.Tensor, logits_processor: Any,
                  stopping_criteria: Any, generation_config: Any, streamer: Any,
                  options: dict[str, Any] | None, tokenizer: Any, model_kwargs: dict[str, Any]) -> torch.Tensor:
    from decodekit.api import Model, generate
    from decodekit.backends.pytorch import TorchBackend

    if streamer is not None:
        raise ValueError("decodekit.hf custom_generate callables do not drive a streamer; use "
                         "decodekit.generate(..., stream=True) to stream")
    if getattr(generation_config, "num_beams", 1) not in (None, 1):
        raise ValueError(f"give the number of beams as decodekit_options={{'num_beams': "
                         f"{generation_config.num_beams}}}, not num_beams= (transformers would "
                         f"repeat the inputs for its own beam search)")
    if getattr(generation_config, "num_return_sequences", 1) not in (None, 1):
        raise ValueError("give num_return_sequences in decodekit_options for the strategies that "
                         "have it, not as a generate argument")
    unknown = [type(c).__name__ for c in (stopping_criteria or [])
               if type(c).__name__ not in _HONOURED_CRITERIA]
    if unknown:
        raise ValueError(f"stopping criteria {', '.join(unknown)} are not supported with "
                         f"decodekit strategies; supported: max_length / max_new_tokens and EOS")
    eos = _ids(getattr(generation_config, "_eos_token_tensor", None)) or _ids(generation_config.eos_token_id)
    pad = generation_config.pad_token_id
    pad = int(pad if pad is not None else (eos[0] if eos else 0))
    if tokenizer is None:
        tokenizer = _IdsOnlyTokenizer(eos[0] if eos else None, pad)
    backend = TorchBackend(model, tokenizer, model_id=getattr(model, "name_or_path", "") or "model")
    backend.eos_token_ids = eos
    backend.pad_token_id = pad
    mask = model_kwargs.get("attention_mask")
    rows = input_ids.tolist()
    if mask is not None:
        keep = mask.bool().tolist()
        prompts = [[t for t, k in zip(row, m) if k] for row, m in zip(rows, keep)]
    else:
        prompts = rows
    max_new = int(generation_config.max_length) - input_ids.shape[1]
    if max_new < 1:
        raise ValueError(f"max_length {generation_config.max_length} leaves no room after the "
                         f"{input_ids.shape[1]}-token input; set max_new_tokens")
    processors: list[Any] = []
    if logits_processor is not None and len(logits_processor) > 0:
        processors.append(("hf", {"processor": logits_processor}))
    gens = generate(prompts, model=Model(backend, reference=backend.model_id), strategy=strategy,
                    options=dict(options or {}), processors=processors, max_new_tokens=max_new)
    out_rows: list[list[int]] = []
    for row, gen in zip(rows, gens):
        for seq in gen.sequences:
            out_rows.append(row + list(seq.token_ids))
    width = max(len(r) for r in out_rows)
    out = torch.full((len(out_rows), width), pad, dtype=torch.long)
    for i, r in enumerate(out_rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(input_ids.device)


def custom_generate(strategy: str) -> Callable[..., torch.Tensor]:
    """A ``custom_generate`` callable for ``transformers`` ``generate`` that runs a decodekit strategy.

    Parameters
    ----------
    strategy
        A registered strategy name (``decodekit strategies``).

    Returns
    -------
    callable
        ``fn(model, input_ids, logits_processor, stopping_criteria, generation_config, ...)``
        returning ``[rows, length]`` token ids: each input row (with its padding) followed by
        the generated tokens, right-padded with the pad id; a strategy that returns several
        sequences per prompt (``num_return_sequences``) gives that many rows per prompt, best
        first. In ``generate``, pass the strategy's options as ``decodekit_options={...}`` and
        optionally ``decodekit_tokenizer=tokenizer`` (needed for text features such as stop
        strings). transformers' own logits processors (from the generation config or
        ``logits_processor=``) apply to every set of logits the strategy examines.
    """
    def run(model: Any, input_ids: torch.Tensor, logits_processor: Any = None, stopping_criteria: Any = None,
            generation_config: Any = None, synced_gpus: bool = False, streamer: Any = None,
            decodekit_options: dict[str, Any] | None = None, decodekit_tokenizer: Any = None,
            **model_kwargs: Any) -> torch.Tensor:
        return _run_strategy(strategy, model, input_ids, logits_processor, stopping_criteria,
                             generation_config, streamer, decodekit_options, decodekit_tokenizer,
                             model_kwargs)

    run.__name__ = run.__qualname__ = strategy
    run.__doc__ = f"Run decodekit's ``{strategy}`` strategy from ``model.generate(custom_generate=...)``."
    return run


greedy = custom_generate("greedy")
sample = custom_generate("sample")
beam = custom_generate("beam")
diverse_beam = custom_generate("diverse_beam")
contrastive = custom_generate("contrastive")
momentum = custom_generate("momentum")
cntp = custom_generate("cntp")
superposed = custom_generate("superposed")
ead = custom_generate("ead")

#: The builtin strategies' ``custom_generate`` callables, by strategy name.
STRATEGY_CALLABLES: dict[str, Callable[..., torch.Tensor]] = {
    f.__name__: f for f in (greedy, sample, beam, diverse_beam, contrastive, momentum, cntp, superposed, ead)}
