"""The vocabulary as a byte trie in flat arrays.

A :class:`TokenIndex` depends on the vocabulary only. Its trie is stored depth-first (byte,
parent, depth and subtree size per node; a node's subtree is the contiguous range after it)
and also in level order, which lets one numpy step advance every node of one depth at once:
walking the whole vocabulary from a lexer state costs about one table lookup per trie node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def distinct(values: np.ndarray) -> list[int]:
    """Sorted distinct values of a non-negative integer array (cheaper than ``np.unique``)."""
    if not values.size:
        return []
    return np.nonzero(np.bincount(values))[0].tolist()


@dataclass
class TokenIndex:
    """A vocabulary's byte trie and concatenated token bytes.

    Attributes
    ----------
    buf, start, length
        All token bytes concatenated; token ``i`` is ``buf[start[i]:start[i] + length[i]]``.
    dfs_byte, dfs_parent, dfs_depth, dfs_subtree
        The trie in depth-first order (node 0 is the root, which has no byte).
    dfs_token
        Per node, a token id spelt by the path to it, or ``-1``.
    tok_node
        Per token, its node (``-1`` for tokens without bytes).
    lv_parent, lv_byte, lv_offsets
        The trie in level order: node ``lv_offsets[d]`` to ``lv_offsets[d + 1]`` have depth
        ``d``; ``lv_parent`` indexes level-order positions.
    tok_lv
        Per token, the level-order position of its node (``0`` = root for empty tokens).
    lv_dfs, lv_child_start, lv_child_count
        Per level-order position: its depth-first node, and where its children start in level
        order and how many there are.
    """

    buf: np.ndarray
    start: np.ndarray
    length: np.ndarray
    dfs_byte: np.ndarray
    dfs_parent: np.ndarray
    dfs_depth: np.ndarray
    dfs_subtree: np.ndarray
    dfs_token: np.ndarray
    tok_node: np.ndarray
    lv_parent: np.ndarray
    lv_byte: np.ndarray
    lv_offsets: np.ndarray
    tok_lv: np.ndarray
    lv_dfs: np.ndarray
    lv_child_start: np.ndarray
    lv_child_count: np.ndarray

    @property
    def num_tokens(self) -> int:
        """Vocabulary size."""
        return int(self.length.shape[0])

    def token_bytes(self, token: int) -> bytes:
        """The bytes of ``token``."""
        s = int(self.start[token])
        return self.buf[s:s + int(self.length[token])].tobytes()

    @classmethod
    def build(cls, tokens: tuple[bytes, ...]) -> TokenIndex:
        """Build the index of a list of token byte strings."""
        n = len(tokens)
        length = np.fromiter((len(t) for t in tokens), dtype=np.int32, count=n)
        start = np.zeros(n, dtype=np.int64)
        if n:
            start[1:] = np.cumsum(length[:-1], dtype=np.int64)
        buf = np.frombuffer(b"".join(tokens), dtype=np.uint8).copy()
        order = sorted((i for i in range(n) if tokens[i]), key=tokens.__getitem__)
        # In sorted order, token k adds the nodes of its bytes past the longest common prefix
        # with token k-1, in depth order: that is the depth-first (pre-)order of the trie.
        lcps = np.zeros(len(order), dtype=np.int64)
        if order:
            width = int(length.max())
            mat = np.zeros((len(order), width), dtype=np.int16) - 1
            sorted_len = length[order]
            rows = np.repeat(np.arange(len(order)), sorted_len)
            cols = np.arange(int(sorted_len.sum())) - np.repeat(np.cumsum(sorted_len) - sorted_len, sorted_len)
            mat[rows, cols] = np.frombuffer(b"".join(tokens[i] for i in order), dtype=np.uint8)
            differ = mat[1:] != mat[:-1]
            differ[:, -1] = True
            lcps[1:] = np.minimum(np.argmax(differ, axis=1), np.minimum(sorted_len[1:], sorted_len[:-1]))
        else:
            sorted_len = np.zeros(0, dtype=np.int32)
        new = (sorted_len - lcps).astype(np.int64)
        first_new = 1 + np.concatenate([[0], np.cumsum(new)[:-1]]) if order else np.zeros(0, dtype=np.int64)
        m = 1 + int(new.sum())
        parent = np.arange(-1, m - 1, dtype=np.int64)  # a new node's parent: the node before it...
        tok_node = np.full(n, -1, dtype=np.int64)
        path = [0]  # path[d]: the node at depth d on the previous token's path
        lcp_list, new_list, first_list = lcps.tolist(), new.tolist(), first_new.tolist()
        for k, i in enumerate(order):
            lcp, cnt, first = lcp_list[k], new_list[k], first_list[k]
            if cnt:
                parent[first] = path[lcp]  # ...except the first, whose parent is shared
                path[lcp + 1:] = range(first, first + cnt)
            else:
                del path[lcp + 1:]
            tok_node[i] = path[-1]
        depth = np.zeros(m, dtype=np.int32)
        node_byte = np.zeros(m, dtype=np.uint8)
        if order:
            owner = np.repeat(np.arange(len(order)), new)
            node_depth = np.arange(m - 1) - np.repeat(first_new - 1, new) + np.repeat(lcps, new) + 1
            depth[1:] = node_depth
            node_byte[1:] = mat[owner, node_depth - 1]
        node_token = np.full(m, -1, dtype=np.int64)
        ids = np.array(order, dtype=np.int64)
        node_token[tok_node[ids[::-1]]] = ids[::-1]  # the smallest id spelling a node's path
        # subtree sizes, accumulated from the deepest level up
        subtree = np.ones(m, dtype=np.int64)
        for d in range(int(depth.max()) if m > 1 else 0, 0, -1):
            level = np.nonzero(depth == d)[0]
            subtree += np.bincount(parent[level], weights=subtree[level], minlength=m).astype(np.int64)
        lv_order = np.lexsort((np.arange(m), depth))
        lv_pos = np.empty(m, dtype=np.int64)
        lv_pos[lv_order] = np.arange(m)
        lv_parent = np.where(parent[lv_order] >= 0, lv_pos[np.maximum(parent[lv_order], 0)], 0)
        counts = np.bincount(depth, minlength=1)
        lv_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        lv_offsets[1:] = np.cumsum(counts)
        tok_lv = np.where(tok_node >= 0, lv_pos[np.maximum(tok_node, 0)], 0)
        # children of a level-order node are contiguous in the next level
        child_count = np.bincount(lv_parent[1:], minlength=m) if m > 1 else np.zeros(m, dtype=np.int64)
        child_start = np.searchsorted(lv_parent[1:], np.arange(m), side="left") + 1
        return cls(buf, start, length, node_byte, parent.astype(np.int32), depth,
                   subtree.astype(np.int32), node_token.astype(np.int32), tok_node.astype(np.int32),
                   lv_parent.astype(np.int32), node_byte[lv_order], lv_offsets, tok_lv.astype(np.int32),
                   lv_order.astype(np.int32), child_start.astype(np.int32), child_count.astype(np.int32))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays, for ``np.savez``."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TokenIndex:
        """Inverse of :meth:`to_arrays`."""
        return cls(**{k: arrays[k] for k in cls.__dataclass_fields__})

    def longest_prefix_token(self, data: bytes) -> tuple[int, int, bool]:
        """Longest token that is a prefix of ``data``.

        Returns
        -------
        tuple
            ``(token id or -1, its length, whether a longer token continues that prefix)``.
        """
        node, best, best_len = 0, -1, 0
        extendable = False
        for d, b in enumerate(data):
            # children of ``node`` are contiguous sub-ranges of its subtree
            child = node + 1
            end = node + int(self.dfs_subtree[node])
            found = -1
            while child < end:
                if int(self.dfs_byte[child]) == b:
                    found = child
                    break
                child += int(self.dfs_subtree[child])
            if found < 0:
                break
            node = found
            if int(self.dfs_token[node]) >= 0:
                best, best_len = int(self.dfs_token[node]), d + 1
        if best >= 0:
            extendable = bool(self.dfs_subtree[node] > 1) or best_len < len(data)
        return best, best_len, extendable


#: bytes of the token slice: printable ASCII but the quote and the backslash (the bulk of
#: JSON string content); see :class:`WalkParts`
SLICE_BYTES = bytes(b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))
#: trie walks go this deep; the few longer tokens are stepped one at a time
DEEP = 16


@dataclass
class TrieLevels:
    """A trie with what a depth-limited walk needs.

    Attributes
    ----------
    index
        The trie.
    lv_byte, lv_depth
        Per level-order node: its byte (``int32``) and depth.
    long_toks, long_anc
        Tokens longer than :data:`DEEP`, and the level-order position of each one's ancestor
        at depth :data:`DEEP`.
    lv_token
        Per level-order node, the smallest token id it spells, or ``-1``.
    dfs_nodes, dfs_tokens
        Tokens (with bytes) sorted by their depth-first node, and those nodes.
    dup_tok, dup_of
        Tokens whose bytes a smaller id also has, and that id.
    """

    index: TokenIndex
    lv_byte: np.ndarray
    lv_depth: np.ndarray
    long_toks: np.ndarray
    long_anc: np.ndarray
    lv_token: np.ndarray
    dfs_nodes: np.ndarray
    dfs_tokens: np.ndarray
    dup_tok: np.ndarray
    dup_of: np.ndarray

    @classmethod
    def build(cls, index: TokenIndex) -> TrieLevels:
        """Derive the walk arrays of ``index``."""
        depth = np.repeat(np.arange(len(index.lv_offsets) - 1, dtype=np.int32), np.diff(index.lv_offsets))
        long_toks = np.nonzero(index.length > DEEP)[0].astype(np.int64)
        anc = index.tok_lv[long_toks].astype(np.int64)
        for _ in range(int(index.length.max(initial=0)) - DEEP):
            up = depth[anc] > DEEP
            anc[up] = index.lv_parent[anc[up]]
        lv_token = index.dfs_token[index.lv_dfs].astype(np.int64)
        ids = np.nonzero(index.length > 0)[0]
        nodes = index.tok_node[ids].astype(np.int64)
        order = np.argsort(nodes, kind="stable")
        first = index.dfs_token[nodes].astype(np.int64)
        dup = first != ids
        return cls(index, index.lv_byte.astype(np.int32), depth, long_toks, anc, lv_token, nodes[order],
                   ids[order].astype(np.int64), ids[dup].astype(np.int64), first[dup])


@dataclass
class WalkParts:
    """Vocabulary-level data for mask walks.

    The slice is the tokens made only of :data:`SLICE_BYTES`. From a lexer state where every
    slice byte leads to one same state (inside most string terminals), a slice token's fate
    depends only on its length, so a walk runs the trie of the other tokens (:attr:`rest`) and
    handles the slice by length (see :class:`decodekit.grammars.index.MaskStore`).

    Attributes
    ----------
    full, rest
        The whole vocabulary's trie, and the trie of the tokens outside the slice.
    slice_tok, slice_len, slice_first
        Slice tokens, their lengths and their first bytes.
    tokens
        Token bytes, for tokens stepped one at a time.
    """

    full: TrieLevels
    in_slice: np.ndarray
    slice_tok: np.ndarray
    slice_len: np.ndarray
    slice_first: np.ndarray
    tokens: list[bytes]
    _rest: TrieLevels | None = None
    _by_length: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def by_length(self) -> tuple[np.ndarray, np.ndarray]:
        """Slice tokens sorted by length, and where each length's run starts
        (``bounds[n]:bounds[n + 1]`` are the tokens of ``n`` bytes)."""
        if self._by_length is None:
            order = np.argsort(self.slice_len, kind="stable")
            lengths = self.slice_len[order]
            bounds = np.searchsorted(lengths, np.arange(int(lengths.max(initial=0)) + 2))
            self._by_length = (self.slice_tok[order], bounds)
        return self._by_length

    @property
    def rest(self) -> TrieLevels:
        """The trie of the tokens outside the slice (built on first use)."""
        if self._rest is None:
            rest = TokenIndex.build(tuple(b"" if s else t for s, t in zip(self.in_slice.tolist(), self.tokens)))
            self._rest = TrieLevels.build(rest)
        return self._rest

    @classmethod
    def of(cls, index: TokenIndex) -> WalkParts:
        """The parts of ``index`` (built once per index object)."""
        hit = index.__dict__.get("_walk_parts")
        if hit is not None:
            return hit
        data = index.buf.tobytes()
        starts, lengths = index.start.tolist(), index.length.tolist()
        tokens = [data[s:s + n] for s, n in zip(starts, lengths)]
        allowed = np.zeros(256, dtype=bool)
        allowed[list(SLICE_BYTES)] = True
        bad = np.zeros(len(tokens), dtype=np.int64)
        if index.buf.size:
            owner = np.repeat(np.arange(len(tokens)), index.length)
            bad = np.bincount(owner, weights=~allowed[index.buf], minlength=len(tokens))
        in_slice = (bad == 0) & (index.length > 0)
        ids = np.nonzero(in_slice)[0]
        first = index.buf[index.start[ids]].astype(np.int64) if ids.size else np.zeros(0, dtype=np.int64)
        slice_tok = ids.astype(np.int64)
        slice_len = index.length[slice_tok].astype(np.int64)
        parts = cls(TrieLevels.build(index), in_slice, slice_tok, slice_len, first, tokens)
        index.__dict__["_walk_parts"] = parts
        return parts


class WalkResult:
    """Tokens a walk placed, sparsely: those still inside the lexeme (with the lexer state
    after them) and those whose lexeme ended in an accepting state (with the terminal it is
    and the offset where it ended). Tokens that died otherwise are in neither part.

    Parts are added as arrays and joined once by :meth:`arrays`, so a walk costs what it
    visits, not the vocabulary's size.
    """

    __slots__ = ("_live_tok", "_live_state", "_end_tok", "_end_won", "_end_off")

    def __init__(self) -> None:
        self._live_tok: list[np.ndarray] = []
        self._live_state: list[np.ndarray] = []
        self._end_tok: list[np.ndarray] = []
        self._end_won: list[np.ndarray] = []
        self._end_off: list[np.ndarray] = []

    def live(self, toks: np.ndarray, states: np.ndarray) -> None:
        """Add tokens that end inside the lexeme, in lexer states ``states``."""
        if toks.size:
            self._live_tok.append(toks.astype(np.int64, copy=False))
            self._live_state.append(states.astype(np.int32, copy=False))

    def ended(self, toks: np.ndarray, won: np.ndarray, offs: np.ndarray) -> None:
        """Add tokens whose lexeme ended as terminal ``won`` at byte offset ``offs``."""
        if toks.size:
            self._end_tok.append(toks.astype(np.int64, copy=False))
            self._end_won.append(won.astype(np.int32, copy=False))
            self._end_off.append(offs.astype(np.int32, copy=False))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(live tokens, their states, ended tokens, their terminals, their offsets)``."""
        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            if not parts:
                return np.zeros(0, dtype=dtype)
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        return (cat(self._live_tok, np.int64), cat(self._live_state, np.int32), cat(self._end_tok, np.int64),
                cat(self._end_won, np.int32), cat(self._end_off, np.int32))


