"""JSONSchemaBench (MaskBench development set): schema compile rate and instance acceptance.

For every schema file of the development set (``<Split>---<id>.json`` holding ``schema`` and
``tests``), compile the schema, then check each test instance serialised with
``json.dumps(data, indent=None, ensure_ascii=False)``: a valid instance must be accepted (and
complete), an invalid one rejected. Prints, per split: compiled %, valid instances accepted %
(of the valid instances of compiled schemas), invalid instances rejected % and the count of
invalid instances accepted, compile time and check time per instance, and whether the targets
(compiled >= 90 %, valid accepted >= 99 %, no invalid instance accepted) are met.

Engines (``--engines``, comma-separated; by default ``tokens,llguidance``, the protocol of
``../shared/jsonschemabench/README.md`` for decodekit and llguidance in one run):

- ``tokens``: the token-level protocol with decodekit's engine
  (``decodekit.grammars.compile(schema_to_lark(schema), tokenizer).matcher()``): tokenise the
  text with the default tokenizer, check each token against ``mask()``, ``accept`` it, and
  require ``is_complete()`` at the end. Compile time is the time to the first mask.
- ``llguidance`` (when installed): the same token protocol on llguidance's own JSON Schema
  front end, separators ``", "`` and ``": "``.
- ``xgrammar`` (when installed): the same on xgrammar's JSON Schema front end, same separators.
- ``lark``: ``schema_to_lark`` and a lark LALR parser (contextual lexer) that parses each
  text: a quick check of the converter alone, without tokens.

Usage::

    python benchmarks/jsonschemabench.py [--data DIR] [--engines tokens,llguidance]
        [--split NAME] [--limit N] [--sample N] [--timeout S] [--jobs N] [--errors FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import statistics
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "jsonschemabench"
SPLITS = ("Github_trivial", "Github_easy", "Glaiveai2K", "Handwritten", "Synthesized")


class CompileTimeout(Exception):
    """A schema took longer than the time limit to compile."""


def schema_files(data: Path, split: str | None = None, sample: int | None = None,
                 seed: int = 0, limit: int | None = None) -> list[Path]:
    """The development set's files (sorted), optionally one split, a seeded sample of the
    whole set, and at most ``limit`` files of each split (a seeded sample of each)."""
    root = data / "maskbench"
    if not root.is_dir():
        raise FileNotFoundError(f"no development set at {root}")
    files = sorted(root.glob("*.json"))
    if split:
        files = [f for f in files if f.name.split("---")[0] == split]
    if sample is not None and sample < len(files):
        files = sorted(random.Random(seed).sample(files, sample))
    if limit is not None:
        by_split: dict = {}
        for f in files:
            by_split.setdefault(f.name.split("---")[0], []).append(f)
        files = sorted(f for group in by_split.values()
                       for f in (random.Random(seed).sample(group, limit) if limit < len(group) else group))
    return files


def serialise(data) -> str:
    """The protocol's serialisation of a test instance."""
    return json.dumps(data, indent=None, ensure_ascii=False)


def _property_lists(schema, out: list) -> list:
    """The key lists of every ``properties`` block of ``schema``, in document order."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            out.append(list(props))
        for value in schema.values():
            _property_lists(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _property_lists(value, out)
    return out


def in_declared_order(data, lists: list):
    """``data`` with each object's keys in the order of the first ``properties`` block that
    lists them all (else of the block listing most of them; keys it lacks go last, as they
    were): a diagnostic for valid instances rejected only because of their key order."""
    if isinstance(data, list):
        return [in_declared_order(v, lists) for v in data]
    if not isinstance(data, dict):
        return data
    keys = list(data)
    block = next((b for b in lists if all(k in b for k in keys)), None)
    if block is None and lists:
        block = max(lists, key=lambda b: sum(k in b for k in keys))
    if block:
        rank = {k: i for i, k in enumerate(block)}
        keys.sort(key=lambda k: rank.get(k, len(block)))
    return {k: in_declared_order(data[k], lists) for k in keys}


class LarkEngine:
    """Grammar from :func:`schema_to_lark`, texts parsed by lark's LALR parser."""

    name = "decodekit (lark parse)"

    def __init__(self, **options) -> None:
        import lark.lexer
        from lark import Lark

        from decodekit.grammars.jsonschema import schema_to_lark
        # lark re-checks terminal collisions with interegular on every parser it builds, which
        # costs seconds on these grammars; schema_to_lark already proved that the terminals of
        # each parser state are disjoint, so the check is switched off for this engine.
        lark.lexer.has_interegular = False
        self._lark, self._convert, self.options = Lark, schema_to_lark, options

    def compile(self, schema):
        grammar = self._convert(schema, **self.options)
        parser = self._lark(grammar, parser="lalr", lexer="contextual")

        def check(text: str) -> bool:
            try:
                parser.parse(text)
                return True
            except Exception:  # noqa: BLE001 - any lark error is a rejection
                return False
        return check


