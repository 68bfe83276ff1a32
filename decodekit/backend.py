"""The backend contract: what a strategy may ask of a model.

A backend wraps one causal language model and its tokenizer. Strategies talk to it only
through this interface, with torch tensors as the common currency, so every strategy runs on
every backend that has the capabilities it declares.

Lifecycle::

    out, cache = backend.prefill(input_ids, attention_mask)   # new cache, logits of last position
    out = backend.decode(cache, next_ids)                      # appends to cache (mutates it)
    cache.select(rows)                                          # reorder / expand / drop rows
    other = cache.fork()                                        # independent copy
    cache.crop(length)                                          # roll back to ``length`` positions

Prompts are left-padded; the cache keeps the attention mask and the next position id of
every row, so callers never handle padding after prefill.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from decodekit.options import Options


class Capability:
    """Names of optional backend capabilities."""

    HIDDEN_STATES = "hidden_states"
    """``return_hidden=True`` yields the final hidden state (the LM-head input);
    ``prefill(..., return_hidden="all")`` yields it for every prompt position."""
    INPUT_EMBEDS = "input_embeds"
    """:meth:`Backend.decode_embeds` and :meth:`Backend.input_embeddings` work."""
    MULTI_TOKEN = "multi_token"
    """:meth:`Backend.decode` accepts several tokens per row in one pass (catch-up, rollouts)."""
    CACHE_OPS = "cache_ops"
    """The cache supports ``select`` (reorder/expand), ``fork`` and ``crop``."""

    ALL = frozenset({HIDDEN_STATES, INPUT_EMBEDS, MULTI_TOKEN, CACHE_OPS})


@dataclass
class StepOutput:
    """Result of one forward pass.

    Attributes
    ----------
    logits
        float32 logits, ``[rows, vocab]`` for the last position, or ``[rows, n, vocab]`` when
        all positions were requested.
    hidden
        The final hidden state with the same leading shape (``[rows, hidden]`` or
        ``[rows, n, hidden]``), ``[rows, length, hidden]`` after
        ``prefill(..., return_hidden="all")``, or ``None`` unless requested.
    """

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class KVCache(ABC):
    """A backend's per-generation model state: key/value cache, attention mask, positions.

    All methods mutate the cache in place except :meth:`fork`.
    """

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Number of rows."""

    @property
    @abstractmethod
    def length(self) -> int:
        """Number of positions held per row (padding included)."""

    @abstractmethod
    def select(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` (1-D long tensor), in that order; an index may repeat
        (expansion for beams or candidates). Mutates the cache."""

    @abstractmethod
    def fork(self) -> KVCache:
        """Return an independent copy; neither cache sees the other's later changes."""

    @abstractmethod
    def crop(self, length: int) -> None:
        """Drop positions past ``length`` in every row (rollback). Mutates the cache."""


class Backend(ABC):
    """A loaded model that strategies can run.

    Class attributes
    ----------------
    name
        Registry name, e.g. ``"torch"``.
    capabilities
        Which of :class:`Capability` this backend provides.
    Options
        Typed load options (device, dtype, ...).

    Instance attributes
    -------------------
    tokenizer
        A Hugging Face tokenizer (``encode``, ``decode``, ``apply_chat_template``).
    vocab_size
        Width of the logits.
    eos_token_ids
        Token ids that end a sequence.
    pad_token_id
        Id used to fill finished rows.
    max_context
        Longest sequence the model supports, or ``None`` if unknown.
    model_id
        A printable identifier of the loaded model.
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    Options: ClassVar[type[Options]]

    tokenizer: Any
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    bos_token_id: int | None
    max_context: int | None
    model_id: str

    @classmethod
    def parse_load_options(cls, options: dict[str, Any]) -> tuple[Any, Any]:
        """Split a ``decodekit_resolve_model`` options dict into typed options and a tokenizer.

        Parameters
        ----------
        options
            Load options as given by the user; the ``tokenizer`` key, when present, is not an
            option but an object passed along. Not modified.

        Returns
        -------
        tuple
            ``(cls.Options instance, tokenizer or None)``.

        Raises
        ------
        OptionsError
            An option is unknown or has the wrong type (the message names the backend).
        """
        from decodekit.options import validate_options

        rest = dict(options)
        tokenizer = rest.pop("tokenizer", None)
        return validate_options(cls.Options, rest, owner=f"backend {cls.name!r}"), tokenizer

    @abstractmethod
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                return_hidden: bool | Literal["all"] = False) -> tuple[StepOutput, KVCache]:
        """Run the prompts and create a cache.

        Parameters
        ----------
        input_ids
            ``[rows, length]`` left-padded token ids.
        attention_mask
            ``[rows, length]``, 1 for real tokens and 0 for padding; ``None`` means no padding.
        return_hidden
            ``True``: also return the final hidden state of the last position; ``"all"``: of
            every prompt position, ``[rows, length, hidden]`` (padding positions included).

        Returns
        -------
        (StepOutput, KVCache)
            Logits of each row's last position and the new cache.
        """

    @abstractmethod
    def decode(self, cache: KVCache, token_ids: torch.Tensor, *, return_hidden: bool = False,
               all_positions: bool = False) -> StepOutput:
        """Feed tokens and extend ``cache`` (mutates it).

        Parameters
        ----------
        cache
            The cache from :meth:`prefill` (or a fork or selection of it).
        token_ids
            ``[rows]`` (one token per row) or ``[rows, n]`` (needs ``multi_token`` for n > 1).
        return_hidden
            Also return final hidden states.
        all_positions
            Return logits (and hidden states) for every fed position, ``[rows, n, ...]``,
            instead of the last one only.
        """

    def decode_embeds(self, cache: KVCache, embeds: torch.Tensor, *, return_hidden: bool = False,
                      all_positions: bool = False) -> StepOutput:
        """Like :meth:`decode` but from input embeddings ``[rows, n, hidden]``
        (capability ``input_embeds``). Mutates ``cache``."""
        raise NotImplementedError(f"backend {self.name!r} cannot decode from input embeddings")

    def input_embeddings(self) -> torch.Tensor:
        """The input embedding matrix ``[vocab, hidden]`` (capability ``input_embeds``).
        Read-only: do not modify it."""
        raise NotImplementedError(f"backend {self.name!r} does not expose input embeddings")

    def decode_hidden(self, cache: KVCache, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (``[rows]``; extends ``cache``) and return only the final
        hidden states ``[rows, hidden]`` (capability ``hidden_states``).

        Backends skip the output layer where they can; pair with :meth:`lm_head` to compute
        logits for a few chosen rows only. Default: :meth:`decode` with ``return_hidden``.
        """
        out = self.decode(cache, token_ids, return_hidden=True)
        if out.hidden is None:
            raise NotImplementedError(f"backend {self.name!r} returns no hidden states")
        return out.hidden

    def decode_candidates(self, cache: KVCache, token_ids: torch.Tensor, *,
                          with_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Try ``k`` alternative next tokens per row in one forward pass (capability
        ``hidden_states``), for look-ahead strategies that keep one of them.

        Mutates ``cache``: until :meth:`keep_candidates` is called it holds the candidates and
        may only be forked (:meth:`KVCache.fork`) or passed to :meth:`keep_candidates`. The
        default expands every row ``k`` times (``cache.select``) and runs :meth:`decode` (or
        :meth:`decode_hidden`) over ``rows * k`` rows; a backend may do better (the torch
        backend feeds the candidates as ``k`` positions of their row that attend to the row's
        context and to themselves only, so the cache is never copied ``k`` times).

        Parameters
        ----------
        cache
            The rows' cache.
        token_ids
            ``[rows, k]`` candidate tokens.
        with_logits
            Also return the candidates' logits; ``False`` lets the backend skip its output
            layer (pair with :meth:`lm_head` for the chosen candidates).

        Returns
        -------
        (logits, hidden)
            float32 logits ``[rows, k, vocab]`` (``None`` unless ``with_logits``) and final
            hidden states ``[rows, k, hidden]``.
        """
        import torch

        rows, k = token_ids.shape
        cache.select(torch.arange(rows, device=token_ids.device).repeat_interleave(k))
        flat = token_ids.reshape(-1)
        if with_logits:
            out = self.decode(cache, flat, return_hidden=True)
            if out.hidden is None:
                raise NotImplementedError(f"backend {self.name!r} returns no hidden states")
            return out.logits.view(rows, k, -1), out.hidden.view(rows, k, -1)
        return None, self.decode_hidden(cache, flat).view(rows, k, -1)

    def keep_candidates(self, cache: KVCache, chosen: torch.Tensor) -> None:
        """Keep candidate ``chosen[r]`` of every row after :meth:`decode_candidates`.

        Mutates ``cache``: afterwards it is the cache that ``decode`` of the chosen tokens
        would have left, ``rows`` rows again, one position longer than before the candidates.

        Parameters
        ----------
        cache
            The cache passed to :meth:`decode_candidates`.
        chosen
            ``[rows]`` long, the index (``0 <= chosen[r] < k``) of each row's kept candidate.
        """
        import torch

        rows = chosen.numel()
        k = cache.batch_size // rows
        offsets = torch.arange(rows, device=chosen.device) * k
        cache.select(offsets + chosen.reshape(-1))

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """float32 logits ``[rows, vocab]`` of final hidden states ``[rows, hidden]``, without a
        forward pass, or ``None`` where the output layer cannot run on its own (the default).

        A model may transform logits after its output layer; callers check once that this
        reproduces a forward pass's logits before relying on it.
        """
        return None

    def parameter_count(self) -> int:
        """Number of model parameters (used for cost estimates); 0 if unknown."""
        return 0

    def describe(self) -> dict[str, Any]:
        """A small description for statistics and logs."""
        return {"backend": self.name, "model": self.model_id, "vocab_size": self.vocab_size}
