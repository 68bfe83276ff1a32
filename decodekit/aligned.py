"""Grammar-aligned sampling (ASAp): sample the model's distribution conditioned on a grammar.

Grammar-constrained decoding (GCD) masks, at each step, the tokens a grammar forbids and
renormalises what is left. That is a *local* correction: a prefix the model rarely finishes
grammatically is still followed as eagerly as one it usually does, so GCD samples a grammatical
text ``w`` with a probability that is generally not ``P(w) / P(L)``.

ASAp ("Grammar-Aligned Decoding", Park et al.) fixes this with what earlier samples revealed.
It keeps a trie of the prefixes sampled so far. A node ``w`` holds the probability of its token
given its parent, ``P(v | w)``, and an estimate ``c(w)`` of its *expected future
grammaticality*: the probability that the model, continuing ``w``, ends with a sentence of the
grammar. A prefix never seen counts as ``c = 1``, which over-approximates soundly. Each step
samples the next token ``v`` with weight ``P(v | w) * c(wv)`` among the tokens the grammar
allows. When a prefix is extended, ``c(w)`` becomes the sum over the allowed tokens of
``P(v | w) * c(wv)``, and the change is propagated to the root; a finished sample fixes its
leaf to 1 (grammatical) or 0. The first sample is distributed like GCD; as samples accumulate
the estimates tighten and the samples' distribution converges to ``P(w | w in L)``. On a finite
language, once the trie covers it, ``c(root) = P(L)`` and the samples follow ``P(w) / P(L)``
exactly.

Where the tries live: one :class:`TrieStore` per loaded model (backend instance), holding one
:class:`EFGTrie` per *target*: the grammar, the prompt's token ids, and everything else that
changes ``P(v | w)`` or where a sample can end (the strategy's temperature and truncation, every
other processor with its options, ``max_new_tokens``). Requests on the same model with the
same target share a trie, whether they come from :func:`decodekit.generate`, ``Model.generate``
or a pipeline. :func:`reset` forgets them; the strategy option ``aligned_reset`` does the same
for one request's targets.

:mod:`decodekit.aligned_exact` computes the exact target on a finite grammar, to measure how
close a sampler gets.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from decodekit.errors import OptionsError
from decodekit.generation import INVALID

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.rows import Rows
    from decodekit.strategy import DecodeContext

NEG_INF = float("-inf")
#: tries kept per model; the least recently used one is dropped beyond this
MAX_TRIES = 64


class Node:
    """One sampled prefix ``w`` in an :class:`EFGTrie`.

    Attributes
    ----------
    parent
        The prefix this one extends (``None`` for the root).
    token
        The token it adds to its parent (-1 for the root).
    logp
        ``log P(token | parent)`` under the target distribution (0.0 for the root).
    log_c
        ``log c(w)``, the log expected future grammaticality (0.0, i.e. ``c = 1``, until known).
    log_free
        Log of the target mass of the allowed tokens after ``w`` that have no node yet;
        ``None`` while ``w`` was never extended.
    children
        Nodes of the sampled continuations, by token id.
    terminal
        Whether sampling ends at ``w`` (its ``c`` is then exact: 1 or 0).
    """

    __slots__ = ("children", "log_c", "log_free", "logp", "parent", "terminal", "token")

    def __init__(self, parent: Node | None = None, token: int = -1, logp: float = 0.0) -> None:
        self.parent = parent
        self.token = token
        self.logp = logp
        self.log_c = 0.0
        self.log_free: float | None = None
        self.children: dict[int, Node] = {}
        self.terminal = False

    @property
    def efg(self) -> float:
        """The estimate ``c(w)``."""
        return math.exp(self.log_c)

    def __repr__(self) -> str:
        return f"Node(token={self.token}, c={self.efg:.6g}, children={len(self.children)})"


def _logsumexp(values: list[float]) -> float:
    finite = [v for v in values if v != NEG_INF]
    if not finite:
        return NEG_INF
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


class EFGTrie:
    """The sampled prefixes of one target with their expected-future-grammaticality estimates.

    Parameters
    ----------
    key
        What the trie belongs to (see :class:`TrieStore`); informational.
    """

    def __init__(self, key: Hashable = None) -> None:
        self.key = key
        self.root = Node()
        self.nodes = 1
        self.samples = 0
        self.keepalive: list[Any] = []
        self._lock = threading.RLock()

    @property
    def efg(self) -> float:
        """``c(root)``: an upper bound on the probability that a sample is grammatical, which
        reaches ``P(L)`` once the trie covers the language."""
        return self.root.efg

    def extend(self, node: Node, logp: torch.Tensor, allowed: torch.Tensor) -> None:
        """Record the allowed next tokens of ``node`` with their target log-probabilities.

        Sets ``c(node)`` to the sum over allowed ``v`` of ``P(v | node) * c(node v)`` and
        propagates the change to the root. Mutates the trie.

        Parameters
        ----------
        node
            A node of this trie.
        logp
            ``[vocab]`` target log-probabilities after ``node``.
        allowed
            ``[vocab]`` bool, the tokens the grammar (and every other constraint) allows.
        """
        with self._lock:
            free = allowed.clone()
            if node.children:
                free[list(node.children)] = False
            node.log_free = float(torch.logsumexp(logp.double().masked_fill(~free, NEG_INF), 0))
            self._refresh(node)

    def scores(self, node: Node, logp: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``[vocab]`` sampling scores after ``node``: ``log P(v | w) + log c(wv)`` for allowed
        tokens (``c = 1`` for unseen ones), ``-inf`` elsewhere. Extends ``node`` on its first
        visit (see :meth:`extend`)."""
        with self._lock:
            if node.log_free is None:
                self.extend(node, logp, allowed)
            out = logp.double().masked_fill(~allowed, NEG_INF)
            for token, child in node.children.items():
                out[token] += child.log_c
            return out

    def child(self, node: Node, token: int, logp: torch.Tensor, allowed: torch.Tensor) -> Node:
        """The node for ``node`` followed by ``token``, created on first use. Mutates the trie.

        Parameters are those of :meth:`extend`, for ``node``.
        """
        with self._lock:
            found = node.children.get(token)
            if found is not None:
                return found
            made = Node(node, token, float(logp[token]))
            node.children[token] = made
            self.nodes += 1
            self.extend(node, logp, allowed)  # its mass moves from "free" to the new child
            return made

    def settle(self, node: Node, grammatical: bool) -> None:
        """Mark ``node`` as where a sample ended: ``c = 1`` if grammatical, else 0. Mutates."""
        with self._lock:
            node.terminal = True
            node.log_c = 0.0 if grammatical else NEG_INF
            self.samples += 1
            if node.parent is not None:
                self._refresh(node.parent)

    def _refresh(self, node: Node | None) -> None:
        while node is not None:
            if node.terminal or node.log_free is None:
                return
            terms = [node.log_free] + [c.logp + c.log_c for c in node.children.values()]
            node.log_c = min(0.0, _logsumexp(terms))
            node = node.parent

    def walk(self) -> Iterator[tuple[list[int], Node]]:
        """Every node with its token path from the root, depth first."""
        stack: list[tuple[list[int], Node]] = [([], self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            for token, child in node.children.items():
                stack.append((path + [token], child))

    def __repr__(self) -> str:
        return f"EFGTrie(nodes={self.nodes}, samples={self.samples}, efg={self.efg:.6g})"


class TrieStore:
    """The tries of one model, by target key, least recently used first out.

    Parameters
    ----------
    max_tries
        How many tries to keep.
    """

    def __init__(self, max_tries: int = MAX_TRIES) -> None:
        self.max_tries = max_tries
        self._tries: OrderedDict[Hashable, EFGTrie] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> EFGTrie:
        """The trie of ``key`` (a new one if absent)."""
        with self._lock:
            trie = self._tries.get(key)
            if trie is None:
                trie = self._tries[key] = EFGTrie(key)
            self._tries.move_to_end(key)
            while len(self._tries) > self.max_tries:
                self._tries.popitem(last=False)
            return trie

    def discard(self, key: Hashable) -> None:
        """Forget the trie of ``key``."""
        with self._lock:
            self._tries.pop(key, None)

    def clear(self) -> None:
        """Forget every trie."""
        with self._lock:
            self._tries.clear()

    def __len__(self) -> int:
        return len(self._tries)

    def __iter__(self) -> Iterator[EFGTrie]:
        return iter(list(self._tries.values()))


_STORES: weakref.WeakKeyDictionary[Any, TrieStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def _backend_of(model: Any) -> Any:
    return getattr(model, "backend", model)


def store_for(model: Any) -> TrieStore:
    """The :class:`TrieStore` of a model (a :class:`decodekit.Model` or a backend)."""
    backend = _backend_of(model)
    with _STORES_LOCK:
        store = _STORES.get(backend)
        if store is None:
            store = _STORES[backend] = TrieStore()
        return store


def reset(model: Any = None) -> None:
    """Forget what grammar-aligned sampling learned: for one model (a :class:`decodekit.Model`
    or a backend), or for every model when ``model`` is ``None``."""
    with _STORES_LOCK:
        stores = list(_STORES.values()) if model is None else [_STORES.get(_backend_of(model))]
    for store in stores:
        if store is not None:
            store.clear()


# -- the sampler ------------------------------------------------------------------------------


def _grammar_signature(proc: Any) -> tuple[Any, ...]:
    compiled = proc.compiled
    text = getattr(compiled, "text", None)
    if isinstance(text, str) and text:
        return (type(compiled).__qualname__, hashlib.sha256(text.encode()).hexdigest(),
                getattr(compiled, "vocab_fingerprint", None),
                tuple(getattr(compiled, "eos_token_ids", ())), getattr(proc.options, "start", None))
    return (type(compiled).__qualname__, id(compiled))


class AlignedSampler:
    """ASAp for one generation of a one-row-per-prompt sampling strategy.

    The strategy calls :meth:`prepare` with the raw logits before its processors run,
    :meth:`choose` with the processed logits, and :meth:`advance` after the rows took their
    tokens.

    The target distribution ``P(v | w)`` is what unconstrained sampling with the same settings
    draws from: the logits after every processor except the grammar, warped by the strategy's
    temperature and truncation. The grammar (and anything else that sets logits to ``-inf``)
    decides which tokens are allowed.

    Parameters
    ----------
    ctx
        The generation's context.
    rows
        The strategy's rows (one per prompt).
    options
        The strategy's options (temperature and truncation are read from them).
    warp
        ``warp(logits, options)``: the strategy's temperature and truncation.
    reset
        Start this request's targets from empty tries.
    """

    def __init__(self, ctx: DecodeContext, rows: Rows, options: Any, warp: Any, *,
                 reset: bool = False) -> None:
        from decodekit.processor import LogitsProcessor

        chain = list(ctx.processors)
        self.grammars = [p for p in chain if getattr(p, "name", None) == "grammar"]
        if not self.grammars:
            raise OptionsError("aligned = true (grammar-aligned sampling) needs a grammar constraint: "
                               "pass grammar=... (or set 'grammar' in the pipeline), or set aligned = false")
        self.others = [p for p in chain if p not in self.grammars
                       and type(p).process is not LogitsProcessor.process]
        self.options = options
        self.warp = warp
        target = (tuple((k, getattr(options, k, None)) for k in ("temperature", "top_k", "top_p", "min_p")),
                  tuple((p.name, repr(p.options.model_dump())) for p in chain if p not in self.grammars),
                  ctx.max_new_tokens)
        grammar = tuple(_grammar_signature(p) for p in self.grammars)
        store = store_for(ctx.backend)
        fresh: set[Hashable] = set()
        self.tries: list[EFGTrie] = []
        for r in range(rows.num_rows):
            key = (grammar, tuple(ctx.prompts[int(rows.source[r])]), target)
            if reset and key not in fresh:
                store.discard(key)
                fresh.add(key)
            trie = store.get(key)
            trie.keepalive = [p.compiled for p in self.grammars]
            self.tries.append(trie)
        self.nodes = [t.root for t in self.tries]
        self.fallbacks = 0
        self._logp: torch.Tensor | None = None
        self._allowed: torch.Tensor | None = None
        self._active: list[int] = []

    def prepare(self, logits: torch.Tensor, rows: Rows) -> None:
        """Compute the target log-probabilities from the raw ``[rows, vocab]`` logits."""
        base = logits.clone()
        for proc in self.others:
            base = proc.process(base, rows)
        self._logp = torch.log_softmax(self.warp(base, self.options).double(), dim=-1)

    def choose(self, processed: torch.Tensor, rows: Rows, generator: torch.Generator) -> torch.Tensor:
        """Draw one token per row from the ASAp-corrected distribution.

        ``processed`` are the logits after every processor (grammar included). A row whose
        allowed tokens all have zero target probability (e.g. truncated away by ``top_k``)
        draws from the plain constrained distribution for this step.
        """
        assert self._logp is not None
        allowed = torch.isfinite(processed)
        scores = torch.zeros(processed.shape, dtype=torch.float64)
        self._active = (~rows.finished).nonzero().flatten().tolist()
        for r in self._active:
            row = self.tries[r].scores(self.nodes[r], self._logp[r], allowed[r])
            if not bool(torch.isfinite(row).any()):
                self.fallbacks += 1
                row = self.warp(processed[r:r + 1].clone(), self.options)[0].double()
            scores[r] = row
        self._allowed = allowed
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def advance(self, rows: Rows, ctx: DecodeContext) -> None:
        """Move each row that took a token to its child node; settle the rows that finished."""
        assert self._logp is not None and self._allowed is not None
        tokens = rows.tokens[:, rows.length - 1].tolist()
        for r in self._active:
            trie = self.tries[r]
            node = trie.child(self.nodes[r], tokens[r], self._logp[r], self._allowed[r])
            self.nodes[r] = node
            if bool(rows.finished[r]):
                trie.settle(node, self._grammatical(rows, r))
        ctx.extra_stats["aligned_efg"] = [t.efg for t in self.tries]
        ctx.extra_stats["aligned_nodes"] = sum(t.nodes for t in {id(t): t for t in self.tries}.values())
        ctx.extra_stats["aligned_fallbacks"] = self.fallbacks

    def _grammatical(self, rows: Rows, r: int) -> bool:
        if rows.finish_reason[r] == INVALID:
            return False
        return all(rows.states[g.state_index][r].is_complete() for g in self.grammars)