@functools.lru_cache(maxsize=1)
def _default_tokenizer():
    from transformers import AutoTokenizer

    from decodekit.default_model import ensure_converted
    return AutoTokenizer.from_pretrained(str(ensure_converted(verbose=False)))


class TokenEngine:
    """decodekit's token-mask engine on the grammar from :func:`schema_to_lark`."""

    name = "decodekit (tokens)"

    def __init__(self, **options) -> None:
        try:
            from decodekit.grammars import compile as compile_grammar
        except ImportError as exc:  # the engine is optional in this script
            raise SystemExit(f"the token-level engine is not available: {exc}") from None
        from decodekit.grammars.jsonschema import schema_to_lark
        self.tokenizer = _default_tokenizer()
        self._compile, self._convert, self.options = compile_grammar, schema_to_lark, options
        self.mask_times: list = []

    def compile(self, schema):
        compiled = self._compile(self._convert(schema, **self.options), self.tokenizer)
        compiled.matcher().mask()  # compile time is the time to the first mask
        tokenizer, times = self.tokenizer, self.mask_times

        def check(text: str) -> bool:
            matcher = compiled.matcher()
            for tok in tokenizer.encode(text, add_special_tokens=False):
                start = time.perf_counter()
                mask = matcher.mask()
                times.append(time.perf_counter() - start)
                if not bool(mask[tok]) or not matcher.accept(tok):
                    return False
            return bool(matcher.is_complete())
        return check


