"""Batch runs of a pipeline over many prompts, on this machine or on a Ray cluster.

:func:`run` reads prompts (a JSONL file or a list), decodes them in batches of the pipeline's
``batch_size`` and writes one record per prompt, in input order, to a JSONL file (or a Parquet
file, chosen by the ``.parquet`` extension). ``engine="local"`` decodes in this process;
``engine="ray"`` runs the same batches on an actor pool of model replicas with Ray Data (see
:mod:`decodekit.ray_engine`); both write the same records::

    from decodekit.pipeline import Pipeline
    from decodekit import scale

    summary = scale.run(Pipeline.from_file("extract.toml"), "prompts.jsonl", "out.jsonl",
                        engine="ray", replicas=4, resume=True)

Each record holds the prompt's ``id`` (when its input line has one), its ``index`` among the
prompts, and the fields of :meth:`decodekit.generation.Generation.as_dict`. A prompt that cannot
be decoded (too long for the model's context, token ids outside the vocabulary...) gets a record
with an ``error`` field instead of stopping the run. With ``resume=True`` prompts whose key (the
``id``, else the ``index``) is already in the output are skipped and new records are appended.

Batches are cut by position in the input (prompts ``0..batch_size-1``, then the next
``batch_size``...), also when resuming, so that a resumed or distributed run decodes the same
batches as one uninterrupted local run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from decodekit.errors import InputError, MissingDependencyError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.generation import Generation
    from decodekit.pipeline import Pipeline

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")
Key = tuple[str, Any]


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a batch run.

    Attributes
    ----------
    index
        Its position among all prompts of the input (0-based).
    prompt
        Text or token ids.
    extra
        Fields copied to its record (the input line's ``id``).
    line
        Its line in the input file (for messages; the index + 1 for a list of prompts).
    """

    index: int
    prompt: str | list[int]
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    @property
    def key(self) -> Key:
        """The stable key used by ``resume``: the ``id`` when given, else the index."""
        return record_key({**self.extra, "index": self.index})

    def to_json(self) -> dict[str, Any]:
        """Plain data, to send to a replica."""
        return {"index": self.index, "prompt": self.prompt, "extra": self.extra, "line": self.line}


@dataclass
class RunSummary:
    """What a batch run did.

    Attributes
    ----------
    total
        Prompts in the input.
    skipped
        Prompts skipped because the output already held them (``resume``).
    written
        Records written by this run.
    errors
        ``(line, message)`` of each prompt that got an error record.
    """

    total: int = 0
    skipped: int = 0
    written: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def record_key(record: Mapping[str, Any]) -> Key:
    """The resume key of an output record (or of an item's fields): ``id``, else ``index``.

    Raises
    ------
    InputError
        When the record has neither.
    """
    if "id" in record:
        return ("id", json.dumps(record["id"], sort_keys=True))
    if "index" in record:
        return ("index", record["index"])
    raise InputError('an output record has neither an "id" nor an "index" field')


def make_items(prompts: str | Path | Iterable[Any]) -> list[PromptItem]:
    """Prompt items from a JSONL file path, or from a list of prompts, ``{"prompt", "id"}`` dicts
    or :class:`PromptItem` objects.

    Raises
    ------
    InputError
        For an unreadable file, an invalid line or prompt, or no prompts at all.
    """
    from decodekit.cli import read_prompts

    if isinstance(prompts, (str, Path)):
        triples = read_prompts(str(prompts))
        return [PromptItem(i, p, extra, line) for i, (p, extra, line) in enumerate(triples)]
    items = []
    for i, value in enumerate(prompts):
        if isinstance(value, PromptItem):
            items.append(value)
            continue
        extra: dict[str, Any] = {}
        if isinstance(value, Mapping):
            if "prompt" not in value:
                raise InputError(f'prompt {i}: a mapping needs a "prompt" field, got keys {sorted(value)}')
            if "id" in value:
                extra["id"] = value["id"]
            value = value["prompt"]
        ok = (isinstance(value, str) and bool(value)) or (isinstance(value, list) and bool(value) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in value))
        if not ok:
            raise InputError(f"prompt {i}: a prompt must be a non-empty string or list of token ids, "
                             f"got {value!r:.60}")
        items.append(PromptItem(i, value, extra, i + 1))
    if not items:
        raise InputError("no prompts given")
    return items


