"""Batch runs (``decodekit.scale``): records in order, error rows, resume, and the Ray engine.

The Ray tests start one local Ray with 2 CPUs for the module and compare every Ray run with the
local run of the same pipeline on a tiny random Llama saved to a temporary folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from decodekit import scale
from decodekit.cli import main
from decodekit.errors import MissingDependencyError, UserError
from decodekit.pipeline import Pipeline

PROMPTS = ["The quick brown", "To be, or not", "def add(a, b):", "A journey", "Hello there",
           "Once upon a time", "1, 2, 3,"]
TOO_LONG = "word " * 600  # more tokens than the tiny model's 512-position context


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama + tokenizer that pipeline files can name as their model."""
    from decodekit.testing import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.getbasetemp() / "tiny-llama-0"
    if not (path / "config.json").is_file():
        path.mkdir(exist_ok=True)
        tiny_llama(0).save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ray_local() -> Any:
    """One local Ray instance with 2 CPUs for all Ray tests of this module."""
    ray = pytest.importorskip("ray", reason="the ray engine needs Ray: pip install 'decodekit[ray]'")
    pytest.importorskip("ray.data", reason="the ray engine needs Ray Data: pip install 'decodekit[ray]'")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def make_pipeline(tiny_dir: Path, strategy: str = "greedy", **options: Any) -> Pipeline:
    return Pipeline.from_dict({"model": str(tiny_dir), "max_new_tokens": 6, "batch_size": 2,
                               "strategy": {"name": strategy, "options": options}})


