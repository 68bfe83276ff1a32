"""The ``grammar`` processor: constrain output to a grammar, with any strategy.

Each row keeps a :class:`decodekit.grammars.Matcher`; rows forked or reordered by a strategy
fork their matchers (through :meth:`LogitsProcessor.fork_state`), so the constraint follows
beams, candidates and look-aheads. Every set of logits a strategy examines gets the tokens the
grammar forbids set to ``-inf``; end-of-sequence tokens are allowed only when the text is a
complete sentence of the grammar.

After a strategy finishes, the decode loop calls :meth:`Grammar.is_complete` on every returned
sequence: a text cut by ``max_new_tokens`` or a stop string mid-structure is reported with
``complete = False`` and the finish reason ``"incomplete"``. With ``jump_forward`` the processor
offers the tokens the grammar forces (:meth:`Grammar.forced_tokens`) to strategies that can feed
several tokens in one forward pass (greedy); ``jump_forward_check`` says whether such a strategy
keeps only the forced tokens it would have chosen itself.

This plugin also registers the builtin ``lark`` grammar engine and the ``decodekit grammars``
command, which lists the grammar library.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from pydantic import Field

from decodekit.generation import INVALID
from decodekit.hookspecs import hookimpl
from decodekit.options import Options
from decodekit.processor import LogitsProcessor, ProcessorContext
from decodekit.rows import Rows


class GrammarOptions(Options):
    """Options of the ``grammar`` processor."""

    grammar: Any = Field(..., description="lark text, a builtin grammar name (json, sql, arithmetic, "
                                          "csv, sexpr), a .lark file, a JSON Schema (dict or JSON "
                                          "text), a pydantic model class, or a compiled grammar")
    engine: str = Field("lark", description="grammar engine that compiles it")
    start: str = Field("start", description="start rule of a lark grammar")
    schema_options: dict[str, Any] = Field(default_factory=dict,
                                           description="options of the JSON Schema converter")
    jump_forward: bool = Field(True, description="offer the tokens the grammar forces to strategies "
                                                 "that can emit several tokens per forward pass "
                                                 "(greedy); others ignore it")
    jump_forward_check: bool = Field(
        True, description="True: a strategy keeps a forced token only where it would have chosen "
                          "it itself (greedy's output is unchanged, only forward passes are "
                          "saved); False: forced tokens are emitted as the grammar splits them, "
                          "which can tokenize the forced text differently and so change what follows")


class Grammar(LogitsProcessor):
    """Masks every token the grammar does not allow next (see the module docstring)."""

    name = "grammar"
    Options = GrammarOptions
    description = "constrain output to a grammar (lark, builtin, JSON Schema)"

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        opts: GrammarOptions = self.options  # type: ignore[assignment]
        self.compiled = compile_for(opts, ctx.tokenizer, ctx.eos_token_ids)
        size = int(getattr(self.compiled, "vocab_size", ctx.vocab_size))
        if size > ctx.vocab_size:
            from decodekit.grammars.errors import VocabularyMismatchError

            raise VocabularyMismatchError(
                f"processor 'grammar': the grammar's vocabulary has {size} tokens but the model's "
                f"logits have {ctx.vocab_size}; compile the grammar with the model's tokenizer")
        self.size = size
        self._blocked: dict[int, tuple[Any, torch.Tensor, bool]] = {}
        self._forced: dict[Any, list[int]] = {}
        self._eos = frozenset(getattr(self.compiled, "eos_token_ids", ctx.eos_token_ids))

    @property
    def verify_forced(self) -> bool:
        """Whether a strategy must check forced tokens against its own choice (see
        :meth:`forced_tokens`)."""
        return bool(self.options.jump_forward_check)  # type: ignore[attr-defined]

    def init_state(self, prompt_ids: list[int]) -> Any:
        return self.compiled.matcher()

    def fork_state(self, state: Any) -> Any:
        return state.fork()

    def _blocked_tensor(self, mask: Any) -> tuple[torch.Tensor, bool]:
        """``(disallowed as a bool tensor, whether anything is allowed)``, cached per mask."""
        hit = self._blocked.get(id(mask))
        if hit is not None and hit[0] is mask:
            return hit[1], hit[2]
        blocked = torch.from_numpy(~mask)
        entry = (mask, blocked, bool(mask.any()))
        if len(self._blocked) > 256:
            self._blocked.clear()
        self._blocked[id(mask)] = entry
        return blocked, entry[2]

    def process(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        states = rows.states[self.state_index]
        finished = rows.finished.tolist()
        size = self.size
        for r, matcher in enumerate(states):
            if finished[r]:
                continue
            blocked, any_allowed = self._blocked_tensor(matcher.mask())
            if not any_allowed:
                self._dead_end(rows, r, matcher)
            row = logits[r]
            row[:size].masked_fill_(blocked, float("-inf"))
            if row.shape[0] > size:
                row[size:] = float("-inf")
        return logits

    def _dead_end(self, rows: Rows, r: int, matcher: Any) -> None:
        from decodekit.grammars.errors import GrammarDeadEndError

        generated = rows.generated(r)
        text = self.ctx.tokenizer.decode(generated[-40:]) if self.ctx is not None else ""  # type: ignore[union-attr]
        raise GrammarDeadEndError(
            f"processor 'grammar': row {r} cannot continue: no token of the vocabulary is allowed "
            f"after {len(generated)} generated tokens (text so far ends with {text[-80:]!r}); the "
            "grammar needs text this vocabulary cannot spell, or has no way to end here",
            position=len(generated))

    def update(self, rows: Rows, tokens: torch.Tensor, active: torch.Tensor) -> None:
        states = rows.states[self.state_index]
        rejected = []
        for r in active.nonzero().flatten().tolist():
            token = int(tokens[r])
            if not states[r].accept(token) and not self._eos_after_end(states[r], token):
                rejected.append(r)
        if rejected:
            mask = torch.zeros(rows.num_rows, dtype=torch.bool)
            mask[rejected] = True
            rows.mark_finished(mask, INVALID)

    def forced_tokens(self, rows: Rows, row: int) -> list[int]:
        """Tokens the grammar determines next for ``row``, for jump-forward decoding.

        Empty when the ``jump_forward`` option is off, the row finished, or the grammar leaves
        a choice. The forced text is split into the vocabulary's longest matching tokens (see
        :meth:`decodekit.grammars.Matcher.forced_tokens`), which need not be how the model
        would tokenize it; :attr:`verify_forced` says whether a strategy must keep only the
        forced tokens it would have chosen itself. Does not mutate row state.
        """
        if not self.options.jump_forward or bool(rows.finished[row]):  # type: ignore[attr-defined]
            return []
        matcher = rows.states[self.state_index][row]
        key = _state_key(matcher)
        if key is None:
            return list(matcher.forced_tokens())
        hit = self._forced.get(key)
        if hit is None:
            if len(self._forced) > 4096:
                self._forced.clear()
            hit = self._forced[key] = list(matcher.forced_tokens())
        return hit

    def _eos_after_end(self, matcher: Any, token: int) -> bool:
        """Whether ``token`` is an end-of-sequence id following an accepted one: the mask
        allows it (a row whose EOS does not stop it, e.g. ``stop`` with ``eos = false``, keeps
        receiving EOS) and it changes nothing."""
        ended = getattr(matcher, "is_terminated", None)
        return token in self._eos and callable(ended) and bool(ended())

    def is_complete(self, token_ids: list[int]) -> bool:
        """Whether ``token_ids`` (generated ids, final EOS ids allowed) form a complete sentence
        of the grammar: tells a finished structure from one cut by ``max_new_tokens`` or a stop
        string. The decode loop reports the answer as ``Sequence.complete``."""
        ids = list(token_ids)
        matcher = self.compiled.matcher()
        n = matcher.accept_tokens(ids)
        while n < len(ids) and self._eos_after_end(matcher, ids[n]):
            n += 1
        return n == len(ids) and matcher.is_complete()


def _state_key(matcher: Any) -> tuple[Any, ...] | None:
    """A hashable key of a builtin matcher's state (its interned stack and lexer state), under
    which forced tokens are memoised; ``None`` for other engines' matchers."""
    from decodekit.grammars.matcher import Matcher

    if type(matcher) is Matcher:
        return (matcher._sid, matcher._lex)
    return None