def chunks(items: Sequence[PromptItem], batch_size: int) -> list[list[PromptItem]]:
    """Group items into decoding batches by input position: ``index // batch_size``."""
    groups: dict[int, list[PromptItem]] = {}
    for item in items:
        groups.setdefault(item.index // batch_size, []).append(item)
    return [groups[k] for k in sorted(groups)]


# -- decoding one batch -------------------------------------------------------------------------


def success_record(item: PromptItem, generation: Generation) -> dict[str, Any]:
    """The output record of a decoded prompt."""
    return {**item.extra, "index": item.index, **generation.as_dict()}


def error_record(item: PromptItem, message: str) -> dict[str, Any]:
    """The output record of a prompt that could not be decoded."""
    return {**item.extra, "index": item.index, "prompt": item.prompt, "error": message}


def _message(exc: BaseException) -> str:
    from decodekit.errors import UserError as _UserError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, _UserError) else f"{type(exc).__name__}: {text}"


def _precheck(pipeline: Pipeline, item: PromptItem) -> str | None:
    """Why this prompt cannot be decoded (tokenization or context length), or ``None``."""
    from decodekit.loop import tokenize_prompts

    backend = pipeline.load().backend
    spec = pipeline.spec
    try:
        ids = tokenize_prompts(backend, [item.prompt], chat=spec.chat, system_prompt=spec.system_prompt)[0]
    except InputError as exc:
        return _message(exc)
    limit = backend.max_context
    if limit is not None and len(ids) + spec.max_new_tokens > limit:
        return (f"the prompt has {len(ids)} tokens; with max_new_tokens={spec.max_new_tokens} that "
                f"exceeds the model's context of {limit} tokens")
    return None


def decode_chunk(pipeline: Pipeline, items: Sequence[PromptItem]) -> list[dict[str, Any]]:
    """Decode one batch of prompts together; one record per prompt, in order.

    When the batch fails, prompts that cannot be decoded (checked one by one) get error
    records and the others are decoded again as a batch; a failure no check explains is
    narrowed down by decoding the prompts one at a time.
    """
    from decodekit.api import generate

    model = pipeline.load()
    try:
        prompts: list[Any] = [item.prompt for item in items]
        result = generate(prompts, model=model, **pipeline.generate_kwargs())
    except Exception as exc:  # noqa: BLE001 - a failing prompt becomes an error record
        if len(items) == 1:
            return [error_record(items[0], _message(exc))]
        problems = {item.index: _precheck(pipeline, item) for item in items}
        good = [item for item in items if problems[item.index] is None]
        if len(good) == len(items):  # nothing explains it: one prompt at a time
            return [r for item in items for r in decode_chunk(pipeline, [item])]
        decoded = {r["index"]: r for r in decode_chunk(pipeline, good)} if good else {}
        return [decoded[item.index] if item.index in decoded
                else error_record(item, str(problems[item.index])) for item in items]
    generations = result if isinstance(result, list) else [result]
    return [success_record(item, g) for item, g in zip(items, generations, strict=True)]


# -- output -------------------------------------------------------------------------------------


def _is_parquet(path: str | None) -> bool:
    return path is not None and path.lower().endswith((".parquet", ".pq"))