def write_prompts(path: Path, prompts: list[Any]) -> Path:
    lines = []
    for i, prompt in enumerate(prompts):
        lines.append(json.dumps({"id": f"p{i}", "prompt": prompt}) if i % 3 == 0 else json.dumps(prompt))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Equal records, except timings (and greedy's unused seed), and scores up to float rounding
    (replicas may use fewer threads than the local run, which changes summation order)."""

    def split(record: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
        record = json.loads(json.dumps(record))
        stats = record.get("stats", {})
        stats.pop("seconds", None)
        stats.pop("tokens_per_second", None)
        if record.get("strategy") == "greedy":
            stats.pop("seed", None)  # drawn at random per call, and unused, when none is set
        scores = [s.pop("score") for s in record.get("sequences", [])]
        return record, scores

    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        (ra, sa), (rb, sb) = split(a), split(b)
        assert ra == rb
        assert sa == pytest.approx(sb, rel=1e-4, abs=1e-4)


# -- local engine -------------------------------------------------------------------------------


def test_local_run_keeps_order_ids_and_turns_failing_prompts_into_error_rows(
        tiny_dir: Path, tmp_path: Path) -> None:
    prompts = [*PROMPTS[:3], TOO_LONG, [5, 99999], PROMPTS[3]]
    source = write_prompts(tmp_path / "in.jsonl", prompts)
    pipeline = make_pipeline(tiny_dir)
    summary = scale.run(pipeline, source, tmp_path / "out.jsonl")
    records = read_records(tmp_path / "out.jsonl")
    assert [r["index"] for r in records] == list(range(6))
    assert [r.get("id") for r in records] == ["p0", None, None, "p3", None, None]
    assert [r["prompt"] for r in records] == prompts
    assert "exceeds the model's context of 512 tokens" in records[3]["error"]
    assert "outside the vocabulary" in records[4]["error"]
    assert [line for line, _ in summary.errors] == [4, 5]
    assert (summary.total, summary.written, summary.skipped) == (6, 6, 0)
    good = [0, 1, 2, 5]
    assert all("error" not in records[i] for i in good)
    # the healthy prompt of a failing batch is decoded without the failing one
    expected = pipeline.run([prompts[i] for i in good])
    assert [records[i]["token_ids"] for i in good] == [g.token_ids for g in expected]
    assert records[5]["stats"]["batch_size"] == 1 and records[0]["stats"]["batch_size"] == 2


def test_resume_skips_done_prompts_cuts_a_torn_line_and_appends(tiny_dir: Path, tmp_path: Path) -> None:
    source = write_prompts(tmp_path / "in.jsonl", PROMPTS)
    pipeline = make_pipeline(tiny_dir, "sample", seed=7, temperature=0.9)
    full = tmp_path / "full.jsonl"
    scale.run(pipeline, source, full)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:4]) + lines[4][:25], encoding="utf-8")  # stopped mid-line
    summary = scale.run(pipeline, source, partial, resume=True)
    assert (summary.skipped, summary.written) == (4, 3)
    assert_same_records(read_records(partial), read_records(full))
    again = scale.run(pipeline, source, partial, resume=True)
    assert (again.skipped, again.written) == (7, 0)
    assert len(read_records(partial)) == 7


def test_resume_matches_by_id_when_the_input_has_ids(tiny_dir: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_dir)
    out = tmp_path / "out.jsonl"
    scale.run(pipeline, [{"id": "b", "prompt": PROMPTS[1]}], out)
    prompts = [{"id": "a", "prompt": PROMPTS[0]}, {"id": "b", "prompt": PROMPTS[1]},
               {"id": "c", "prompt": PROMPTS[2]}]
    summary = scale.run(pipeline, prompts, out, resume=True)
    assert (summary.skipped, summary.written) == (1, 2)
    assert [r["id"] for r in read_records(out)] == ["b", "a", "c"]


def test_parquet_output_holds_the_same_records(tiny_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet output needs pyarrow (decodekit[ray])")
    pipeline = make_pipeline(tiny_dir)
    scale.run(pipeline, PROMPTS[:3], tmp_path / "out.jsonl")
    scale.run(pipeline, PROMPTS[:2], tmp_path / "out.parquet")
    summary = scale.run(pipeline, PROMPTS[:3], tmp_path / "out.parquet", resume=True)
    assert (summary.skipped, summary.written) == (2, 1)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    expected = read_records(tmp_path / "out.jsonl")
    assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in expected]
    assert [r["index"] for r in rows] == [0, 1, 2]


def test_invalid_settings_are_user_errors(tiny_dir: Path, tmp_path: Path) -> None:
    pipeline = make_pipeline(tiny_dir)
    cases = [({"engine": "spark"}, "unknown engine 'spark'; valid engines: local, ray"),
             ({"engine": "ray", "replicas": 0}, "replicas must be a whole number >= 1, got 0"),
             ({"replicas": 2}, "replicas and a Ray address need the ray engine"),
             ({"resume": True, "output": None}, "resume needs an output file")]
    for kwargs, message in cases:
        output = kwargs.pop("output", tmp_path / "out.jsonl")
        with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
            scale.run(pipeline, PROMPTS[:1], output, **kwargs)  # type: ignore[arg-type]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"index": 0}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: cannot resume: not a JSON record"):
        scale.run(pipeline, PROMPTS[:1], bad, resume=True)


def test_cli_writes_error_rows_warns_and_resumes(tiny_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pipeline_file = tmp_path / "p.toml"
    pipeline_file.write_text(f'model = "{tiny_dir}"\nmax_new_tokens = 4\nbatch_size = 2\n', encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_text('"The quick"\n{"prompt": [5, 99999]}\n"A journey"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["run", str(pipeline_file), "--input", str(source), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"decodekit: warning: {source}:2: the prompt has token ids outside the vocabulary")
    records = read_records(out)
    assert ["error" in r for r in records] == [False, True, False]
    out.write_text(json.dumps(records[0]) + "\n", encoding="utf-8")
    assert main(["run", str(pipeline_file), "--input", str(source), "--output", str(out), "--resume"]) == 0
    assert [r["index"] for r in read_records(out)] == [0, 1, 2]
    assert main(["run", str(pipeline_file), "--input", str(source), "--resume"]) == 2
    assert "resume needs an output file" in capsys.readouterr().err
    assert main(["run", str(pipeline_file), "--prompt", "x", "--engine", "ray"]) == 2
    assert "use --input, not --prompt" in capsys.readouterr().err


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from decodekit.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match="ray"):
        import_ray()


# -- ray engine ---------------------------------------------------------------------------------


def test_ray_run_equals_local_run_for_greedy_with_error_rows(ray_local: Any, tiny_dir: Path,
                                                             tmp_path: Path) -> None:
    source = write_prompts(tmp_path / "in.jsonl", [*PROMPTS[:3], TOO_LONG, *PROMPTS[3:]])
    pipeline = make_pipeline(tiny_dir)
    scale.run(pipeline, source, tmp_path / "local.jsonl")
    summary = scale.run(pipeline, source, tmp_path / "ray.jsonl", engine="ray", replicas=2)
    assert [line for line, _ in summary.errors] == [4]
    records = read_records(tmp_path / "ray.jsonl")
    assert "exceeds the model's context" in records[3]["error"]
    assert_same_records(records, read_records(tmp_path / "local.jsonl"))


def test_cli_ray_engine_with_seeded_sampling_resumes_and_equals_local(ray_local: Any, tiny_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Seeded sampling through ``decodekit run --engine ray --resume``: the prompts the Ray run
    decodes get the records of an uninterrupted local run (batches are cut by input position)."""
    pipeline_file = tmp_path / "p.toml"
    pipeline_file.write_text(f'model = "{tiny_dir}"\nmax_new_tokens = 6\nbatch_size = 2\n'
                             '[strategy]\nname = "sample"\noptions = { seed = 3 }\n', encoding="utf-8")
    source = write_prompts(tmp_path / "in.jsonl", PROMPTS)
    full = tmp_path / "full.jsonl"
    scale.run(Pipeline.from_file(pipeline_file), source, full)
    out = tmp_path / "out.jsonl"
    out.write_text("".join(full.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    status = main(["run", str(pipeline_file), "--input", str(source), "--output", str(out),
                   "--engine", "ray", "--replicas", "2", "--resume"])
    assert status == 0
    assert_same_records(read_records(out), read_records(full))


class CrashOnce:
    """Mixed into a replica: its process exits on the first batch it gets (once per marker)."""

    marker = ""

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed", encoding="utf-8")
            os._exit(1)
        return super().__call__(batch)  # type: ignore[misc]


def test_a_replica_that_dies_is_restarted_and_its_batch_retried(ray_local: Any, tiny_dir: Path,
                                                                tmp_path: Path) -> None:
    from decodekit.ray_engine import Replica, ray_batches

    pipeline = make_pipeline(tiny_dir)
    items = scale.make_items(PROMPTS)
    crashing = type("CrashingReplica", (CrashOnce, Replica), {"marker": str(tmp_path / "crashed")})
    groups = scale.chunks(items, pipeline.spec.batch_size)
    records = [r for batch in ray_batches(pipeline, groups, replicas=1, max_restarts=2, replica=crashing)
               for r in batch]
    assert (tmp_path / "crashed").read_text(encoding="utf-8") == "crashed"
    expected = [r for group in groups for r in scale.decode_chunk(pipeline, group)]
    assert_same_records(records, expected)
