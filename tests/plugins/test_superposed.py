"""Superposed decoding: the spec's identities, the n-gram interpolation, processors per draft."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import decodekit
from decodekit import ngram
from decodekit.backend import Capability
from decodekit.errors import CapabilityError, InputError, OptionsError, UserError
from decodekit.loop import prepare
from decodekit.plugins.superposed import NoNGramTableWarning, Superposed
from decodekit.processor import LogitsProcessor
from decodekit.strategy import DecodeContext, ModelRunner
from decodekit.testing import CORPUS, tiny_tokenizer

PROMPTS = ("The quick brown", "def add(a, b):\n", "SELECT id", "To be, or")
NO_EOS = [("stop", {"eos": False})]
LAMBDAS = [0.01, 0.04, 0.15, 0.18, 0.12]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table of the tiny tokenizer's training corpus."""
    table = ngram.build_table([CORPUS], tiny_tokenizer(), name="tiny-corpus")
    return table.save(tmp_path_factory.mktemp("ngram") / "tiny.dkng")


def run(model: Any, prompt: Any, max_new_tokens: int = 12, processors: Any = None, **options: Any) -> Any:
    options.setdefault("ngram", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoNGramTableWarning)
        return model.generate(prompt, strategy="superposed", options=options,
                              max_new_tokens=max_new_tokens, processors=processors)


def manual(model: Any, prompts: list[str], max_new_tokens: int, processors: Any = None,
           **options: Any) -> tuple[Superposed, DecodeContext]:
    """A started strategy and its context, to step by hand."""
    from decodekit.manager import get_plugin_system

    options.setdefault("ngram", None)
    prepared = prepare(get_plugin_system(), model.backend, list(prompts), strategy="superposed",
                       options=options, processors=processors, max_new_tokens=max_new_tokens, seed=0)
    request = prepared.request
    ctx = DecodeContext(ModelRunner(model.backend), prepared.chain, request.prompt_token_ids,
                        max_new_tokens, torch.Generator().manual_seed(0), 0)
    strategy = prepared.strategy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoNGramTableWarning)
        strategy.start(ctx)
    return strategy, ctx  # type: ignore[return-value]


