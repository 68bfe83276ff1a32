"""The vocabulary as a byte trie in flat arrays.

A :class:`TokenIndex` depends on the vocabulary only. Its trie is stored depth-first (byte,
parent, depth and subtree size per node; a node's subtree is the contiguous range after it)
and also in level order, which lets one numpy step advance every node of one depth at once:
walking the whole vocabulary from a lexer state costs about one table lookup per trie node.
"""

from __future__ import annotations

from dataclasses import dataclass

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
