"""The rows of a generation: token history, prompt mapping, per-row processor state, finish flags.

A strategy holds one :class:`Rows` next to the backend's cache. When it forks, expands or
reorders rows (beams, look-ahead candidates) it calls :meth:`Rows.select` with the same index
it gives the cache, and every per-row processor state (e.g. a grammar matcher) follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.processor import ProcessorChain

#: finish reasons
EOS = "eos"
STOP = "stop"
LENGTH = "length"


class Rows:
    """Per-row decoding state, independent of the model cache.

    Attributes
    ----------
    tokens
        ``[rows, capacity]`` long tensor: the left-padded prompt followed by generated tokens;
        only the first :attr:`length` columns are meaningful.
    length
        Filled columns (prompt width plus generated steps).
    prompt_width
        Width of the padded prompt block.
    prompt_lengths
        ``[rows]`` real prompt length of each row.
    source
        ``[rows]`` index of the prompt each row continues.
    finished
        ``[rows]`` bool: the row ended (EOS, stop string or length).
    finish_reason
        Per row, ``None`` or one of ``"eos"``, ``"stop"``, ``"length"``.
    stop_text
        Per row, the stop string that ended it (or ``None``).
    finish_len
        Per finished row, how many generated tokens it kept (later columns are padding).
    states
        Per processor, a list with one state object per row.
    """

    def __init__(self, tokens: torch.Tensor, length: int, prompt_width: int,
                 prompt_lengths: torch.Tensor, source: torch.Tensor, max_new_tokens: int,
                 chain: ProcessorChain, states: list[list[Any]] | None = None,
                 finished: torch.Tensor | None = None, finish_reason: list[str | None] | None = None,
                 stop_text: list[str | None] | None = None,
                 finish_len: list[int] | None = None) -> None:
        n = tokens.shape[0]
        self.tokens = tokens
        self.length = length
        self.prompt_width = prompt_width
        self.prompt_lengths = prompt_lengths
        self.source = source
        self.max_new_tokens = max_new_tokens
        self.chain = chain
        self.finished = finished if finished is not None else torch.zeros(n, dtype=torch.bool)
        self.finish_reason: list[str | None] = finish_reason if finish_reason is not None else [None] * n
        self.stop_text: list[str | None] = stop_text if stop_text is not None else [None] * n
        self.finish_len = finish_len if finish_len is not None else [0] * n
        # last: init_states reads the rows' histories, which need the fields above
        self.states = states if states is not None else chain.init_states(self)

    @classmethod
    def from_prompts(cls, prompts: list[list[int]], *, pad_token_id: int, max_new_tokens: int,
                     chain: ProcessorChain, repeat: int = 1) -> Rows:
        """Build rows for ``prompts`` (each repeated ``repeat`` times, adjacent), left-padded."""
        width = max(len(p) for p in prompts)
        n = len(prompts) * repeat
        tokens = torch.full((n, width + max_new_tokens), pad_token_id, dtype=torch.long)
        lengths = torch.empty(n, dtype=torch.long)
        source = torch.empty(n, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            for j in range(repeat):
                r = i * repeat + j
                tokens[r, width - len(prompt):width] = torch.tensor(prompt, dtype=torch.long)
                lengths[r] = len(prompt)
                source[r] = i
        return cls(tokens, width, width, lengths, source, max_new_tokens, chain)

    # -- views ------------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return self.tokens.shape[0]

    @property
    def num_generated(self) -> int:
        """Steps appended since the prompt (the same for every row)."""
        return self.length - self.prompt_width

    def generated(self, row: int) -> list[int]:
        """Generated token ids of ``row`` (up to and including the token that finished it)."""
        end = self.prompt_width + self.finish_len[row] if self.finished[row] else self.length
        return self.tokens[row, self.prompt_width:end].tolist()

    def history(self, row: int) -> list[int]:
        """Prompt (without padding) plus generated ids of ``row``."""
        start = self.prompt_width - int(self.prompt_lengths[row])
        return self.tokens[row, start:self.prompt_width].tolist() + self.generated(row)

    def attention_mask(self) -> torch.Tensor:
        """``[rows, prompt_width]`` mask of the padded prompt block (1 = real token)."""
        cols = torch.arange(self.prompt_width)
        return (cols[None, :] >= (self.prompt_width - self.prompt_lengths)[:, None]).long()

    # -- mutation ---------------------------------------------------------------------------

    def append(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row, update processor states and finish flags.

        Rows already finished get the token but no processor sees it. Mutates the rows.

        Returns
        -------
        torch.Tensor
            ``[rows]`` bool: rows that finished with this token.
        """
        if self.length >= self.tokens.shape[1]:
            raise RuntimeError("Rows capacity exceeded: the strategy appended past max_new_tokens")
        active = ~self.finished
        self.tokens[:, self.length] = next_tokens
        self.length += 1
        self.chain.update(self, next_tokens, active)
        if self.num_generated >= self.max_new_tokens:
            self.mark_finished(active, LENGTH)
        newly = self.finished & active
        if newly.any():
            for r in newly.nonzero().flatten().tolist():
                self.finish_len[r] = self.num_generated
        return newly

    def mark_finished(self, mask: torch.Tensor, reason: str, stop_text: str | None = None) -> None:
        """Finish the rows in ``mask`` (bool ``[rows]``) that are not finished yet. Mutates."""
        fresh = mask & ~self.finished
        if not fresh.any():
            return
        self.finished |= fresh
        for r in fresh.nonzero().flatten().tolist():
            self.finish_reason[r] = reason
            self.stop_text[r] = stop_text
            self.finish_len[r] = self.num_generated

    def select(self, index: torch.Tensor) -> Rows:
        """Return new rows taking ``index`` (1-D long tensor, repeats allowed) from these.

        Processor states are forked for repeated indices so that no two rows share a mutable
        state. ``self`` is left unchanged (its states are reused by the first occurrence of
        each index, so do not keep using ``self`` afterwards unless you called :meth:`fork`).
        """
        idx = index.tolist()
        seen: set[int] = set()
        firsts = []
        for i in idx:
            firsts.append(i not in seen)
            seen.add(i)
        states = self.chain.select_states(self.states, idx, firsts)
        out = Rows(self.tokens.index_select(0, index), self.length, self.prompt_width,
                   self.prompt_lengths.index_select(0, index), self.source.index_select(0, index),
                   self.max_new_tokens, self.chain, states, self.finished.index_select(0, index),
                   [self.finish_reason[i] for i in idx], [self.stop_text[i] for i in idx],
                   [self.finish_len[i] for i in idx])
        return out

    def fork(self) -> Rows:
        """An independent copy: tensors cloned, every processor state forked."""
        idx = list(range(self.num_rows))
        states = self.chain.select_states(self.states, idx, [False] * len(idx))
        return Rows(self.tokens.clone(), self.length, self.prompt_width, self.prompt_lengths.clone(),
                    self.source.clone(), self.max_new_tokens, self.chain, states,
                    self.finished.clone(), list(self.finish_reason), list(self.stop_text),
                    list(self.finish_len))
