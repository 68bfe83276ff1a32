"""Incremental detokenisation for streaming output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from decodekit.generation import Generation, StepEvent, TextDelta


class IncrementalDecoder:
    """Turns a growing list of token ids into text increments.

    Decodes a window starting a few tokens back so that multi-token characters and
    tokenizer-specific spacing come out right, and holds back text that ends in an incomplete
    UTF-8 sequence (``"\\ufffd"``) or could be the start of a stop string.

    Parameters
    ----------
    tokenizer
        The model's tokenizer.
    stop_strings
        Stop strings: nothing after the first one found is emitted.
    include_stop
        Emit the stop string itself (the ``stop`` processor's ``include_stop_string``);
        by default its text is never emitted.
    """

    def __init__(self, tokenizer: Any, stop_strings: tuple[str, ...] = (), *,
                 include_stop: bool = False) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""
        self.stop_strings = stop_strings
        self.include_stop = include_stop
        self.holdback = max((len(s) for s in stop_strings), default=1) - 1
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; return the newly safe text (may be empty)."""
        if self.stopped:
            return ""
        self.ids.extend(token_ids)
        text = self._text()
        hits = [(text.find(stop, max(0, len(self.emitted) - len(stop))), i, stop)
                for i, stop in enumerate(self.stop_strings)]
        hits = [hit for hit in hits if hit[0] >= 0]
        if hits:  # the stop string that starts first ends the text
            cut, _, stop = min(hits)
            self.stopped = True
            text = text[:cut + len(stop)] if self.include_stop else text[:cut]
        if not self.stopped:
            if text.endswith("\ufffd"):
                return ""
            if self.holdback:
                text = text[:max(len(self.emitted), len(text) - self.holdback)]
        if not text.startswith(self.emitted):
            return ""  # the tokenizer re-spaced earlier text; wait until it settles
        delta = text[len(self.emitted):]
        self.emitted = text
        return delta

    def flush(self, final_text: str) -> str:
        """Return what remains of ``final_text`` (the full decoded output) after what was emitted."""
        if final_text.startswith(self.emitted):
            delta = final_text[len(self.emitted):]
            self.emitted = final_text
            return delta
        return ""


class Stream:
    """Iterator of :class:`TextDelta` returned by ``generate(stream=True)``.

    After iteration ends, :attr:`generations` holds the full results (one per prompt).
    """

    def __init__(self, events: Iterator[StepEvent], decoders: list[IncrementalDecoder]) -> None:
        self._events = events
        self._decoders = decoders
        self.generations: list[Generation] | None = None

    def __iter__(self) -> Iterator[TextDelta]:
        events = self._events
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                self.generations = stop.value
                break
            for index, ids in event.tokens.items():
                text = self._decoders[index].push(ids)
                if text or ids:
                    yield TextDelta(index, text, list(ids))
        for index, gen in enumerate(self.generations or []):
            rest = self._decoders[index].flush(gen.text)
            if rest:
                yield TextDelta(index, rest, [])

    @property
    def text(self) -> str:
        """Text of the first prompt's best sequence (after iteration)."""
        if self.generations is None:
            raise RuntimeError("iterate over the stream first")
        return self.generations[0].text
