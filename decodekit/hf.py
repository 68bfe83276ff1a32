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
"""

from __future__ import annotations

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
