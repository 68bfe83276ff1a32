"""The memoised mask store over the token index (:mod:`decodekit.grammars.trie`).

:class:`MaskStore` computes masks for one grammar and memoises them at three levels:

1. per lexer state ``P`` (independent of the parser): the lexer state after each token, or,
   for a token that ends the current lexeme, the offset where the next lexeme starts and the
   terminal the ended lexeme is (grouped by terminal);
2. per (group, next lexer start state): the same walk for the rest of those tokens;
3. per (parser stack, lexer state): the finished boolean mask.

Only the third level depends on the parser stack, and building it on a miss costs a few memo
lookups and numpy gathers per group of boundary-crossing tokens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from decodekit.grammars.lexer import LexerTables
from decodekit.grammars.parser import StackStore, StackTooShallow
from decodekit.grammars.trie import TokenIndex, distinct

__all__ = ["MaskStore", "TokenIndex"]

#: stack depths tried, shortest first, before computing a mask on the whole stack
TRUNCATE = (6,)


@dataclass
class _Walk:
    """Per lexer state: lexer state after each token (``0`` when the lexeme ended or died)
    and the tokens that end the lexeme, grouped by the terminal they end it with."""

    within: np.ndarray
    by_liveset: dict[int, np.ndarray]  # live-terminal set id -> tokens ending with it
    groups: list[tuple[int, int]]  # (terminal, group id)
    first: np.ndarray | None  # tokens whose first byte ends the (accepting) lexeme


@dataclass
class _Split:
    """A group's remaining bytes run from a new lexeme's start state."""

    inside: np.ndarray  # token ids of entries still inside that lexeme at their end
    by_liveset: dict[int, np.ndarray]  # live-terminal set id -> those token ids
    subs: list[tuple[int, int]]


class MaskStore:
    """Memoised token masks for one grammar and one vocabulary (see the module docstring)."""

    def __init__(self, lexer: LexerTables, stacks: StackStore, index: TokenIndex,
                 eos_token_ids: tuple[int, ...], *, memory_mb: int = 48) -> None:
        self.lexer = lexer
        self.stacks = stacks
        self.index = index
        self.eos = np.array(eos_token_ids, dtype=np.int64)
        self.n_tokens = index.num_tokens
        self.trans_flat = lexer.trans.reshape(-1)
        self.liveset = lexer.liveset
        self.winner = lexer.winner
        self.ignored = lexer.ignored
        # finished masks: the most recent as bool arrays, more as packed bits (8x smaller)
        self.max_masks = max(64, (memory_mb << 20) // max(1, index.num_tokens))
        self.max_packed = max(1024, (memory_mb << 20) // max(1, index.num_tokens // 8))
        self.n_states = lexer.num_states
        self._lv_byte = index.lv_byte.astype(np.int32)
        self._lv_depth = np.repeat(np.arange(len(index.lv_offsets) - 1, dtype=np.int32),
                                   np.diff(index.lv_offsets))
        self._walks: dict[int, _Walk] = {}
        self._groups: list[tuple[np.ndarray, np.ndarray]] = []
        self._group_ids: dict[tuple[int, int, int], int] = {}
        self._splits: dict[tuple[int, int], _Split] = {}
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._packed: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ok_by_viable: dict[frozenset[int], np.ndarray] = {}
        self._full_viable: dict[int, bool] = {}
        self._shallow: set[int] = set()
        self.lock = threading.RLock()
        self.misses = 0

    # -- level 1: walks of the whole vocabulary from a lexer state --------------------------

    def walk(self, state: int) -> _Walk:
        """The memoised walk of every token from lexer state ``state``."""
        hit = self._walks.get(state)
        if hit is not None:
            return hit
        idx = self.index
        m = int(idx.lv_offsets[-1])
        st = np.zeros(m, dtype=np.int32)
        st[0] = state
        trans = self.trans_flat
        bytes32 = self._lv_byte
        # breadth-first over live nodes only: the subtree of a dead node is never visited
        frontier = np.zeros(1, dtype=np.int64)
        dead = []
        while frontier.size:
            counts = idx.lv_child_count[frontier]
            total = int(counts.sum())
            if not total:
                break
            ends = np.cumsum(counts)
            kids = np.repeat(idx.lv_child_start[frontier] - (ends - counts), counts) + np.arange(total)
            ns = trans[np.repeat(st[frontier], counts) * 256 + bytes32[kids]]
            st[kids] = ns
            alive = ns != 0
            dead.append(kids[~alive])
            frontier = kids[alive]
        tok = idx.tok_lv
        fin = st[tok]
        fin[idx.length == 0] = 0
        # a token below (or at) a dead node ends its lexeme at that node's parent: find the
        # dead node through the depth-first ranges of dead subtrees (they are disjoint)
        end = tok.astype(np.int64)
        dead_lv = np.concatenate(dead) if dead else np.zeros(0, dtype=np.int64)
        if dead_lv.size:
            first_dfs = idx.lv_dfs[dead_lv].astype(np.int64)
            last_dfs = first_dfs + idx.dfs_subtree[first_dfs]
            ids = np.arange(1, dead_lv.size + 1, dtype=np.float64)
            marks = np.bincount(first_dfs, weights=ids, minlength=m + 1) - \
                np.bincount(last_dfs, weights=ids, minlength=m + 1)
            owner = np.cumsum(marks)[np.maximum(idx.tok_node, 0)].astype(np.int64)
            below = (owner > 0) & (idx.length > 0)
            end[below] = idx.lv_parent[dead_lv[owner[below] - 1]]
        won = self.winner[st[end]]
        offs_all = self._lv_depth[end]
        crossing = (fin == 0) & (won >= 0) & (idx.length > 0)
        first = None
        if self.winner[state] >= 0:
            # tokens whose first byte ends the lexeme: they start a new one, whose mask
            # (at the stack after this lexeme) is computed and memoised on its own
            first = crossing & (offs_all == 0)
            crossing &= offs_all != 0
        groups = []
        toks = np.nonzero(crossing)[0].astype(np.int32)
        if toks.size:
            terms = won[toks]
            offs = offs_all[toks]
            for t in distinct(terms):
                sel = terms == t
                groups.append((int(t), self._new_group(state, -1, int(t), toks[sel], offs[sel])))
        live_ids = self.liveset[fin]
        by_liveset = {int(ls): live_ids == ls for ls in distinct(live_ids[fin != 0])}
        walk = _Walk(fin != 0, by_liveset, groups, first)
        self._walks[state] = walk
        return walk

    def _new_group(self, a: int, b: int, term: int, toks: np.ndarray, offs: np.ndarray) -> int:
        key = (a, b, term)
        gid = self._group_ids.get(key)
        if gid is None:
            gid = self._group_ids[key] = len(self._groups)
            self._groups.append((toks, offs))
        return gid

    def export_walks(self) -> dict[str, object]:
        """The level-1 memo (walks and their groups) in a compact picklable form."""
        n = self.n_tokens

        def pack(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.packbits(a)
        walks = {state: (pack(w.within), {ls: pack(m) for ls, m in w.by_liveset.items()}, w.groups,
                         pack(w.first)) for state, w in self._walks.items()}
        return {"n": n, "walks": walks, "groups": self._groups, "group_ids": self._group_ids}

    def import_walks(self, data: dict[str, object]) -> bool:
        """Load a memo saved by :meth:`export_walks` (before any other use of the store)."""
        n = self.n_tokens
        if data.get("n") != n or self._walks or self._groups:
            return False

        def unpack(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.unpackbits(a, count=n).astype(bool)
        self._groups = list(data["groups"])  # type: ignore[call-overload]
        self._group_ids = dict(data["group_ids"])  # type: ignore[call-overload]
        for state, (within, by_ls, groups, first) in data["walks"].items():  # type: ignore[attr-defined]
            self._walks[state] = _Walk(unpack(within), {ls: unpack(m) for ls, m in by_ls.items()},
                                       groups, unpack(first))
        return True

    # -- level 2: the rest of boundary-crossing tokens from a new lexeme ---------------------

    def split(self, gid: int, start: int) -> _Split:
        """Run group ``gid``'s remaining bytes from lexer start state ``start``.

        Returns the lexer state after each entry (``0``: ended or died), the tokens that end
        inside this lexeme, and the sub-groups of entries that end it too, by terminal.
        """
        key = (gid, start)
        hit = self._splits.get(key)
        if hit is not None:
            return hit
        toks, offs = self._groups[gid]
        idx = self.index
        length = idx.length[toks]
        base = idx.start[toks]
        cur = np.full(toks.shape[0], start, dtype=np.int32)
        pos = offs.astype(np.int64)
        dpos = np.zeros(toks.shape[0], dtype=np.int32)
        dstate = np.zeros(toks.shape[0], dtype=np.int32)
        active = np.nonzero(pos < length)[0]
        trans = self.trans_flat
        while active.size:
            byte = idx.buf[base[active] + pos[active]]
            ps = cur[active]
            ns = trans[ps * 256 + byte]
            died = ns == 0
            if died.any():
                gone = active[died]
                dpos[gone] = pos[gone]
                dstate[gone] = ps[died]
            cur[active] = ns
            pos[active] += 1
            active = active[~died]
            active = active[pos[active] < length[active]]
        won = self.winner[dstate]
        crossing = np.nonzero((cur == 0) & (won >= 0))[0]
        subs = []
        if crossing.size:
            terms = won[crossing]
            for t in distinct(terms):
                sel = crossing[terms == t]
                subs.append((int(t), self._new_group(gid, start, int(t), toks[sel], dpos[sel])))
        live_ids = self.liveset[cur]
        by_liveset = {int(ls): toks[live_ids == ls] for ls in distinct(live_ids[cur != 0])}
        result = _Split(toks[cur != 0], by_liveset, subs)
        self._splits[key] = result
        return result

    # -- level 3: masks per (stack, lexer state) ---------------------------------------------

    def viable_ok(self, sid: int) -> np.ndarray | None:
        """``bool [livesets]``: live-terminal sets that meet the viable terminals of stack
        ``sid``; ``None`` when every terminal of its context is viable (no filtering)."""
        full = self._full_viable.get(sid)
        stacks, lexer = self.stacks, self.lexer
        viable = stacks.viable(sid)
        if full is None:
            ctx = lexer.contexts[int(lexer.state_context[stacks.state[sid]])]
            full = self._full_viable[sid] = viable.issuperset(ctx)
        if full:
            return None
        ok = self._ok_by_viable.get(viable)
        if ok is None:
            ok = np.array([bool(s & viable) for s in lexer.livesets], dtype=bool)
            self._ok_by_viable[viable] = ok
        return ok

    def complete(self, sid: int, state: int) -> bool:
        """Whether the text may end here (EOS allowed)."""
        stacks = self.stacks
        if self.lexer.is_start[state]:
            return stacks.accepts_end(sid)
        won = int(self.winner[state])
        if won < 0:
            return False
        if self.ignored[won]:
            return stacks.accepts_end(sid)
        nxt = stacks.feed(sid, won)
        return nxt >= 0 and stacks.accepts_end(nxt)

    def mask(self, sid: int, state: int) -> np.ndarray:
        """``bool [vocabulary]``: tokens allowed after stack ``sid`` and lexer state ``state``
        (EOS ids when complete). The array is shared and read-only."""
        key = sid * self.n_states + state
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        with self.lock:
            mask = self._lookup(key)
            if mask is None:
                mask = self._shared(sid, state)
                self._store(key, mask)
        return mask

    def _lookup(self, key: int) -> np.ndarray | None:
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        packed = self._packed.get(key)
        if packed is None:
            return None
        mask = np.unpackbits(packed, count=self.n_tokens).astype(bool)
        mask.flags.writeable = False
        self._masks[key] = mask
        if len(self._masks) > self.max_masks:
            self._masks.popitem(last=False)
        return mask

    def _store(self, key: int, mask: np.ndarray) -> None:
        self._masks[key] = mask
        if len(self._masks) > self.max_masks:
            self._masks.popitem(last=False)
        self._packed[key] = np.packbits(mask)
        if len(self._packed) > self.max_packed:
            self._packed.popitem(last=False)

    def _shared(self, sid: int, state: int) -> np.ndarray:
        """The mask, computed on the shortest top part of the stack it depends on, so that
        other stacks with the same top part share it."""
        stacks = self.stacks
        depth = stacks.depth[sid]
        for keep in TRUNCATE:
            if depth <= keep:
                break
            top = stacks.truncate(sid, keep)
            key = top * self.n_states + state
            hit = self._lookup(key)
            if hit is not None:
                return hit
            if key in self._shallow:
                continue
            try:
                mask = self._compute(top, state)
            except StackTooShallow:
                self._shallow.add(key)
                continue
            self._store(key, mask)
            return mask
        return self._compute(sid, state)

    def _compute(self, sid: int, state: int) -> np.ndarray:
        self.misses += 1
        walk = self.walk(state)
        ok = self.viable_ok(sid)
        if ok is None or all(ok[ls] for ls in walk.by_liveset):
            mask = walk.within.copy()
        else:
            mask = np.zeros(self.n_tokens, dtype=bool)
            for ls, toks in walk.by_liveset.items():
                if ok[ls]:
                    mask |= toks
        if walk.first is not None:
            term = int(self.winner[state])
            nxt = sid if self.ignored[term] else self.stacks.feed(sid, term)
            if nxt >= 0:
                after = self.mask(nxt, self.lexer.start_for(self.stacks.state[nxt]))
                mask |= after & walk.first
        self._cross(sid, walk.groups, mask)
        if self.eos.size:
            mask[self.eos] = self.complete(sid, state)
        mask.flags.writeable = False
        return mask

    def _cross(self, sid: int, groups: list[tuple[int, int]], mask: np.ndarray) -> None:
        stacks, lexer = self.stacks, self.lexer
        for term, gid in groups:
            nxt = sid if self.ignored[term] else stacks.feed(sid, term)
            if nxt < 0:
                continue
            split = self.split(gid, lexer.start_for(stacks.state[nxt]))
            ok = self.viable_ok(nxt)
            if ok is None or all(ok[ls] for ls in split.by_liveset):
                mask[split.inside] = True
            else:
                for ls, toks in split.by_liveset.items():
                    if ok[ls]:
                        mask[toks] = True
            if split.subs:
                self._cross(nxt, split.subs, mask)
