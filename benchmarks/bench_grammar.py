"""Grammar engine benchmark: time per mask and compile time, beside llguidance and xgrammar.

Walks real JSON documents token by token with the default model's tokenizer (49,152 tokens):
at every position the engine computes the mask of allowed next tokens (timed), the document's
token is checked to be allowed, and the engine advances; at the end the engine must accept EOS.
The documents are the valid instances of the JSON Schema benchmark in ``../shared`` when it is
present (serialised as its protocol says), else a built-in set. Each engine walks the same
tokens. Compile times are measured in fresh processes: cold (empty cache directory) and warm
(the cache directory filled by the cold run); the tokenizer is loaded before the clock starts.

With ``--schemas N`` it also compiles N schemas of that benchmark (when decodekit's JSON Schema
converter is installed) and walks their valid instances.

Usage::

    python benchmarks/bench_grammar.py                     # JSON grammar, 400 schema files' documents
    python benchmarks/bench_grammar.py --docs 100 --schemas 100 --markdown
    python benchmarks/bench_grammar.py --schemas 60 --schemas-only   # JSON Schemas alone
    python benchmarks/bench_grammar.py --e2e 6 --e2e-only --e2e-tokens 32 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MASKBENCH = REPO.parent / "shared" / "jsonschemabench" / "maskbench"
FALLBACK_DOCS = [
    {"name": "decodekit", "version": 1, "tags": ["a", "b"], "ok": True, "none": None},
    {"id": 12, "items": [{"sku": "A-1", "qty": 3, "price": 9.99}, {"sku": "B-2", "qty": 1, "price": 0.5}]},
    {"user": {"name": "Zoë", "email": "zoe@example.com", "roles": ["admin"], "age": 31}},
    [1, -2.5e3, 0.25, {"nested": {"deep": [[], {}]}}, "esc\"aped \\ é", False],
]


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from decodekit.default_model import ensure_converted

    return AutoTokenizer.from_pretrained(ensure_converted())


def schema_files(n: int) -> list[Path]:
    files = sorted(glob.glob(str(MASKBENCH / "*.json")))
    random.Random(0).shuffle(files)
    return [Path(f) for f in files[:n]]


def documents(n_files: int) -> tuple[list[str], str]:
    docs = []
    for path in schema_files(n_files):
        data = json.loads(path.read_text())
        docs += [json.dumps(t["data"], indent=None, ensure_ascii=False)
                 for t in data.get("tests", []) if t.get("valid")]
    if docs:
        return docs, f"valid instances of {n_files} JSON Schema benchmark files"
    return [json.dumps(d, ensure_ascii=False) for d in FALLBACK_DOCS], "built-in documents"


# -- engines: compile(grammar) -> factory of matchers with mask/allowed/accept/done -----------


class Decodekit:
    name = "decodekit (lark)"

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def compile(self, grammar: Any) -> Any:
        from decodekit.grammars import compile

        g = compile(grammar, self.tok)
        return g.matcher

    @staticmethod
    def mask(m: Any) -> Any:
        return m.mask()

    @staticmethod
    def allowed(mask: Any, tok: int) -> bool:
        return bool(mask[tok])

    @staticmethod
    def accept(m: Any, tok: int) -> bool:
        return m.accept(tok)

    @staticmethod
    def complete(m: Any) -> bool:
        return m.is_complete()


class LLGuidance:
    name = "llguidance"

    def __init__(self, tok: Any) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.ll, self.np = llguidance, llguidance.numpy
        self.lltok = llguidance.hf.from_tokenizer(tok)
        self.bitmask = self.np.allocate_token_bitmask(1, self.lltok.vocab_size)

    def compile(self, grammar: Any) -> Any:
        if isinstance(grammar, dict):
            spec = self.ll.LLMatcher.grammar_from_json_schema(grammar)
        else:
            spec = self.ll.LLMatcher.grammar_from_lark(grammar)
        first = self.ll.LLMatcher(self.lltok, spec)
        if first.is_error():
            raise ValueError(first.get_error())
        return lambda: self.ll.LLMatcher(self.lltok, spec)

    def mask(self, m: Any) -> Any:
        self.np.fill_next_token_bitmask(m, self.bitmask, 0)
        return self.bitmask

    @staticmethod
    def allowed(mask: Any, tok: int) -> bool:
        return bool((int(mask[0, tok // 32]) >> (tok % 32)) & 1)

    @staticmethod
    def accept(m: Any, tok: int) -> bool:
        return bool(m.consume_token(tok))

    @staticmethod
    def complete(m: Any) -> bool:
        return bool(m.is_accepting())


class XGrammar:
    name = "xgrammar"

    def __init__(self, tok: Any) -> None:
        import xgrammar

        self.xgr = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        self.compiler = xgrammar.GrammarCompiler(self.info, cache_enabled=False)
        self.bitmask = xgrammar.allocate_token_bitmask(1, self.info.vocab_size)

    def compile(self, grammar: Any) -> Any:
        if grammar == "json":
            compiled = self.compiler.compile_builtin_json_grammar()
        else:
            compiled = self.compiler.compile_json_schema(json.dumps(grammar), any_whitespace=False,
                                                         separators=(", ", ": "), strict_mode=False)
        return lambda: self.xgr.GrammarMatcher(compiled)

    def mask(self, m: Any) -> Any:
        m.fill_next_token_bitmask(self.bitmask)
        return self.bitmask

    @staticmethod
    def allowed(mask: Any, tok: int) -> bool:
        return bool((int(mask[0, tok // 32]) >> (tok % 32)) & 1)

    @staticmethod
    def accept(m: Any, tok: int) -> bool:
        return bool(m.accept_token(tok))

    @staticmethod
    def complete(m: Any) -> bool:
        return bool(m.is_completed()) if hasattr(m, "is_completed") else True


def walk(engine: Any, new_matcher: Any, docs_ids: list[list[int]], times: list[float]) -> tuple[int, int]:
    """Walk documents; append mask times; returns (documents fully accepted, rejected)."""
    clock = time.perf_counter
    ok = bad = 0
    for ids in docs_ids:
        m = new_matcher()
        good = True
        for tok in ids:
            t0 = clock()
            mask = engine.mask(m)
            times.append(clock() - t0)
            if not engine.allowed(mask, tok) or not engine.accept(m, tok):
                good = False
                break
        if good:
            t0 = clock()
            engine.mask(m)
            times.append(clock() - t0)
            good = engine.complete(m)
        ok += good
        bad += not good
    return ok, bad


def stats_us(times: list[float]) -> dict[str, float]:
    a = np.array(times) * 1e6
    return {"masks": len(a), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


# -- compile time in fresh processes ------------------------------------------------------------

_COMPILE_SNIPPET = """
import sys, time
sys.path.insert(0, {repo!r})
from transformers import AutoTokenizer
from decodekit.default_model import ensure_converted
tok = AutoTokenizer.from_pretrained(ensure_converted(verbose=False))
t0 = time.perf_counter()
import decodekit.grammars.compiled, decodekit.grammars.reference
from decodekit.grammars import compile
t1 = time.perf_counter()
g = compile({grammar!r}, tok)
t2 = time.perf_counter()
g.matcher().mask()
t3 = time.perf_counter()
print(t2 - t1, t3 - t1, t1 - t0)
"""


def _empty_cache(folder: str) -> str:
    """Make ``folder`` a decodekit cache root with an empty grammar cache: the converted default
    model is shared through a link. Returns ``folder``."""
    from decodekit.default_model import cache_root

    os.symlink(cache_root() / "models", Path(folder) / "models")
    return folder


def compile_times(runs: int, grammar: str = "json") -> dict[str, list[float]]:
    """Cold and warm compile of library ``grammar`` in fresh processes: ``compile()`` alone, to
    the first mask, and the import of decodekit's grammar modules (before the clock)."""
    out: dict[str, list[float]] = {}
    env = dict(os.environ)
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            env["DECODEKIT_CACHE_DIR"] = _empty_cache(cache)
            for kind in ("cold", "warm"):
                proc = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET.format(repo=str(REPO), grammar=grammar)],
                                      env=env, capture_output=True, text=True, check=True)
                compile_s, first_mask_s, import_s = (float(x) for x in proc.stdout.split()[-3:])
                out.setdefault(f"{kind}: compile()", []).append(compile_s)
                out.setdefault(f"{kind}: compile() + first mask", []).append(first_mask_s)
                out.setdefault(f"{kind}: module imports (before the clock)", []).append(import_s)
    return out