class LLGuidanceEngine:
    """llguidance's JSON Schema front end, token by token."""

    name = "llguidance"

    def __init__(self) -> None:
        import llguidance
        import llguidance.hf
        self.ll = llguidance
        self.tokenizer = _default_tokenizer()
        self.lltok = llguidance.hf.from_tokenizer(self.tokenizer)
        self.opts = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        self.mask_times: list = []

    def compile(self, schema):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults=self.opts)
        first = self.ll.LLMatcher(self.lltok, grammar, log_level=0)
        if first.is_error():
            raise ValueError(first.get_error())
        first.compute_bitmask()
        tokenizer, ll, lltok, times = self.tokenizer, self.ll, self.lltok, self.mask_times

        def check(text: str) -> bool:
            matcher = ll.LLMatcher(lltok, grammar, log_level=0)
            for tok in tokenizer.encode(text, add_special_tokens=False):
                start = time.perf_counter()
                mask = matcher.compute_bitmask()
                times.append(time.perf_counter() - start)
                if not (mask[tok // 8] >> (tok % 8)) & 1 or not matcher.consume_token(tok):
                    return False
            return matcher.is_accepting()
        return check


class XGrammarEngine:
    """xgrammar's JSON Schema front end, token by token."""

    name = "xgrammar"

    def __init__(self) -> None:
        import xgrammar
        self.xgr = xgrammar
        self.tokenizer = _default_tokenizer()
        info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=len(self.tokenizer))
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
        self.mask_times: list = []

    def compile(self, schema):
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                     separators=(", ", ": "), strict_mode=False)
        xgr, bitmask, tokenizer, times = self.xgr, self.bitmask, self.tokenizer, self.mask_times
        xgr.GrammarMatcher(compiled).fill_next_token_bitmask(bitmask)

        def check(text: str) -> bool:
            matcher = xgr.GrammarMatcher(compiled)
            for tok in tokenizer.encode(text, add_special_tokens=False):
                start = time.perf_counter()
                matcher.fill_next_token_bitmask(bitmask)
                times.append(time.perf_counter() - start)
                if not (int(bitmask[0, tok // 32]) >> (tok % 32)) & 1 or not matcher.accept_token(tok):
                    return False
            return matcher.is_completed()
        return check


ENGINES = {"tokens": TokenEngine, "llguidance": LLGuidanceEngine, "xgrammar": XGrammarEngine,
           "lark": LarkEngine}
OPTIONAL = ("llguidance", "xgrammar")


def _alarm(_signum, _frame):
    raise CompileTimeout


def evaluate(engine, files: list[Path], timeout: float = 30.0, errors: dict | None = None) -> dict:
    """Run the protocol; return per-split counters (and record compile errors in ``errors``)."""
    stats: dict = {}
    use_alarm = hasattr(signal, "SIGPROF")  # a limit on CPU time, robust to a busy machine
    for path in files:
        split = path.name.split("---")[0]
        st = stats.setdefault(split, {"files": 0, "compiled": 0, "valid": 0, "valid_ok": 0,
                                      "invalid": 0, "invalid_ok": 0, "valid_reordered_ok": 0, "compile_s": [],
                                      "check_s": [], "mask_s": []})
        doc = json.loads(path.read_text(encoding="utf-8"))
        st["files"] += 1
        start = time.perf_counter()
        if use_alarm:
            old = signal.signal(signal.SIGPROF, _alarm)
            signal.setitimer(signal.ITIMER_PROF, timeout)
        try:
            check = engine.compile(doc["schema"])
        except Exception as exc:  # noqa: BLE001 - a compile error is counted, not a crash
            if errors is not None:
                errors[path.name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.signal(signal.SIGPROF, old)
        st["compile_s"].append(time.perf_counter() - start)
        st["compiled"] += 1
        for test in doc.get("tests") or []:
            text = serialise(test["data"])
            t0 = time.perf_counter()
            ok = check(text)
            st["check_s"].append(time.perf_counter() - t0)
            if hasattr(engine, "mask_times"):
                st["mask_s"] += engine.mask_times
                engine.mask_times.clear()
            if test["valid"]:
                st["valid"] += 1
                st["valid_ok"] += ok
            else:
                st["invalid"] += 1
                st["invalid_ok"] += ok
                if ok and errors is not None:
                    errors[f"{path.name} (invalid accepted)"] = text[:300]
            if test["valid"] and not ok:
                reordered = serialise(in_declared_order(test["data"], _property_lists(doc["schema"], [])))
                st["valid_reordered_ok"] += reordered != text and check(reordered)
                if hasattr(engine, "mask_times"):
                    engine.mask_times.clear()
                if errors is not None:
                    errors[f"{path.name} (valid rejected)"] = text[:300]
    return stats


_ENGINE = None


def _evaluate_chunk(args) -> tuple:
    files, timeout = args
    errors: dict = {}
    return evaluate(_ENGINE, files, timeout, errors), errors


def evaluate_parallel(engine, files: list[Path], timeout: float, errors: dict, jobs: int) -> dict:
    """:func:`evaluate` over ``jobs`` forked processes (files dealt round-robin), merged."""
    global _ENGINE
    if jobs <= 1:
        return evaluate(engine, files, timeout, errors)
    import multiprocessing
    _ENGINE = engine
    chunks = [(files[i::jobs], timeout) for i in range(jobs)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.map(_evaluate_chunk, chunks)
    stats: dict = {}
    for part, errs in results:
        errors.update(errs)
        for split, st in part.items():
            into = stats.setdefault(split, {k: ([] if isinstance(v, list) else 0)
                                            for k, v in st.items()})
            for k, v in st.items():
                into[k] += v
    return stats


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}" if b else "-"


def _mask_column(times: list) -> str:
    if not times:
        return "-"
    us = sorted(1e6 * t for t in times)
    p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
    return f"{statistics.fmean(us):.0f} / {statistics.median(us):.0f} / {p99:.0f}"


def table(name: str, stats: dict) -> str:
    """A markdown table of the per-split figures (and the total)."""
    rows = [f"### {name}", "",
            "| split | files | compiled % | valid accepted % | invalid rejected % | "
            "invalid accepted | compile ms (p50 / mean) | check ms / instance | "
            "mask us (mean / p50 / p99) |",
            "|---|---|---|---|---|---|---|---|---|"]
    if not stats:
        return "\n".join(rows + ["(no schema files)"])
    first = next(iter(stats.values()))
    total = {k: (0 if not isinstance(v, list) else []) for k, v in first.items()}
    order = [s for s in SPLITS if s in stats] + [s for s in stats if s not in SPLITS]
    for split in order + ["all"]:
        st = total if split == "all" else stats[split]
        if split != "all":
            for k, v in st.items():
                total[k] += v
        comp = st["compile_s"] or [0.0]
        chk = st["check_s"] or [0.0]
        rows.append(f"| {split} | {st['files']} | {_pct(st['compiled'], st['files'])} | "
                    f"{_pct(st['valid_ok'], st['valid'])} ({st['valid_ok']}/{st['valid']}) | "
                    f"{_pct(st['invalid'] - st['invalid_ok'], st['invalid'])} | "
                    f"{st['invalid_ok']} | {1000 * statistics.median(comp):.1f} / "
                    f"{1000 * statistics.fmean(comp):.1f} | {1000 * statistics.fmean(chk):.2f} | "
                    f"{_mask_column(st['mask_s'])} |")
    rows += ["", targets(total)]
    return "\n".join(rows)


def targets(total: dict) -> str:
    """Whether the totals meet the targets: compiled >= 90 % of the files, valid instances
    accepted >= 99 % (of those of compiled schemas), no invalid instance accepted."""
    compiled = total["compiled"] / total["files"] if total["files"] else 0.0
    valid = total["valid_ok"] / total["valid"] if total["valid"] else 1.0
    marks = [f"compiled {100 * compiled:.1f} % (target >= 90 %: {'met' if compiled >= 0.9 else 'missed'})",
             f"valid accepted {100 * valid:.1f} % (target >= 99 %: {'met' if valid >= 0.99 else 'missed'})",
             f"invalid accepted {total['invalid_ok']} (target 0: {'met' if total['invalid_ok'] == 0 else 'missed'})"]
    rejected = total["valid"] - total["valid_ok"]
    order = (f" Of the {rejected} valid instances rejected, {total['valid_reordered_ok']} are accepted once "
             "their object keys are put in the order of the schema's `properties` (see "
             "`in_declared_order`)." if rejected else "")
    return "Targets: " + "; ".join(marks) + "." + order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--engines", default="tokens,llguidance",
                        help=f"comma-separated engines, run one after the other: {', '.join(ENGINES)} "
                             "(default: tokens,llguidance)")
    parser.add_argument("--split", choices=SPLITS)
    parser.add_argument("--limit", type=int, help="at most this many files of each split (seeded sample)")
    parser.add_argument("--sample", type=int, help="a seeded sample of this many files")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample and --limit")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="compile limit per schema (CPU seconds)")
    parser.add_argument("--whitespace", choices=("compact", "flexible"), default="compact",
                        help="whitespace option of decodekit's converter (tokens, lark)")
    parser.add_argument("--errors", type=Path, help="write compile errors and misjudged "
                                                    "instances to this JSON file")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (files are dealt "
                                                           "round-robin; timings are per process)")
    args = parser.parse_args()
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        parser.error(f"unknown engine(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(ENGINES)}")
    files = schema_files(args.data, args.split, args.sample, args.seed, args.limit)
    print(f"# {len(files)} schema files of the development set; engines: {', '.join(names)}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n", flush=True)
    report = {}
    for name in names:
        try:
            engine = ENGINES[name](whitespace=args.whitespace) if name in ("tokens", "lark") else ENGINES[name]()
        except ImportError as exc:
            if name not in OPTIONAL:
                raise
            print(f"{name} is not installed ({exc}); skipping it (pip install {name})\n", flush=True)
            continue
        errors: dict = {}
        start = time.perf_counter()
        stats = evaluate_parallel(engine, files, args.timeout, errors, args.jobs)
        print(table(engine.name, stats), flush=True)
        print(f"({time.perf_counter() - start:.0f} s)\n", flush=True)
        report[engine.name] = errors
    if args.errors:
        args.errors.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