def compile_for(opts: GrammarOptions, tokenizer: Any, eos_token_ids: tuple[int, ...]) -> Any:
    """Compile the processor's grammar with its engine for a model's tokenizer."""
    if opts.engine == "lark":
        from decodekit.grammars.compiled import CompiledGrammar, compile_grammar

        if isinstance(opts.grammar, CompiledGrammar):
            opts.grammar.check_vocabulary(tokenizer)
            if set(opts.grammar.eos_token_ids) != set(eos_token_ids):
                return compile_grammar(opts.grammar.text, tokenizer, start=opts.start,
                                       eos_token_ids=tuple(eos_token_ids))
            return opts.grammar
        return compile_grammar(opts.grammar, tokenizer, start=opts.start,
                               eos_token_ids=tuple(eos_token_ids), schema_options=opts.schema_options)
    from decodekit.manager import get_plugin_system

    engine = get_plugin_system().registry.get("grammar_engine", opts.engine)
    return engine.compile(opts.grammar, tokenizer, start=opts.start, eos_token_ids=tuple(eos_token_ids),
                          schema_options=opts.schema_options)


# -- the ``decodekit grammars`` command --------------------------------------------------------


def _setup_grammars_command(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument("name", nargs="?", help="print this grammar's lark text")
    parser.add_argument("--json", action="store_true", help="print JSON")

    def run(args: argparse.Namespace) -> int:
        import json

        from decodekit.grammars import library

        if args.name:
            grammar = library.get(args.name)
            if args.json:
                print(json.dumps({"name": grammar.name, "description": grammar.description,
                                  "text": grammar.text}, indent=2))
            else:
                print(grammar.text, end="" if grammar.text.endswith("\n") else "\n")
            return 0
        rows = [{"name": g.name, "description": g.description} for g in library.library()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['description']}")
        return 0

    return run


@hookimpl
def decodekit_register_processors(register: Any) -> None:
    register(Grammar)


@hookimpl
def decodekit_register_grammar_engines(register: Any) -> None:
    from decodekit.grammars import LarkEngine

    register("lark", LarkEngine())


@hookimpl
def decodekit_register_commands(register: Any) -> None:
    register("grammars", _setup_grammars_command, "list the builtin grammars (or print one)")
