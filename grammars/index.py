"""The memoised mask store over the token index (:mod:`decodekit.grammars.trie`).

:class:`MaskStore` computes masks for one grammar and memoises them at three levels:

1. per lexer state ``P`` (independent of the parser): the lexer state after each token, or,
   for a token that ends the current lexeme, the offset where the next lexeme starts and the
   terminal the ended lexeme is (grouped by terminal);
2. per (group, next lexer start state): the same walk for the rest of those tokens;
3. per (parser stack, lexer state): the finished boolean mask.

Only the third level depends on the parser stack, and building it on a miss costs a few memo
lookups and numpy gathers per group of boundary-crossing tokens.

A level-1 walk places the slice tokens (:class:`decodekit.grammars.trie.WalkParts`) by length
wherever a slice byte leads into a chain of states that every slice byte follows alike, and
walks the trie only for the other tokens; lexer states are expanded as the walk reaches them.
Walks collect only the tokens they reach (:class:`decodekit.grammars.trie.WalkResult`), so a
walk from a state few tokens continue costs little. A level-2 split runs only the entries whose
next byte the start state accepts (entries are kept sorted by that byte).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from decodekit.grammars.lexer import LexerTables
from decodekit.grammars.parser import StackStore, StackTooShallow
from decodekit.grammars.trie import (
    DEEP,
    SLICE_BYTES,
    TokenIndex,
    TrieLevels,
    WalkParts,
    WalkResult,
    distinct,
    step_tokens,
    walk_trie,
)

__all__ = ["MaskStore", "TokenIndex"]

#: stack depths tried, shortest first, before computing a mask on the whole stack
TRUNCATE = (6,)
#: memo keys are ``stack * _KEY + lexer state`` (lexer states are fewer than this)
_KEY = 1 << 20


@dataclass
class _Walk:
    """Per lexer state: lexer state after each token (``0`` when the lexeme ended or died)
    and the tokens that end the lexeme, grouped by the terminal they end it with.

    Token sets are bit-packed (``np.packbits`` of a ``bool [vocabulary]`` array; :func:`_unpack`
    restores one): a grammar may keep thousands of walks.
    """

    within: np.ndarray  # tokens that end inside the lexeme
    by_liveset: dict[int, np.ndarray]  # live-terminal set id -> tokens of within ending in a state of it
    groups: list[tuple[int, int]]  # (terminal, group id)
    first: np.ndarray | None  # tokens whose first byte ends the (accepting) lexeme


def _unpack(bits: np.ndarray, n: int) -> np.ndarray:
    """A fresh writable ``bool [n]`` array from bits packed by ``np.packbits``."""
    return np.unpackbits(bits, count=n).view(bool)


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
        self.ignored = lexer.ignored
        # finished masks: the most recent as bool arrays, more as packed bits (8x smaller)
        self.max_masks = max(64, (memory_mb << 20) // max(1, index.num_tokens))
        self.max_packed = max(1024, (memory_mb << 20) // max(1, index.num_tokens // 8))
        self.n_states = _KEY
        self._parts: WalkParts | None = None
        self._slice_memo: dict[int, int] = {}
        self._walks: dict[int, _Walk] = {}
        self._groups: list[tuple[np.ndarray, np.ndarray]] = []
        self._group_ids: dict[tuple[int, int, int], int] = {}
        self._splits: dict[tuple[int, int], _Split] = {}
        self._next_bytes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._packed: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ok_by_viable: dict[frozenset[int], np.ndarray] = {}
        self._full_viable: dict[int, bool] = {}
        self._shallow: set[int] = set()
        self.lock = threading.RLock()
        self.misses = 0

    # -- level 1: walks of the whole vocabulary from a lexer state --------------------------

    @property
    def parts(self) -> WalkParts:
        """The vocabulary's walk data (built on first use)."""
        if self._parts is None:
            self._parts = WalkParts.of(self.index)
        return self._parts

    def walk(self, state: int) -> _Walk:
        """The memoised walk of every token from lexer state ``state``."""
        hit = self._walks.get(state)
        if hit is not None:
            return hit
        live_tok, live_state, end_tok, end_won, end_off = self._walk_arrays(state)
        lexer = self.lexer
        n = self.n_tokens
        first = None
        if lexer.winner_list[state] >= 0:
            # tokens whose first byte ends the lexeme: they start a new one, whose mask
            # (at the stack after this lexeme) is computed and memoised on its own
            at_first = end_off == 0
            first_set = np.zeros(n, dtype=bool)
            first_set[end_tok[at_first]] = True
            first = np.packbits(first_set)
            later = ~at_first
            end_tok, end_won, end_off = end_tok[later], end_won[later], end_off[later]
        groups = []
        if end_tok.size:
            toks, terms, offs = end_tok.astype(np.int32), end_won, end_off
            for t in distinct(terms):
                sel = terms == t
                groups.append((int(t), self._new_group(state, -1, int(t), toks[sel], offs[sel])))
        within = np.zeros(n, dtype=bool)
        within[live_tok] = True
        live_ids = lexer.liveset[live_state]
        by_liveset = {}
        for ls in distinct(live_ids):
            m = np.zeros(n, dtype=bool)
            m[live_tok[live_ids == ls]] = True
            by_liveset[int(ls)] = np.packbits(m)
        walk = _Walk(np.packbits(within), by_liveset, groups, first)
        self._walks[state] = walk
        return walk

    def _walk_arrays(self, state: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Where every token ends from lexer state ``state``, sparsely (see
        :meth:`decodekit.grammars.trie.WalkResult.arrays`).

        A slice byte whose successor starts a chain (every further slice byte leads to one same
        state) is *fast*: the slice tokens starting with it are placed by their length alone.
        The full trie is walked only under the other (*slow*) slice bytes, and the trie of
        the tokens outside the slice under the remaining first bytes.
        """
        parts = self.parts
        out = WalkResult()
        row = self.lexer.rows[state] or self.lexer.expand(state)
        chain_of = np.full(256, -1, dtype=np.int64)
        tables: list[list[int]] = []
        fixed: list[bool] = []
        seen: dict[int, int] = {}
        for b in SLICE_BYTES:
            nxt = row[b]
            if nxt == 0:
                continue
            ci = seen.get(nxt)
            if ci is None:
                chain = self._chain(nxt)
                ci = -1
                if chain is not None:
                    ci = len(tables)
                    tables.append([nxt, *chain[0]])
                    fixed.append(chain[1])
                seen[nxt] = ci
            chain_of[b] = ci
        fast = chain_of >= 0
        if not tables:
            self._trie_walk(parts.full, state, None, out)
            return out.arrays()
        slow = np.zeros(256, dtype=bool)
        slow[list(SLICE_BYTES)] = True
        slow &= ~fast
        self._trie_walk(parts.rest, state, ~slow, out)
        if slow.any():
            self._trie_walk(parts.full, state, slow, out)
        if len(tables) == 1 and not slow.any():
            self._place_by_length(tables[0], fixed[0], out)
            return out.arrays()
        sel = fast[parts.slice_first]
        toks = parts.slice_tok[sel]
        cid = chain_of[parts.slice_first[sel]]
        table = np.zeros((len(tables), DEEP + 1), dtype=np.int32)
        for i, t in enumerate(tables):
            table[i, :len(t)] = t
        last = np.array([len(t) - 1 for t in tables], dtype=np.int64)[cid]
        pos = parts.slice_len[sel] - 1
        pos = np.where(np.array(fixed, dtype=bool)[cid], np.minimum(pos, last), pos)
        ok = pos <= last
        out.live(toks[ok], table[cid[ok], pos[ok]])
        if not ok.all():
            for i in distinct(cid[~ok]):
                longer = toks[~ok & (cid == i)].tolist()
                self._step_tokens(longer, tables[i][-1], len(tables[i]), out)
        return out.arrays()

    def _place_by_length(self, table: list[int], fixed: bool, out: WalkResult) -> None:
        """Place every slice token when each slice byte leads into one chain ``table`` (states
        after 1, 2, ... bytes; the last repeats for ever when ``fixed``)."""
        toks, bounds = self.parts.by_length
        longest = len(bounds) - 2
        placed = longest if fixed else min(longest, len(table))
        states = np.array([table[min(n, len(table)) - 1] for n in range(1, placed + 1)], dtype=np.int32)
        end = int(bounds[placed + 1]) if placed >= 0 else 0
        out.live(toks[bounds[1]:end], np.repeat(states, np.diff(bounds[1:placed + 2])))
        if end < toks.size:
            self._step_tokens(toks[end:].tolist(), table[-1], len(table), out)

    def _slice_next(self, state: int) -> int:
        """The state every slice byte leads to from ``state``, or ``-1`` if they differ."""
        hit = self._slice_memo.get(state)
        if hit is None:
            row = self.lexer.rows[state] or self.lexer.expand(state)
            hit = row[SLICE_BYTES[0]]
            for b in SLICE_BYTES:
                if row[b] != hit:
                    hit = -1
                    break
            self._slice_memo[state] = hit
        return hit

    def _chain(self, state: int) -> tuple[list[int], bool] | None:
        """States after 1, 2, ... slice bytes from ``state`` (up to :data:`DEEP`), and whether
        the last one repeats for ever; ``None`` unless every slice token of up to that length
        stays inside the lexeme."""
        states: list[int] = []
        cur = state
        for _ in range(DEEP):
            nxt = self._slice_next(cur)
            if nxt <= 0:
                return None
            if states and nxt == cur:
                return states, True
            states.append(nxt)
            cur = nxt
        return states, False

    def _step_tokens(self, toks: list[int], state: int, offset: int, out: WalkResult) -> None:
        step_tokens(self.lexer, self.parts.tokens, toks, state, offset, out)

    def _trie_walk(self, levels: TrieLevels, state: int, first: np.ndarray | None, out: WalkResult) -> None:
        walk_trie(self.lexer, levels, state, first, self.n_tokens, self.parts.tokens, out)

    def _new_group(self, a: int, b: int, term: int, toks: np.ndarray, offs: np.ndarray) -> int:
        key = (a, b, term)
        gid = self._group_ids.get(key)
        if gid is None:
            gid = self._group_ids[key] = len(self._groups)
            self._groups.append((toks, offs))
        return gid

    def split_all(self, starts: Callable[[int], Iterable[int]], budget: int) -> bool:
        """Precompute :meth:`split` for :meth:`_cross`: run every boundary-crossing group of
        the walks made so far, and the sub-groups these give in turn, from the lexer start
        states a new lexeme can start in after the group's terminal: ``starts(terminal)`` for
        a terminal the parser shifts, and for an ignored one (which leaves the parser state as
        it was) the start state the group's lexeme itself started in, when known. Stops after
        ``budget`` splits (the rest are made when first needed); returns whether all were
        made. Mutates the memo only."""
        is_start = self.lexer.is_start
        todo = [(term, gid, state if is_start[state] else 0)
                for state, walk in list(self._walks.items()) for term, gid in walk.groups]
        done: set[tuple[int, int]] = set()
        while todo:
            term, gid, origin = todo.pop()
            nexts = ([origin] if origin else []) if self.ignored[term] else starts(term)
            for start in nexts:
                if (gid, start) in done:
                    continue
                if len(done) >= budget:
                    return False
                done.add((gid, start))
                todo.extend((t, g, start) for t, g in self.split(gid, start).subs)
        return True

    def export_walks(self) -> dict[str, object]:
        """The level-1 and level-2 memos (walks, their groups, and the splits made so far) in a
        picklable form (token sets stay bit-packed)."""
        n = self.n_tokens
        walks = {state: (w.within, w.by_liveset, w.groups, w.first) for state, w in self._walks.items()}
        splits = {key: (sp.inside, sp.by_liveset, sp.subs) for key, sp in self._splits.items()}
        return {"n": n, "walks": walks, "groups": self._groups, "group_ids": self._group_ids,
                "splits": splits}

    def import_walks(self, data: dict[str, object]) -> bool:
        """Load a memo saved by :meth:`export_walks` (before any other use of the store)."""
        n = self.n_tokens
        if data.get("n") != n or self._walks or self._groups:
            return False
        self._groups = list(data["groups"])  # type: ignore[call-overload]
        self._group_ids = dict(data["group_ids"])  # type: ignore[call-overload]
        for state, (within, by_ls, groups, first) in data["walks"].items():  # type: ignore[attr-defined]
            self._walks[state] = _Walk(within, by_ls, groups, first)
        for key, (inside, by_ls, subs) in data.get("splits", {}).items():  # type: ignore[attr-defined]
            self._splits[key] = _Split(inside, by_ls, subs)
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
        lexer = self.lexer
        if lexer.winner_list[start] < 0:
            # an entry whose next byte leaves the start state ends nothing: run only the
            # entries whose next byte it accepts
            row = lexer.rows[start] or lexer.expand(start)
            order, bounds = self._by_next_byte(gid)
            ranges = [order[bounds[b]:bounds[b + 1]] for b in range(257) if b == 256 or row[b]]
            keep = np.concatenate(ranges)
            toks, offs = toks[keep], offs[keep]
        idx = self.index
        length = idx.length[toks]
        base = idx.start[toks]
        cur = np.full(toks.shape[0], start, dtype=np.int32)
        pos = offs.astype(np.int64)
        dpos = np.zeros(toks.shape[0], dtype=np.int32)
        dstate = np.zeros(toks.shape[0], dtype=np.int32)
        active = np.nonzero(pos < length)[0]
        while active.size:
            byte = idx.buf[base[active] + pos[active]]
            ps = cur[active]
            lexer.ensure(ps)
            ns = lexer.trans_flat[ps * 256 + byte]
            died = ns == 0
            if died.any():
                gone = active[died]
                dpos[gone] = pos[gone]
                dstate[gone] = ps[died]
            cur[active] = ns
            pos[active] += 1
            active = active[~died]
            active = active[pos[active] < length[active]]
        won = lexer.winner[dstate]
        crossing = np.nonzero((cur == 0) & (won >= 0))[0]
        subs = []
        if crossing.size:
            terms = won[crossing]
            for t in distinct(terms):
                sel = crossing[terms == t]
                subs.append((int(t), self._new_group(gid, start, int(t), toks[sel], dpos[sel])))
        live_ids = lexer.liveset[cur]
        by_liveset = {int(ls): toks[live_ids == ls] for ls in distinct(live_ids[cur != 0])}
        result = _Split(toks[cur != 0], by_liveset, subs)
        self._splits[key] = result
        return result

    def _by_next_byte(self, gid: int) -> tuple[np.ndarray, np.ndarray]:
        """Group ``gid``'s entries sorted by the byte at their offset (``256``: none left),
        and where each byte's run starts (``bounds[b]:bounds[b + 1]``)."""
        hit = self._next_bytes.get(gid)
        if hit is None:
            toks, offs = self._groups[gid]
            idx = self.index
            length = idx.length[toks]
            at = idx.start[toks] + np.minimum(offs, np.maximum(length - 1, 0))
            nxt = np.where(offs < length, idx.buf[at].astype(np.int64), 256)
            order = np.argsort(nxt, kind="stable")
            bounds = np.searchsorted(nxt[order], np.arange(258))
            hit = self._next_bytes[gid] = (order, bounds)
        return hit

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
        if ok is None or ok.shape[0] < len(lexer.livesets):  # new live sets appear lazily
            ok = np.array([bool(s & viable) for s in lexer.livesets], dtype=bool)
            self._ok_by_viable[viable] = ok
        return ok

    def complete(self, sid: int, state: int) -> bool:
        """Whether the text may end here (EOS allowed)."""
        stacks = self.stacks
        lexer = self.lexer
        if lexer.is_start[state]:
            return stacks.accepts_end(sid)
        won = lexer.winner_list[state]
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
            mask = _unpack(walk.within, self.n_tokens)
        else:
            mask = np.zeros(self.n_tokens, dtype=bool)
            for ls, bits in walk.by_liveset.items():
                if ok[ls]:
                    mask |= _unpack(bits, self.n_tokens)
        if walk.first is not None:
            term = self.lexer.winner_list[state]
            nxt = sid if self.ignored[term] else self.stacks.feed(sid, term)
            if nxt >= 0:
                after = self.mask(nxt, self.lexer.start_for(self.stacks.state[nxt]))
                mask |= after & _unpack(walk.first, self.n_tokens)
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