# -- identities of the spec ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny", "eos_model"])
def test_one_draft_without_ngrams_is_greedy(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    reasons = set()
    for prompt in PROMPTS:
        greedy = model.generate(prompt, strategy="greedy", max_new_tokens=16)
        sup = run(model, prompt, 16, k=1, alpha=0.0)
        assert len(sup.sequences) == 1
        assert sup.token_ids == greedy.token_ids, prompt
        assert sup.finish_reason == greedy.finish_reason
        reasons.add(greedy.finish_reason)
    if fixture == "eos_model":
        assert "eos" in reasons  # greedy ended early for some prompt, and so did the drafts


def test_first_step_drafts_are_the_top_k_tokens(tiny: Any, encode: Any) -> None:
    for prompt in PROMPTS:
        ids = torch.tensor([encode(prompt)])
        logits = tiny.backend.prefill(ids)[0].logits[0]
        top = torch.topk(logits, 4).indices.tolist()
        g = run(tiny, prompt, 1, k=4, alpha=0.0)
        assert [s.token_ids for s in g.sequences] == [[t] for t in top]
        scores = [s.score for s in g.sequences]
        assert scores == sorted(scores, reverse=True)
        # the score is log p with p = softmax(logits / 0.06) renormalised over the top 9
        scaled = torch.topk(logits, 9).values.double() / 0.06
        want = (scaled - torch.logsumexp(scaled, 0))[:4]
        assert scores == pytest.approx(want.tolist(), abs=1e-9)
    # the running drafts after the first step are the top-k tokens too (none of them is EOS)
    strategy, ctx = manual(tiny, ["The quick brown"], 8, k=3, alpha=0.0)
    logits = strategy.logits[0].clone()
    strategy.step(ctx)
    rows = strategy.rows
    assert rows.tokens[:, rows.length - 1].tolist() == torch.topk(logits, 3).indices.tolist()


def test_superposition_weights_sum_to_one_and_make_the_input(tiny: Any) -> None:
    strategy, ctx = manual(tiny, ["The quick brown", "SELECT id"], 10, processors=NO_EOS, k=3, alpha=0.0)
    fed: list[torch.Tensor] = []

    class Recorder(ModelRunner):
        def decode_embeds(self, cache: Any, embeds: torch.Tensor, **kw: Any) -> Any:
            fed.append(embeds.clone())
            return super().decode_embeds(cache, embeds, **kw)

    ctx.model = Recorder(ctx.model.backend)
    table = tiny.backend.input_embeddings()
    steps = 0
    while not strategy.done(ctx):
        strategy.step(ctx)
        steps += 1
        if strategy.done(ctx):
            break
        weights = strategy.weights  # per draft, [prompts, k]
        assert torch.allclose(weights.sum(dim=1), torch.ones(2))
        assert torch.allclose(weights.double(), torch.softmax(strategy.scores, dim=1))
        last = strategy.rows.tokens[:, strategy.rows.length - 1].view(2, 3)
        dense = torch.zeros(2, tiny.backend.vocab_size)  # w[v] over the vocabulary
        dense.scatter_add_(1, last, weights)
        assert torch.allclose(dense.sum(dim=1), torch.ones(2))
        assert torch.allclose(fed[-1][:, 0], dense @ table, atol=1e-6)
    assert steps == 10 and len(fed) == 9


def test_one_forward_pass_per_step_for_all_drafts(tiny: Any, encode: Any) -> None:
    prompts = ["The quick brown", "def add(a, b):\n"]
    width = max(len(encode(p)) for p in prompts)
    for k in (1, 3, 5):
        gens = run(tiny, prompts, 10, processors=NO_EOS, k=k, alpha=0.0)
        stats = gens[0].stats
        assert stats.forward_passes == 10  # prefill + 9 decodes, whatever k
        assert stats.positions == 2 * width + 2 * 9  # one cache row per prompt
        for g in gens:
            assert len(g.sequences) == k
            assert all(len(s.token_ids) == 10 and s.finish_reason == "length" for s in g.sequences)
            assert len({tuple(s.token_ids) for s in g.sequences}) == k
            scores = [s.score for s in g.sequences]
            assert scores == sorted(scores, reverse=True)


def test_finished_drafts_are_kept_and_ranked(eos_model: Any) -> None:
    seen_eos = False
    for prompt in PROMPTS:
        g = run(eos_model, prompt, 16, k=3, alpha=0.0)
        assert len(g.sequences) == 3
        scores = [s.score for s in g.sequences]
        assert scores == sorted(scores, reverse=True)
        for s in g.sequences:
            if s.finish_reason == "eos":
                seen_eos = True
                assert s.token_ids[-1] == 0 and 0 not in s.token_ids[:-1]
            else:
                assert s.finish_reason == "length" and len(s.token_ids) == 16
        assert g.text == g.sequences[0].text
    assert seen_eos


def test_batch_equals_one_prompt_at_a_time(tiny: Any, table_path: Path) -> None:
    prompts = list(PROMPTS)
    batch = run(tiny, prompts, 10, ngram=str(table_path))
    for prompt, g in zip(prompts, batch):
        alone = run(tiny, prompt, 10, ngram=str(table_path))
        assert [s.token_ids for s in g.sequences] == [s.token_ids for s in alone.sequences]
        assert [s.score for s in g.sequences] == pytest.approx([s.score for s in alone.sequences])


# -- n-gram interpolation -----------------------------------------------------------------------


def test_first_step_scores_follow_the_interpolation_formula(tiny: Any, encode: Any, tmp_path: Path) -> None:
    prompt = encode("The quick brown")
    logits = tiny.backend.prefill(torch.tensor([prompt]))[0].logits[0]
    values, top = torch.topk(logits, 9)
    # a corpus that continues the prompt with five of the kept tokens, with different counts
    docs = [prompt + [int(top[j])] for j in (1, 2, 4, 6, 8) for _ in range(j + 1)]
    docs += [prompt[-2:] + [int(top[0])]]
    table = ngram.count_ngrams(docs, meta={"tokenizer": ngram.tokenizer_fingerprint(tiny.tokenizer)})
    path = table.save(tmp_path / "steer.dkng")
    a = 0.54
    scaled = values.double() / 0.06
    logp = scaled - torch.logsumexp(scaled, 0)
    pn = np.zeros(9)  # sum_i lambda_i * count(last i tokens, v) / total(last i tokens)
    for i, lam in enumerate(LAMBDAS, start=1):
        if i <= len(prompt) and table.total(prompt[-i:]):
            pn += lam * np.array([table.count(prompt[-i:], int(t)) for t in top]) / table.total(prompt[-i:])
    want = {}
    for j in range(9):
        if pn[j] > 0:
            want[int(top[j])] = (1 - a) * float(logp[j]) + a * float(np.log(pn[j]))
    assert len(want) == 6  # known tokens; the other three rank below every known one
    best = sorted(want.items(), key=lambda kv: -kv[1])[:3]
    g = run(tiny, prompt, 1, k=3, alpha=a, ngram=str(path))
    assert [s.token_ids for s in g.sequences] == [[t] for t, _ in best]
    assert [s.score for s in g.sequences] == pytest.approx([v for _, v in best], abs=1e-9)
    assert g.stats.extra["ngram_table"] == "steer.dkng"
    assert g.stats.extra["alpha_used"] == a and g.stats.extra["ngram_lookup_seconds"] > 0


def test_ngrams_steer_the_drafts(tiny: Any, encode: Any, tmp_path: Path) -> None:
    prompt = encode("The quick brown")
    greedy = tiny.generate(prompt, strategy="greedy", max_new_tokens=8, processors=NO_EOS).token_ids
    story = encode(" fox jumps over the lazy dog.")[:8]
    assert story != greedy
    table = ngram.count_ngrams([prompt + story], meta={"tokenizer": ngram.tokenizer_fingerprint(tiny.tokenizer)})
    path = table.save(tmp_path / "story.dkng")
    vocab = tiny.backend.vocab_size
    g = run(tiny, prompt, len(story), processors=NO_EOS, k=2, alpha=1.0, n_token_sample=vocab, ngram=str(path))
    assert g.sequences[0].token_ids == story
    # with alpha = 0 (and one draft) the same options follow the model instead
    g0 = run(tiny, prompt, len(story), processors=NO_EOS, k=1, alpha=0.0, n_token_sample=vocab, ngram=str(path))
    assert g0.sequences[0].token_ids == greedy[:len(story)]


def test_drafts_unknown_to_the_ngrams_get_the_penalty(tiny: Any, table_path: Path) -> None:
    g = run(tiny, "SELECT id", 6, processors=NO_EOS, k=3, ngram=str(table_path))
    assert g.stats.extra["unknown_draft_steps"] > 0  # a random model leaves the corpus at once
    assert len(g.sequences) == 3 and all(np.isfinite(s.score) for s in g.sequences)
    # a draft step none of whose tokens the n-grams know costs (1 - alpha) log p - 200
    assert g.sequences[0].score < -200


def test_without_a_table_it_warns_and_runs_with_alpha_zero(tiny: Any) -> None:
    with pytest.warns(NoNGramTableWarning, match="alpha = 0"):
        g = tiny.generate("The quick brown", strategy="superposed", options={"ngram": None},
                          max_new_tokens=8)
    assert g.stats.extra["ngram_table"] is None and g.stats.extra["alpha_used"] == 0.0
    plain = run(tiny, "The quick brown", 8, alpha=0.0)
    assert [s.token_ids for s in g.sequences] == [s.token_ids for s in plain.sequences]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # alpha = 0 needs no table and says nothing
        run(tiny, "The quick brown", 2, alpha=0.0)


def test_table_errors(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a builtin table"):
        run(tiny, "The quick brown", 2, ngram=str(tmp_path / "missing.dkng"))
    other = ngram.build_table([CORPUS], tiny_tokenizer(300), name="other").save(tmp_path / "o.dkng")
    with pytest.raises(UserError, match="another tokenizer"):
        run(tiny, "The quick brown", 2, ngram=str(other))


# -- processors act on each draft -----------------------------------------------------------------


class HistoryState(LogitsProcessor):
    """Keeps, per row, the tokens it was told about and checks them against the row."""

    name = "history_state"

    def init_state(self, prompt_ids: list[int]) -> list[int]:
        return list(prompt_ids)

    def process(self, logits: torch.Tensor, rows: Any) -> torch.Tensor:
        states = rows.states[self.state_index]
        for r in range(rows.num_rows):
            if not rows.finished[r]:
                assert states[r] == rows.history(r), "a draft's state does not follow its history"
        self.checked = getattr(self, "checked", 0) + rows.num_rows
        return logits

    def update(self, rows: Any, tokens: torch.Tensor, active: torch.Tensor) -> None:
        states = rows.states[self.state_index]
        for r in active.nonzero().flatten().tolist():
            states[r].append(int(tokens[r]))


def test_processor_states_follow_each_draft(tiny: Any) -> None:
    proc = HistoryState()
    g = run(tiny, ["The quick brown", "SELECT id"], 10, processors=[proc, *NO_EOS], k=3, alpha=0.0)
    assert proc.checked == 2 * 3 * 10
    assert all(len(x.sequences) == 3 for x in g)


def test_processors_constrain_every_draft(tiny: Any, encode: Any) -> None:
    prompt = "The quick brown"
    free = run(tiny, prompt, 12, processors=NO_EOS, k=3, alpha=0.0)
    banned = free.sequences[1].token_ids[0]
    tokens_used = {t for s in free.sequences for t in s.token_ids}
    assert banned in tokens_used
    g = run(tiny, prompt, 12, processors=[("bad_words", {"token_ids": [[banned]]}), *NO_EOS], k=3, alpha=0.0)
    assert all(banned not in s.token_ids for s in g.sequences)
    g = run(tiny, prompt, 16, processors=[("no_repeat_ngram", {"size": 2}), *NO_EOS], k=3, alpha=0.0)
    history = encode(prompt)
    for s in g.sequences:
        seq = history + s.token_ids
        grams = list(zip(seq, seq[1:]))
        assert len(grams) == len(set(grams)), s.token_ids


# -- options and capabilities ------------------------------------------------------------------------


def test_options_are_validated(tiny: Any) -> None:
    with pytest.raises(OptionsError, match="n_token_sample"):
        run(tiny, "The", 2, k=5, n_token_sample=4)
    with pytest.raises(OptionsError, match="sum to at most 1"):
        run(tiny, "The", 2, lambdas=[0.6, 0.6])
    with pytest.raises(OptionsError, match="1 to 7 weights"):
        run(tiny, "The", 2, lambdas=[0.1] * 8)
    with pytest.raises(OptionsError, match="temperature"):
        run(tiny, "The", 2, temperature=0.0)
    with pytest.raises(OptionsError, match="valid options"):
        run(tiny, "The", 2, beams=2)
    defaults = Superposed().options
    assert (defaults.k, defaults.alpha, defaults.temperature, defaults.n_token_sample) == (3, 0.54, 0.06, 9)
    assert defaults.lambdas == LAMBDAS and defaults.ngram == "python-stdlib"


def test_needs_input_embeddings(tiny: Any) -> None:
    from decodekit.api import Model
    from decodekit.backends.pytorch import TorchBackend

    assert Superposed.requires == {Capability.INPUT_EMBEDS}

    class NoEmbeds(TorchBackend):
        capabilities = Capability.ALL - {Capability.INPUT_EMBEDS}

    backend = NoEmbeds(tiny.backend.model, tiny.tokenizer, "no-embeds")
    with pytest.raises(CapabilityError):
        decodekit.generate("The", model=Model(backend), strategy="superposed",
                           options={"alpha": 0.0}, max_new_tokens=2)


# -- the `decodekit ngram` command -----------------------------------------------------------


def test_ngram_build_command(tmp_path: Path, capsys: pytest.CaptureFixture, clean_env: None) -> None:
    from decodekit.cli import main

    tok_dir = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(tok_dir)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "one.txt").write_text(CORPUS)
    (corpus / "two.md").write_text("The quick brown fox. " * 5)
    out = tmp_path / "t.dkng"
    status = main(["ngram", "build", "--corpus", str(corpus), "--tokenizer", str(tok_dir),
                   "--out", str(out), "--max-order", "4"])
    assert status == 0 and f"wrote {out}" in capsys.readouterr().out
    table = ngram.NGramTable.open(out)
    assert table.orders == (2, 3, 4) and table.name == "t" and table.meta["corpus"]["files"] == 2
    tok = tiny_tokenizer()
    docs = [tok.encode(CORPUS, add_special_tokens=False), tok.encode("The quick brown fox. " * 5,
                                                                     add_special_tokens=False)]
    counts = Counter(tuple(d[j:j + n]) for d in docs for n in (2, 3, 4) for j in range(len(d) - n + 1))
    assert len(table.entry_keys) == len(counts)
    assert all(table.count(g[:-1], g[-1]) == c for g, c in list(counts.items())[:200])
    ngram.check_tokenizer(table, tok)

    assert main(["ngram", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["orders"] == [2, 3, 4] and info["entries"] == len(table.entry_keys)

    assert main(["ngram", "build", "--corpus", str(tmp_path / "nope"), "--tokenizer", str(tok_dir),
                 "--out", str(out)]) == 2
    assert "corpus path not found" in capsys.readouterr().err
    assert main(["ngram", "build", "--corpus", str(corpus), "--tokenizer", str(tok_dir),
                 "--out", str(out), "--max-order", "12"]) == 2
    assert "--max-order must lie in 2..8" in capsys.readouterr().err
    assert main(["ngram", "info", str(corpus / "one.txt")]) == 2
    assert "not a decodekit n-gram table" in capsys.readouterr().err


@pytest.mark.e2e
def test_default_model_with_the_stdlib_table() -> None:
    model = decodekit.load("default")
    prompt = "def read_config(path):\n    \"\"\"Read a configuration file and"
    g = model.generate(prompt, strategy="superposed", max_new_tokens=12)
    assert len(g.sequences) == 3 and len({s.text for s in g.sequences}) == 3
    assert g.stats.extra["ngram_table"] == "python-stdlib" and g.stats.extra["alpha_used"] == 0.54
    assert g.stats.forward_passes <= 12
    greedy = model.generate(prompt, strategy="greedy", max_new_tokens=12)
    one = run(model, prompt, 12, k=1, alpha=0.0)
    assert one.token_ids == greedy.token_ids