# -- main ------------------------------------------------------------------------------------------


def engines(tok: Any) -> list[Any]:
    found: list[Any] = [Decodekit(tok)]
    for cls in (LLGuidance, XGrammar):
        try:
            found.append(cls(tok))
        except ImportError as exc:
            print(f"# {cls.name} not installed ({exc}); pip install {cls.name}", file=sys.stderr)
    return found


def run_json(tok: Any, n_files: int) -> list[dict[str, Any]]:
    docs, source = documents(n_files)
    docs_ids = [tok.encode(d, add_special_tokens=False) for d in docs]
    print(f"# JSON grammar: {len(docs)} documents ({source}), {sum(map(len, docs_ids))} tokens")
    grammar_text = (REPO / "grammars" / "json.lark").read_text()
    rows = []
    for engine in engines(tok):
        grammar = grammar_text if isinstance(engine, LLGuidance) else "json"
        t0 = time.perf_counter()
        new_matcher = engine.compile(grammar)
        compile_s = time.perf_counter() - t0
        times: list[float] = []
        ok, bad = walk(engine, new_matcher, docs_ids, times)
        rows.append({"engine": engine.name, "compile_ms": compile_s * 1e3, "accepted": ok, "rejected": bad,
                     **stats_us(times)})
        if isinstance(engine, Decodekit):  # the same documents again, with every memo warm
            again: list[float] = []
            walk(engine, new_matcher, docs_ids, again)
            rows.append({"engine": engine.name + ", 2nd pass", "accepted": ok, "rejected": bad,
                         **stats_us(again)})
    return rows


