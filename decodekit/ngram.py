"""N-gram count tables: built from a corpus with a model's tokenizer, memory-mapped for lookups.

A table holds, for every n-gram order it was built with (2..6 by default), how often each
token followed each context of ``n - 1`` tokens in a corpus. Superposed decoding interpolates
these counts with the model's distribution (:mod:`decodekit.plugins.superposed`).

File layout (little endian, one file)::

    b"DKNGRAM\\0"  u32 format version  u32 0  u64 header length  header (JSON)
    arrays, each starting at a 64-byte aligned offset named in the header:
      ctx_keys     u64 [C]    hashes of (order, context tokens), sorted
      ctx_totals   u32 [C]    occurrences of each context (sum of its counts)
      entry_keys   u64 [E]    (context index << 32) | next token, sorted: a CSR layout whose
                              row index lives in the high bits, so the entries of context c are
                              one contiguous run and one binary search finds a (context, token)
      entry_counts u32 [E]    occurrences of the pair

Opening a table maps the file read-only; nothing is loaded until looked up. Context hashes are
64-bit; the builder checks that no two distinct contexts share a hash (and picks another hash
seed if they do), so counts are exact.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decodekit.errors import InputError, UserError

MAGIC = b"DKNGRAM\x00"
FORMAT_VERSION = 1
DEFAULT_ORDERS = (2, 3, 4, 5, 6)
MAX_ORDER = 8
_ALIGN = 64
_ARRAYS = (("ctx_keys", "<u8"), ("ctx_totals", "<u4"), ("entry_keys", "<u8"),
           ("entry_counts", "<u4"))
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M2
    h = h ^ (h >> np.uint64(27))
    h = h * _M3
    return h ^ (h >> np.uint64(31))


def context_hashes(contexts: np.ndarray, seed: int, orders: Sequence[int] | None = None) -> list[np.ndarray]:
    """Hash the trailing contexts of ``contexts`` for several orders at once.

    Parameters
    ----------
    contexts
        ``[N, L]`` token ids; row ``r``'s context of length ``i`` is ``contexts[r, L - i:]``.
    seed
        Hash seed of the table.
    orders
        n-gram orders to hash (context length ``order - 1 <= L``); default ``2 .. L + 1``.

    Returns
    -------
    list of numpy.ndarray
        One ``uint64 [N]`` array per order, in the order given.
    """
    contexts = np.asarray(contexts)
    n, width = contexts.shape
    orders = list(orders) if orders is not None else list(range(2, width + 2))
    needed = max(orders) - 1
    if needed > width:
        raise ValueError(f"order {needed + 1} needs {needed} context tokens, got {width}")
    g = np.full(n, (seed * 0x2545F4914F6CDD1D + 1) % 2**64, dtype=np.uint64)
    by_length = [g]
    for i in range(1, needed + 1):  # most recent token first: one pass serves every order
        g = _mix(g + (contexts[:, width - i].astype(np.uint64) + np.uint64(1)) * _M1)
        by_length.append(g)
    stacked = np.stack([by_length[o - 1] for o in orders])
    salts = np.array([o * int(_M3) % 2**64 for o in orders], np.uint64)
    return list(_mix(stacked ^ salts[:, None]))


class NGramTable:
    """n-gram counts for orders 2..``max(orders)`` (see the module docstring for the layout).

    Parameters
    ----------
    arrays
        The four arrays of the format, by name.
    meta
        The JSON header: ``orders``, ``seed``, ``vocab_size``, ``tokenizer`` (fingerprint),
        ``corpus`` (a description), ``tokens``.
    path
        The file it was opened from, if any.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path | None = None) -> None:
        self.arrays = arrays
        self.meta = meta
        self.path = path
        self.orders: tuple[int, ...] = tuple(meta["orders"])
        self.seed = int(meta["seed"])
        self.ctx_keys = arrays["ctx_keys"]
        self.ctx_totals = arrays["ctx_totals"]
        self.entry_keys = arrays["entry_keys"]
        self.entry_counts = arrays["entry_counts"]

    def __repr__(self) -> str:
        where = f" from {self.path.name}" if self.path else ""
        return (f"NGramTable(orders={list(self.orders)}, contexts={len(self.ctx_keys)}, "
                f"entries={len(self.entry_keys)}{where})")

    @property
    def name(self) -> str:
        """A short name: the corpus name in the header, else the file name."""
        return str(self.meta.get("name") or (self.path.name if self.path else "table"))

    # -- file --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the table to ``path`` atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layout: list[dict[str, Any]] = []
        offset = 0
        meta = dict(self.meta, format_version=FORMAT_VERSION)
        # the header holds the offsets, whose values depend on its length: iterate to a fixpoint
        for _ in range(4):
            head = json.dumps({**meta, "arrays": layout}, sort_keys=True).encode()
            offset = -(-(24 + len(head)) // _ALIGN) * _ALIGN
            new_layout = []
            for name, dtype in _ARRAYS:
                arr = self.arrays[name]
                new_layout.append({"name": name, "dtype": dtype, "length": int(arr.shape[0]),
                                   "offset": offset})
                offset += -(-arr.nbytes // _ALIGN) * _ALIGN
            if new_layout == layout:
                break
            layout = new_layout
        head = json.dumps({**meta, "arrays": layout}, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".ngram-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(MAGIC + np.array([FORMAT_VERSION, 0], "<u4").tobytes()
                          + np.array([len(head)], "<u8").tobytes() + head)
                for item in layout:
                    out.write(b"\0" * (item["offset"] - out.tell()))
                    out.write(np.ascontiguousarray(self.arrays[item["name"]], item["dtype"]).tobytes())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.path = path
        return path

    @classmethod
    def open(cls, path: str | Path) -> NGramTable:
        """Memory-map a table file.

        Raises
        ------
        InputError
            If the file is missing or is not an n-gram table of a supported format version.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"n-gram table file not found: {path}")
        with open(path, "rb") as handle:
            start = handle.read(24)
            if len(start) < 24 or start[:8] != MAGIC:
                raise InputError(f"{path} is not a decodekit n-gram table (build one with "
                                 "`decodekit ngram build`)")
            version = int(np.frombuffer(start[8:12], "<u4")[0])
            if version != FORMAT_VERSION:
                raise InputError(f"{path} has n-gram table format version {version}; this decodekit "
                                 f"reads version {FORMAT_VERSION}: rebuild it with `decodekit ngram build`")
            head_len = int(np.frombuffer(start[16:24], "<u8")[0])
            meta = json.loads(handle.read(head_len))
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        arrays = {}
        for item in meta.pop("arrays"):
            dtype = np.dtype(item["dtype"])
            end = item["offset"] + item["length"] * dtype.itemsize
            if end > len(mapped):
                raise InputError(f"{path} is truncated (array {item['name']!r} ends past the file)")
            arrays[item["name"]] = np.frombuffer(mapped, dtype, item["length"], item["offset"])
        return cls(arrays, meta, path)

    # -- lookups -----------------------------------------------------------------------------

    def _find_contexts(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = self.ctx_keys
        if len(keys) == 0:
            return np.zeros(len(hashes), np.int64), np.zeros(len(hashes), bool)
        pos = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
        return pos, keys[pos] == hashes

    def _pair_counts(self, ctx_pos: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        keys = self.entry_keys
        query = (ctx_pos.astype(np.uint64) << np.uint64(32)) | tokens.astype(np.uint64)
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        return np.where(keys[pos] == query, self.entry_counts[pos], 0)

    def _locate(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contexts = np.asarray(contexts, np.int64)
        if contexts.ndim != 2:
            raise ValueError(f"contexts must be a [N, order - 1] array, got shape {contexts.shape}")
        order = contexts.shape[1] + 1
        if order not in self.orders:
            raise ValueError(f"the table holds orders {list(self.orders)}; a context of "
                             f"{order - 1} tokens needs order {order}")
        (h,) = context_hashes(contexts, self.seed, [order])
        return self._find_contexts(h)

    def totals(self, contexts: np.ndarray) -> np.ndarray:
        """How often each context (rows of ``[N, order - 1]`` token ids) occurred followed by
        some token (0 if never)."""
        pos, found = self._locate(contexts)
        if not len(self.ctx_keys):
            return np.zeros(len(pos), np.int64)
        return np.where(found, self.ctx_totals[pos], 0).astype(np.int64)

    def counts(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """How often ``tokens[r]`` followed context ``contexts[r]`` (``[N, order - 1]``)."""
        pos, found = self._locate(contexts)
        counts = self._pair_counts(pos, np.asarray(tokens, np.int64)) if len(self.entry_keys) else 0
        return np.where(found, counts, 0).astype(np.int64)

    def total(self, context: Sequence[int]) -> int:
        """How often ``context`` occurred followed by some token (0 if never)."""
        return int(self.totals(np.asarray([list(context)], np.int64))[0])

    def count(self, context: Sequence[int], token: int) -> int:
        """How often ``token`` followed ``context``."""
        return int(self.counts(np.asarray([list(context)], np.int64), np.asarray([token]))[0])

    def continuations(self, context: Sequence[int]) -> dict[int, int]:
        """Every token seen after ``context`` with its count."""
        pos, found = self._locate(np.asarray([list(context)], np.int64))
        if not found[0]:
            return {}
        at = int(pos[0])
        lo, hi = np.searchsorted(self.entry_keys, np.array([at, at + 1], np.uint64) << np.uint64(32))
        tokens = (self.entry_keys[lo:hi] & _LOW32).astype(np.int64)
        return dict(zip(tokens.tolist(), self.entry_counts[lo:hi].astype(np.int64).tolist()))

    def interpolate(self, history: np.ndarray, lengths: np.ndarray, candidates: np.ndarray,
                    lambdas: Sequence[float]) -> np.ndarray:
        """Interpolated n-gram probabilities of candidate next tokens.

        ``out[r, j] = sum_i lambdas[i - 1] * count(ctx_i, v) / total(ctx_i)`` with ``v =
        candidates[r, j]`` and ``ctx_i`` the last ``i`` tokens of row ``r`` (order ``i + 1``);
        contexts the table never saw, orders it lacks and contexts longer than the row's
        history contribute 0.

        Parameters
        ----------
        history
            ``[M, W]`` the last ``W >= len(lambdas)`` tokens of each row, right-aligned.
        lengths
            ``[M]`` how many of those are real tokens (shorter histories are left-filled).
        candidates
            ``[M, n]`` candidate token ids.
        lambdas
            Weight of the 2-gram, 3-gram, ... estimates.

        Returns
        -------
        numpy.ndarray
            ``float64 [M, n]``.
        """
        history = np.asarray(history, np.int64)
        candidates = np.asarray(candidates, np.int64)
        m, n = candidates.shape
        out = np.zeros((m, n))
        used = [(i, float(lam)) for i, lam in enumerate(lambdas, start=1) if lam and (i + 1) in self.orders]
        if not used or m == 0:
            return out
        rows, lams, hashes = _query_hashes(history, np.asarray(lengths), used, self.seed)
        pos, found = self._find_contexts(hashes)
        if not found.any():
            return out
        rows, pos = rows[found], pos[found]
        weights = lams[found] / self.ctx_totals[pos]
        counts = self._pair_counts(np.repeat(pos, n), candidates[rows].reshape(-1)).reshape(-1, n)
        np.add.at(out, rows, counts * weights[:, None])
        return out


_MASK = 2**64 - 1


def _mix_int(h: int) -> int:
    """:func:`_mix` on one Python int (same results, no array overhead)."""
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def _query_hashes(history: np.ndarray, lengths: np.ndarray, used: list[tuple[int, float]],
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, weight and context hash of every (row, context length) pair the row's history
    covers. Few rows (a decoding step) are hashed in plain Python, many with numpy."""
    m, width = history.shape
    if m * len(used) > 256:
        hashes = context_hashes(history, seed, [i + 1 for i, _ in used])
        covered = np.concatenate([lengths >= i for i, _ in used])
        rows = np.tile(np.arange(m), len(used))[covered]
        lams = np.repeat(np.array([lam for _, lam in used]), m)[covered]
        return rows, lams, np.concatenate(hashes)[covered]
    start = (seed * 0x2545F4914F6CDD1D + 1) % 2**64
    salts = {i: (i + 1) * 0x94D049BB133111EB % 2**64 for i, _ in used}
    longest = used[-1][0]
    rows_out, lams_out, hashes_out = [], [], []
    for r, (tokens, length) in enumerate(zip(history.tolist(), lengths.tolist())):
        g, by_length = start, {}
        for i in range(1, min(length, longest) + 1):
            g = _mix_int((g + ((tokens[width - i] + 1) & _MASK) * 0x9E3779B97F4A7C15) & _MASK)
            by_length[i] = g
        for i, lam in used:
            if i <= length:
                rows_out.append(r)
                lams_out.append(lam)
                hashes_out.append(_mix_int(by_length[i] ^ salts[i]))
    return (np.array(rows_out, np.int64), np.array(lams_out, np.float64),
            np.array(hashes_out, np.uint64))


# -- building ---------------------------------------------------------------------------------


def count_ngrams(documents: Iterable[Sequence[int]], orders: Sequence[int] = DEFAULT_ORDERS, *,
                 meta: dict[str, Any] | None = None, seed: int = 0) -> NGramTable:
    """Count the n-grams of token-id documents (no n-gram crosses a document boundary).

    Parameters
    ----------
    documents
        Token ids per document.
    orders
        n-gram orders to count, each in ``2 .. 8``.
    meta
        Extra header fields (``name``, ``tokenizer``, ``vocab_size``, ``corpus``...).
    seed
        First hash seed to try; another is tried if two contexts collide.
    """
    orders = sorted(set(int(o) for o in orders))
    if not orders or orders[0] < 2 or orders[-1] > MAX_ORDER:
        raise InputError(f"n-gram orders must lie in 2..{MAX_ORDER}, got {list(orders)}")
    docs = [np.asarray(d, np.int64) for d in documents]
    docs = [d for d in docs if len(d)]
    flat = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    if len(flat) and (flat.min() < 0 or flat.max() >= 2**32):
        raise InputError("token ids must lie in [0, 2**32)")
    ends = np.repeat(np.cumsum([len(d) for d in docs]), [len(d) for d in docs])
    for attempt in range(8):
        built = _count(flat, ends, orders, seed + attempt)
        if built is not None:
            ctx_keys, totals, entry_keys, counts = built
            header = {"orders": orders, "seed": seed + attempt, "tokens": int(len(flat)),
                      "documents": len(docs), **(meta or {})}
            arrays = {"ctx_keys": ctx_keys, "ctx_totals": totals, "entry_keys": entry_keys,
                      "entry_counts": counts}
            return NGramTable(arrays, header)
    raise RuntimeError("could not find a collision-free hash seed for this corpus")  # pragma: no cover


def _count(flat: np.ndarray, ends: np.ndarray, orders: Sequence[int], seed: int) -> tuple[np.ndarray, ...] | None:
    """Counting arrays for one hash seed, or ``None`` if two distinct contexts collide."""
    parts_h, parts_next, parts_count, parts_order = [], [], [], []
    for order in orders:
        width = order - 1
        if len(flat) < order:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(flat, order)
        windows = windows[np.arange(len(windows)) + order <= ends[:len(windows)]]
        if not len(windows):
            continue
        (h,) = context_hashes(windows[:, :width], seed, [order])
        nxt = windows[:, width]
        idx = np.lexsort((nxt, h))
        h, nxt, ctx = h[idx], nxt[idx], windows[idx, :width]
        same = h[1:] == h[:-1]
        if bool((same & (ctx[1:] != ctx[:-1]).any(axis=1)).any()):
            return None
        new = np.ones(len(h), bool)
        new[1:] = ~same | (nxt[1:] != nxt[:-1])
        starts = np.flatnonzero(new)
        parts_h.append(h[starts])
        parts_next.append(nxt[starts])
        parts_count.append(np.diff(np.append(starts, len(h))))
        parts_order.append(np.full(len(starts), order, np.int8))
    if not parts_h:
        empty64, empty32 = np.zeros(0, np.uint64), np.zeros(0, np.uint32)
        return empty64, empty32, empty64, empty32
    h, nxt, cnt = np.concatenate(parts_h), np.concatenate(parts_next), np.concatenate(parts_count)
    order_of = np.concatenate(parts_order)
    idx = np.lexsort((nxt, h))
    h, nxt, cnt, order_of = h[idx], nxt[idx], cnt[idx], order_of[idx]
    first = np.ones(len(h), bool)
    first[1:] = h[1:] != h[:-1]
    # contexts of different orders must not share a hash
    if bool((~first[1:] & (order_of[1:] != order_of[:-1])).any()):
        return None
    starts = np.flatnonzero(first)
    ctx_index = np.cumsum(first) - 1
    totals = np.add.reduceat(cnt, starts)
    if len(starts) >= 2**32 or totals.max() >= 2**32:
        raise InputError("the corpus is too large for this table format (over 2**32 contexts or counts)")
    entry_keys = (ctx_index.astype(np.uint64) << np.uint64(32)) | nxt.astype(np.uint64)
    return h[starts], totals.astype(np.uint32), entry_keys, cnt.astype(np.uint32)


# -- tokenizers and corpora -------------------------------------------------------------------

_FINGERPRINTS: dict[int, tuple[Any, str]] = {}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable hash of what maps text to ids (vocabulary, merges, normalisation, special
    tokens), ignoring padding and truncation settings. Cached per tokenizer object."""
    cached = _FINGERPRINTS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items())) + type(tokenizer).__name__
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if len(_FINGERPRINTS) > 16:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(tokenizer)] = (tokenizer, digest)
    return digest


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (fast tokenizers encode in a batch)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def build_table(texts: Sequence[str], tokenizer: Any, orders: Sequence[int] = DEFAULT_ORDERS, *,
                name: str | None = None, corpus: Any = None) -> NGramTable:
    """Tokenise ``texts`` (one document each) with ``tokenizer`` and count their n-grams."""
    ids = encode_texts(tokenizer, texts)
    meta = {"name": name, "tokenizer": tokenizer_fingerprint(tokenizer), "vocab_size": len(tokenizer),
            "corpus": corpus, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return count_ngrams(ids, orders, meta=meta)


def check_tokenizer(table: NGramTable, tokenizer: Any) -> None:
    """Raise :class:`UserError` unless ``table`` was built with ``tokenizer``'s vocabulary."""
    want = table.meta.get("tokenizer")
    have = tokenizer_fingerprint(tokenizer)
    if want != have:
        raise UserError(f"n-gram table {table.name!r} was built with another tokenizer "
                        f"(fingerprint {want}, the model's is {have}); build one for this model "
                        "with `decodekit ngram build --tokenizer MODEL ...`")