def read_done(path: str | Path) -> list[dict[str, Any]]:
    """Records already in an output file (JSONL or Parquet); ``[]`` when it does not exist.

    An incomplete last JSONL line (a run stopped while writing it) is cut off the file.

    Raises
    ------
    UserError
        When a line is not a JSON object, naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    if _is_parquet(str(path)):
        pq = _parquet()
        return pq.read_table(path).to_pylist()
    raw = path.read_bytes()
    complete = raw[:raw.rfind(b"\n") + 1]
    records = []
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: cannot resume: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: cannot resume: expected a JSON object per line")
        records.append(record)
    if len(complete) < len(raw):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    return records


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDependencyError("pyarrow", extra="ray", feature="Parquet output") from None
    return pq


class _Writer:
    """Writes records as JSONL lines (flushed per batch) or, at the end, one Parquet file."""

    def __init__(self, path: str | None, *, append: bool, text: bool, previous: list[dict[str, Any]],
                 stdout: IO[str] | None = None) -> None:
        self.path = path
        self.text = text
        self.parquet = _is_parquet(path)
        self.rows: list[dict[str, Any]] = list(previous) if self.parquet else []
        if self.parquet:
            _parquet()
            self.handle: IO[str] | None = None
        elif path is None or path == "-":
            self.handle = stdout or sys.stdout
        else:
            try:
                self.handle = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise UserError(f"cannot write output file {path!r}: {exc.strerror or exc}") from None

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.parquet:
            self.rows.extend(records)
            return
        assert self.handle is not None
        if self.text:
            lines = "".join(("" if "error" in r else r["text"]) + "\n" for r in records)
        else:
            lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        self.handle.write(lines)
        self.handle.flush()

    def close(self) -> None:
        if self.parquet and self.path is not None:
            _write_parquet(self.rows, self.path)
        elif self.handle is not None and self.path not in (None, "-"):
            self.handle.close()


def _write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]

    pq = _parquet()
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    full = [{name: row.get(name) for name in columns} for row in rows]
    try:
        table = pa.Table.from_pylist(full)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"cannot write Parquet file {path!r}: {exc} (a field holds values of different "
                        f"types, e.g. text and token-id prompts; write JSONL instead)") from None
    try:
        pq.write_table(table, path)
    except OSError as exc:
        raise UserError(f"cannot write output file {path!r}: {exc.strerror or exc}") from None


# -- running ------------------------------------------------------------------------------------


def _local_batches(pipeline: Pipeline, groups: list[list[PromptItem]]) -> Iterator[list[dict[str, Any]]]:
    pipeline.load()
    for group in groups:
        yield decode_chunk(pipeline, group)


def run(pipeline: Pipeline, prompts: str | Path | Iterable[Any], output: str | Path | None, *,
        engine: Engine = "local", replicas: int = 1, ray_address: str | None = None,
        resume: bool = False, num_gpus: float | None = None, num_cpus: float | None = None,
        max_restarts: int = 3,
        output_format: Literal["jsonl", "text"] | None = None,
        progress: Callable[[int], None] | None = None) -> RunSummary:
    """Decode every prompt with ``pipeline`` and write one record per prompt, in input order.

    Parameters
    ----------
    pipeline
        The pipeline (model, strategy, processors, ``batch_size``...).
    prompts
        A JSONL file path, or a list of prompts (strings, token-id lists, or mappings with
        ``"prompt"`` and optionally ``"id"``).
    output
        A ``.jsonl`` file, a ``.parquet`` file, or ``None``/``"-"`` for standard output.
    engine
        ``"local"`` (this process) or ``"ray"`` (an actor pool of model replicas).
    replicas
        Model replicas (Ray actors); only with ``engine="ray"``.
    ray_address
        Address of an existing Ray cluster (default: start a local Ray with this machine's
        cores, or use the Ray already initialised in this process).
    resume
        Skip prompts whose key (``id``, else ``index``) is already in ``output`` and append.
    num_gpus
        GPUs per replica (default: 1 when the backend's ``device`` option names CUDA, else 0).
    num_cpus
        CPUs (and threads) per replica (default: 1 with a GPU, else the cluster's CPUs divided
        among the replicas, at most one node's).
    max_restarts
        How many times Ray restarts a replica that died (its batch is retried each time).
    output_format
        ``"jsonl"`` records or ``"text"`` (one line of text per prompt, empty for a failed
        one); default: the pipeline's ``output_format``. Parquet files always get records.
    progress
        Called with the number of prompts written after each batch.

    Returns
    -------
    RunSummary

    Raises
    ------
    UserError
        For invalid settings (unknown engine, ``replicas < 1``, ``resume`` without an output
        file or with text output), unreadable prompts, or a missing Ray installation.
    """
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise UserError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if engine == "local" and (replicas != 1 or ray_address is not None):
        raise UserError("replicas and a Ray address need the ray engine (--engine ray)")
    out = None if output is None or str(output) == "-" else str(output)
    text = (output_format or pipeline.spec.output_format) == "text" and not _is_parquet(out)
    if resume and (out is None or text):
        raise UserError("resume needs an output file of JSONL or Parquet records (not standard output "
                        "or output_format = 'text')")
    items = make_items(prompts)
    previous = read_done(out) if resume and out is not None else []
    done = {record_key(r) for r in previous}
    todo = [item for item in items if item.key not in done]
    summary = RunSummary(total=len(items), skipped=len(items) - len(todo))
    groups = chunks(todo, pipeline.spec.batch_size)
    writer = _Writer(out, append=resume, text=text, previous=previous)
    try:
        batches: Iterable[list[dict[str, Any]]] = ()
        if engine == "ray" and groups:
            from decodekit.ray_engine import ray_batches

            batches = ray_batches(pipeline, groups, replicas=replicas, address=ray_address,
                                  num_gpus=num_gpus, num_cpus=num_cpus, max_restarts=max_restarts)
        elif groups:
            batches = _local_batches(pipeline, groups)
        lines = {item.index: item.line for item in todo}
        for records in batches:
            writer.write(records)
            summary.written += len(records)
            summary.errors += [(lines[r["index"]], r["error"]) for r in records if "error" in r]
            if progress is not None:
                progress(len(records))
    finally:
        writer.close()
    return summary