def run_schemas(tok: Any, n_files: int) -> list[dict[str, Any]]:
    try:
        import decodekit.grammars.jsonschema  # noqa: F401
    except ImportError:
        print("# JSON Schema converter not installed: schema benchmark skipped", file=sys.stderr)
        return []
    cases = []
    for path in schema_files(n_files):
        data = json.loads(path.read_text())
        valid = [json.dumps(t["data"], indent=None, ensure_ascii=False)
                 for t in data.get("tests", []) if t.get("valid")]
        if valid:
            cases.append((data["schema"], [tok.encode(v, add_special_tokens=False) for v in valid]))
    rows = []
    with tempfile.TemporaryDirectory() as cache, _grammar_cache(cache, tok):
        for engine in engines(tok):
            row = _schema_row(engine, cases)
            if row:
                rows.append({"schemas": len(cases), **row})
    return rows


@contextlib.contextmanager
def _grammar_cache(folder: str, tok: Any) -> Iterator[None]:
    """Compile into an empty grammar cache ``folder`` (so every schema compiles cold, walks
    included), with ``tok``'s token index built there first, outside any clock."""
    from decodekit.default_model import CACHE_ENV
    from decodekit.grammars import compile

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = _empty_cache(folder)
    try:
        compile('start: "a"', tok)
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _schema_row(engine: Any, cases: list[tuple[Any, list[list[int]]]]) -> dict[str, Any] | None:
    """Compile every schema of ``cases`` with ``engine`` and walk its valid instances."""
    compiles, times = [], []
    compiled = ok = bad = 0
    for schema, docs_ids in cases:
        t0 = time.perf_counter()
        try:
            new_matcher = engine.compile(schema)
            engine.mask(new_matcher())
        except Exception:
            continue
        compiles.append(time.perf_counter() - t0)
        compiled += 1
        a, b = walk(engine, new_matcher, docs_ids, times)
        ok, bad = ok + a, bad + b
    if not times:
        return None
    return {"engine": engine.name, "compiled": compiled, "compile_p50_ms": statistics.median(compiles) * 1e3,
            "accepted": ok, "rejected": bad, **stats_us(times)}


E2E_PROMPT = "Describe a cat as a JSON object with the keys name, age and colors."
#: the schema of the end-to-end run (its keys are forced text, which jump-forward skips)
E2E_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "colors": {"type": "array", "items": {"enum": ["black", "white", "orange", "grey"]},
                   "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "colors"],
    "additionalProperties": False,
}