def step_tokens(lexer: Any, tokens: list[bytes], toks: list[int], state: int, offset: int,
                out: WalkResult) -> None:
    """Run tokens one byte at a time through ``lexer`` from ``state``, past their first
    ``offset`` bytes, and add where they end to ``out``."""
    rows, expand, winner = lexer.rows, lexer.expand, lexer.winner_list
    live_t, live_s, end_t, end_w, end_o = [], [], [], [], []
    for tok in toks:
        data = tokens[tok]
        cur = state
        for pos in range(offset, len(data)):
            nxt = (rows[cur] or expand(cur))[data[pos]]
            if nxt == 0:
                if winner[cur] >= 0:
                    end_t.append(tok)
                    end_w.append(winner[cur])
                    end_o.append(pos)
                break
            cur = nxt
        else:
            live_t.append(tok)
            live_s.append(cur)
    out.live(np.array(live_t, dtype=np.int64), np.array(live_s, dtype=np.int32))
    out.ended(np.array(end_t, dtype=np.int64), np.array(end_w, dtype=np.int32), np.array(end_o, dtype=np.int32))


def walk_trie(lexer: Any, levels: TrieLevels, state: int, first: np.ndarray | None, n: int,
              tokens: list[bytes], out: WalkResult) -> None:
    """Walk a trie through the lexing automaton ``lexer`` from ``state``; add every token's
    fate to ``out`` (see :class:`WalkResult`).

    Only live trie nodes are visited, breadth first. With ``first`` (``bool [256]``), only
    tokens whose first byte it flags are walked. Tokens longer than :data:`DEEP` are finished
    with :func:`step_tokens` (``tokens`` holds every token's bytes); ``n`` is the vocabulary
    size.
    """
    idx = levels.index
    bytes32 = levels.lv_byte
    frontier = np.zeros(1, dtype=np.int64)
    fstates = np.full(1, state, dtype=np.int32)
    live_nodes: list[np.ndarray] = []
    live_states: list[np.ndarray] = []
    dead_nodes: list[np.ndarray] = []
    dead_won: list[np.ndarray] = []
    dead_depth: list[np.ndarray] = []
    trans = None
    for depth in range(DEEP):
        counts = idx.lv_child_count[frontier]
        total = int(counts.sum())
        if not total:
            break
        ends = np.cumsum(counts)
        kids = np.repeat(idx.lv_child_start[frontier] - (ends - counts), counts) + np.arange(total)
        lexer.ensure(fstates)
        trans = lexer.trans_flat
        src = np.repeat(fstates, counts)
        if first is not None:  # the root's children: one per first byte
            keep = first[bytes32[kids]]
            kids, src = kids[keep], src[keep]
            first = None
        ns = trans[src * 256 + bytes32[kids]]
        alive = ns != 0
        if not alive.all():
            dead = ~alive
            ws = lexer.winner[src[dead]]
            acc = ws >= 0
            if acc.any():
                dead_nodes.append(kids[dead][acc])
                dead_won.append(ws[acc])
                dead_depth.append(np.full(int(acc.sum()), depth, dtype=np.int32))
        frontier = kids[alive]
        fstates = ns[alive]
        live_nodes.append(frontier)
        live_states.append(fstates)
        if not frontier.size:
            break
    found_toks: list[np.ndarray] = []
    found_state: list[np.ndarray] = []
    if live_nodes:
        nodes = np.concatenate(live_nodes)
        states = np.concatenate(live_states)
        tok = levels.lv_token[nodes]
        has = tok >= 0
        found_toks.append(tok[has])
        found_state.append(states[has])
    # a token at or below a dead node whose parent is accepting ends its lexeme there: those
    # subtrees' tokens are contiguous in depth-first order
    end_toks = end_won = end_off = np.zeros(0, dtype=np.int64)
    if dead_nodes:
        dn = np.concatenate(dead_nodes)
        dw = np.concatenate(dead_won)
        dd = np.concatenate(dead_depth)
        lo_dfs = idx.lv_dfs[dn].astype(np.int64)
        hi_dfs = lo_dfs + idx.dfs_subtree[lo_dfs]
        lo = np.searchsorted(levels.dfs_nodes, lo_dfs)
        cnt = np.searchsorted(levels.dfs_nodes, hi_dfs) - lo
        total = int(cnt.sum())
        if total:
            ends = np.cumsum(cnt)
            pos = np.repeat(lo - (ends - cnt), cnt) + np.arange(total)
            end_toks = levels.dfs_tokens[pos]
            end_won = np.repeat(dw, cnt)
            end_off = np.repeat(dd, cnt)
    live_tok = np.concatenate(found_toks) if found_toks else np.zeros(0, dtype=np.int64)
    live_state = np.concatenate(found_state) if found_state else np.zeros(0, dtype=np.int32)
    if levels.dup_tok.size:  # tokens with the same bytes as a smaller id
        where = np.full(n, -1, dtype=np.int64)
        where[live_tok] = np.arange(live_tok.size)
        j = where[levels.dup_of]
        sel = j >= 0
        live_tok = np.concatenate([live_tok, levels.dup_tok[sel]])
        live_state = np.concatenate([live_state, live_state[j[sel]]])
        where[:] = -1
        where[end_toks] = np.arange(end_toks.size)
        j = where[levels.dup_of]
        sel = j >= 0
        end_toks = np.concatenate([end_toks, levels.dup_tok[sel]])
        end_won = np.concatenate([end_won, end_won[j[sel]]])
        end_off = np.concatenate([end_off, end_off[j[sel]]])
    out.live(live_tok, live_state)
    out.ended(end_toks, end_won, end_off)
    if levels.long_toks.size and len(live_nodes) == DEEP and live_nodes[-1].size:
        last, last_states = live_nodes[-1], live_states[-1]  # ascending level-order positions
        at = np.minimum(np.searchsorted(last, levels.long_anc), last.size - 1)
        hit = np.nonzero(last[at] == levels.long_anc)[0]
        by_state: dict[int, list[int]] = {}
        for i, tok_id in zip(hit.tolist(), levels.long_toks[hit].tolist()):
            by_state.setdefault(int(last_states[at[i]]), []).append(tok_id)
        for st, toks in by_state.items():
            step_tokens(lexer, tokens, toks, st, DEEP, out)
