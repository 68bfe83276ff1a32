"""The ``hf`` processor: transformers logits processors inside decodekit."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    NoBadWordsLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

import decodekit
from decodekit.errors import OptionsError
from decodekit.plugins.hf_processor import HFProcessor, import_object, is_transformers_processor
from decodekit.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


def _first_token(model, **kw):
    return decodekit.generate([5, 6, 7], model=model, max_new_tokens=1, **kw).token_ids[0]


def test_instance_is_wrapped_and_bans_the_greedy_token(model):
    plain = _first_token(model)
    banned = _first_token(model, processors=[SuppressTokensLogitsProcessor([plain])])
    assert banned != plain
    # the same through the explicit processor spec
    explicit = _first_token(model, processors=[("hf", {"processor": SuppressTokensLogitsProcessor([plain])})])
    assert explicit == banned


def test_class_path_with_kwargs_matches_builtin_repetition_penalty(model):
    prompt = [5, 6, 7, 5, 6]
    hf = decodekit.generate(prompt, model=model, max_new_tokens=12, processors=[
        {"hf": {"processor": "transformers.RepetitionPenaltyLogitsProcessor", "kwargs": {"penalty": 3.0}}}])
    native = decodekit.generate(prompt, model=model, max_new_tokens=12,
                                processors=[("repetition_penalty", {"penalty": 3.0})])
    # one prompt, no padding: transformers' rule and the builtin one agree
    assert hf.token_ids == native.token_ids
    plain = decodekit.generate(prompt, model=model, max_new_tokens=12)
    assert hf.token_ids != plain.token_ids


@pytest.mark.parametrize("strategy,options", [("beam", {"num_beams": 3}),
                                              ("contrastive", {"top_k": 3, "alpha": 0.5}),
                                              ("diverse_beam", {"num_beams": 4, "num_groups": 2})])
def test_ban_holds_under_search_strategies(model, strategy, options):
    plain = decodekit.generate([5, 6, 7], model=model, max_new_tokens=8, strategy=strategy, options=options)
    banned = sorted(set(plain.token_ids))[:3]
    proc = NoBadWordsLogitsProcessor([[t] for t in banned], eos_token_id=0)
    g = decodekit.generate([5, 6, 7], model=model, max_new_tokens=8, strategy=strategy, options=options,
                           processors=[proc])
    for seq in g.sequences:
        assert not set(seq.token_ids) & set(banned)


def test_processor_list_and_batched_rows(model):
    procs = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(2.0), SuppressTokensLogitsProcessor([3])])
    gens = decodekit.generate([[5, 6, 7], [8, 9]], model=model, max_new_tokens=6, processors=[procs])
    assert len(gens) == 2
    assert all(3 not in g.token_ids for g in gens)


def test_pipeline_file_names_a_class(tmp_path, model):
    from decodekit.pipeline import Pipeline

    path = tmp_path / "p.toml"
    path.write_text('max_new_tokens = 4\n[[processors]]\nname = "hf"\n'
                    'options = { processor = "transformers.SuppressTokensLogitsProcessor", args = [[3, 4]] }\n')
    pipeline = Pipeline.from_file(path)
    proc = pipeline.spec.processors[0]
    assert proc.name == "hf"


def test_errors_name_what_is_wrong():
    assert is_transformers_processor(SuppressTokensLogitsProcessor([1]))
    assert not is_transformers_processor(lambda ids, scores: scores)
    with pytest.raises(OptionsError, match="has no attribute"):
        HFProcessor(processor="transformers.NoSuchProcessor")
    with pytest.raises(OptionsError, match="cannot import module"):
        import_object("no_such_module_xyz.Thing")
    with pytest.raises(OptionsError, match="not a class path"):
        HFProcessor(processor="justaname")
    with pytest.raises(OptionsError, match="failed"):
        HFProcessor(processor="transformers.RepetitionPenaltyLogitsProcessor", kwargs={"bogus": 1})
    with pytest.raises(OptionsError, match="processor instance"):
        HFProcessor(processor=42)
    with pytest.raises(OptionsError, match="not with an instance"):
        HFProcessor(processor=SuppressTokensLogitsProcessor([1]), args=[1])


def test_wrong_output_shape_is_reported(model):
    proc = HFProcessor(processor=lambda ids, scores: scores[:, :5])
    with pytest.raises(Exception, match="expected scores of shape"):
        decodekit.generate([5, 6], model=model, max_new_tokens=1, processors=[proc])


def test_scores_reach_the_processor_as_padded_history(model):
    seen = []

    def spy(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(input_ids.clone())
        return scores

    decodekit.generate([[5, 6, 7], [8, 9]], model=model, max_new_tokens=2, processors=[HFProcessor(processor=spy)])
    assert seen[0].tolist() == [[5, 6, 7], [0, 8, 9]]  # left-padded with the pad id, like transformers
    assert seen[1].shape == (2, 4)