def run_e2e(repeats: int, max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """Tokens per second of greedy decoding on the default model, unconstrained and with
    grammars, all to the same number of tokens (EOS does not stop a row).

    The configurations run in turn, ``repeats`` rounds after one warm-up round (compile,
    caches), so that a change of machine load affects all of them alike; each row reports
    the best run and the median of its per-round ratios to the unconstrained run.
    """
    import decodekit

    model = decodekit.load("default")
    configs: list[tuple[str, Any]] = [
        ("unconstrained", None),
        ("grammar=json", {"grammar": "json"}),
        ("grammar=json, no jump-forward", {"grammar": "json", "jump_forward": False}),
        ("grammar=schema", {"grammar": E2E_SCHEMA}),
        ("grammar=schema, no jump-forward", {"grammar": E2E_SCHEMA, "jump_forward": False}),
    ]
    runs: dict[str, list[Any]] = {label: [] for label, _ in configs}
    for round_ in range(repeats + 1):
        for label, grammar in configs:
            procs: list[Any] = [("stop", {"eos": False})]
            if grammar is not None:
                procs.append(("grammar", grammar))
            gen = decodekit.generate(E2E_PROMPT, model=model, chat=True, max_new_tokens=max_new_tokens,
                                     processors=procs)
            if round_:
                runs[label].append(gen.stats)
    rows = []
    base = runs["unconstrained"]
    for label, _ in configs:
        stats = runs[label]
        best = max(stats, key=lambda s: s.tokens_per_second)
        ratios = [s.tokens_per_second / b.tokens_per_second for s, b in zip(stats, base)]
        rows.append({"run": label, "new_tokens": best.new_tokens, "forward_passes": best.forward_passes,
                     "seconds": best.seconds, "tokens_per_s": best.tokens_per_second,
                     "ratio_best": f"{best.tokens_per_second / max(s.tokens_per_second for s in base):.3f}",
                     "ratio_median": f"{statistics.median(ratios):.3f}"})
    return rows


E2E_COLUMNS = ["run", "new_tokens", "forward_passes", "seconds", "tokens_per_s", "ratio_best", "ratio_median"]


def table(rows: list[dict[str, Any]], columns: list[str], markdown: bool) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)
    lines = [[c for c in columns]] + [[fmt(r.get(c, "")) for c in columns] for r in rows]
    if markdown:
        out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
        return "\n".join(out)
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=400, help="schema files whose valid instances are walked")
    parser.add_argument("--schemas", type=int, default=0, help="schemas to compile and walk (0: none)")
    parser.add_argument("--compile-runs", type=int, default=3, help="fresh-process compile measurements")
    parser.add_argument("--compile-grammar", default="json",
                        help="library grammar of the fresh-process compile measurements (default: json)")
    parser.add_argument("--e2e", type=int, default=0, metavar="N",
                        help="also time N greedy generations on the default model, with and without grammar")
    parser.add_argument("--e2e-only", action="store_true", help="run only the --e2e measurement")
    parser.add_argument("--e2e-tokens", type=int, default=64, help="new tokens of each --e2e generation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for --e2e (0: torch's default)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--schemas-only", action="store_true",
                        help="run only the --schemas measurement (no JSON grammar walk, no compile runs)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.e2e_only:
        print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"\nEnd to end, default model, greedy, {args.e2e_tokens} tokens, {max(args.e2e, 1)} rounds:")
        print(table(run_e2e(max(args.e2e, 1), args.e2e_tokens), E2E_COLUMNS, args.markdown))
        return
    tok = load_tokenizer()
    print(f"# tokenizer: {len(tok)} tokens; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.schemas_only and args.docs > 0:
        rows = run_json(tok, args.docs)
        print("\nTime per mask (microseconds) and compile in this process (ms), JSON grammar:")
        print(table(rows, ["engine", "masks", "mean", "p50", "p99", "max", "compile_ms", "accepted", "rejected"],
                    args.markdown))
    if args.compile_runs and not args.schemas_only:
        times = compile_times(args.compile_runs, args.compile_grammar)
        print(f"\ndecodekit {args.compile_grammar!r} grammar compile, fresh process, {args.compile_runs} runs "
              "(ms, median [min, max]):")
        for kind, values in sorted(times.items()):
            ms = [v * 1e3 for v in values]
            print(f"  {kind}: {statistics.median(ms):.1f} [{min(ms):.1f}, {max(ms):.1f}]")
    if args.e2e and not args.schemas_only:
        print("\nEnd to end, default model, greedy, 'json' grammar vs unconstrained:")
        print(table(run_e2e(args.e2e, args.e2e_tokens), E2E_COLUMNS, args.markdown))
    if args.schemas:
        srows = run_schemas(tok, args.schemas)
        if srows:
            print(f"\nJSON Schemas ({args.schemas} files), time per mask (microseconds):")
            print(table(srows, ["engine", "schemas", "compiled", "compile_p50_ms", "masks", "mean", "p50",
                                "p99", "max", "accepted", "rejected"], args.markdown))


if __name__ == "__main__":
    main()
