"""JSONSchemaBench (MaskBench development set): schema compile rate and instance acceptance.

For every schema file of the development set (``<Split>---<id>.json`` holding ``schema`` and
``tests``), compile the schema, then check each test instance serialised with
``json.dumps(data, indent=None, ensure_ascii=False)``: a valid instance must be accepted (and
complete), an invalid one rejected. Prints, per split: compiled %, valid instances accepted %
(of the valid instances of compiled schemas), invalid instances rejected % and the count of
invalid instances accepted, compile time and check time per instance.

Engines:

- ``lark``: ``schema_to_lark`` and a lark LALR parser (contextual lexer) that parses each text.
- ``tokens``: the token-level protocol with decodekit's engine
  (``decodekit.grammars.compile(grammar, tokenizer).matcher()``): tokenise the text with the
  default tokenizer, check each token against ``mask()``, ``accept`` it, and require
  ``is_complete()`` at the end.
- ``llguidance`` (added with ``--llguidance`` when the package is installed): the same token
  protocol on llguidance's own JSON Schema front end, separators ``", "`` and ``": "``.

Usage::

    python benchmarks/jsonschemabench.py [--data DIR] [--engine lark|tokens] [--llguidance]
        [--split NAME] [--sample N] [--timeout S] [--errors FILE]
"""

from __future__ import annotations

import argparse
import json
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
                 seed: int = 0) -> list[Path]:
    """The development set's files (sorted), optionally one split and a seeded sample."""
    root = data / "maskbench"
    if not root.is_dir():
        raise FileNotFoundError(f"no development set at {root}")
    files = sorted(root.glob("*.json"))
    if split:
        files = [f for f in files if f.name.split("---")[0] == split]
    if sample is not None and sample < len(files):
        files = sorted(random.Random(seed).sample(files, sample))
    return files


def serialise(data) -> str:
    """The protocol's serialisation of a test instance."""
    return json.dumps(data, indent=None, ensure_ascii=False)


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
        parser = self._lark(self._convert(schema, **self.options), parser="lalr", lexer="contextual")

        def check(text: str) -> bool:
            try:
                parser.parse(text)
                return True
            except Exception:  # noqa: BLE001 - any lark error is a rejection
                return False
        return check


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

    def compile(self, schema):
        compiled = self._compile(self._convert(schema, **self.options), self.tokenizer)
        tokenizer = self.tokenizer

        def check(text: str) -> bool:
            matcher = compiled.matcher()
            for tok in tokenizer.encode(text, add_special_tokens=False):
                mask = matcher.mask()
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

    def compile(self, schema):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults=self.opts)
        first = self.ll.LLMatcher(self.lltok, grammar, log_level=0)
        if first.is_error():
            raise ValueError(first.get_error())
        first.compute_bitmask()
        tokenizer, ll, lltok = self.tokenizer, self.ll, self.lltok

        def check(text: str) -> bool:
            matcher = ll.LLMatcher(lltok, grammar, log_level=0)
            for tok in tokenizer.encode(text, add_special_tokens=False):
                mask = matcher.compute_bitmask()
                if not (mask[tok // 8] >> (tok % 8)) & 1 or not matcher.consume_token(tok):
                    return False
            return matcher.is_accepting()
        return check


def _alarm(_signum, _frame):
    raise CompileTimeout


def evaluate(engine, files: list[Path], timeout: float = 30.0, errors: dict | None = None) -> dict:
    """Run the protocol; return per-split counters (and record compile errors in ``errors``)."""
    stats: dict = {}
    use_alarm = hasattr(signal, "SIGPROF")  # a limit on CPU time, robust to a busy machine
    for path in files:
        split = path.name.split("---")[0]
        st = stats.setdefault(split, {"files": 0, "compiled": 0, "valid": 0, "valid_ok": 0,
                                      "invalid": 0, "invalid_ok": 0, "compile_s": [],
                                      "check_s": []})
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
            if test["valid"]:
                st["valid"] += 1
                st["valid_ok"] += ok
            else:
                st["invalid"] += 1
                st["invalid_ok"] += ok
                if ok and errors is not None:
                    errors[f"{path.name} (invalid accepted)"] = text[:300]
            if test["valid"] and not ok and errors is not None:
                errors[f"{path.name} (valid rejected)"] = text[:300]
    return stats


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}" if b else "-"


def table(name: str, stats: dict) -> str:
    """A markdown table of the per-split figures (and the total)."""
    rows = [f"### {name}", "",
            "| split | files | compiled % | valid accepted % | invalid rejected % | "
            "invalid accepted | compile ms (p50 / mean) | check ms / instance |",
            "|---|---|---|---|---|---|---|---|"]
    total = {k: (0 if not isinstance(v, list) else []) for k, v in next(iter(stats.values())).items()} \
        if stats else {}
    for split in [s for s in SPLITS if s in stats] + [s for s in stats if s not in SPLITS] + ["all"]:
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
                    f"{1000 * statistics.fmean(comp):.1f} | {1000 * statistics.fmean(chk):.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--engine", choices=("lark", "tokens"), default="lark")
    parser.add_argument("--llguidance", action="store_true", help="also run llguidance")
    parser.add_argument("--split", choices=SPLITS)
    parser.add_argument("--sample", type=int, help="a seeded sample of this many files")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="compile limit per schema (CPU seconds)")
    parser.add_argument("--whitespace", choices=("compact", "flexible"), default="compact")
    parser.add_argument("--errors", type=Path, help="write compile errors and misjudged "
                                                    "instances to this JSON file")
    args = parser.parse_args()
    files = schema_files(args.data, args.split, args.sample)
    engines = [(LarkEngine if args.engine == "lark" else TokenEngine)(whitespace=args.whitespace)]
    if args.llguidance:
        try:
            engines.append(LLGuidanceEngine())
        except ImportError:
            print("llguidance is not installed; skipping it")
    report = {}
    for engine in engines:
        errors: dict = {}
        stats = evaluate(engine, files, args.timeout, errors)
        print(table(engine.name, stats) + "\n", flush=True)
        report[engine.name] = errors
    if args.errors:
        args.errors.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
