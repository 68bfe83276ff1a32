"""The Ray engine of :func:`decodekit.scale.run`: batches of prompts on an actor pool of replicas.

The prompts become a Ray Data dataset with one row per decoding batch (cut by input position,
as the local engine cuts them); ``map_batches`` sends the rows to an actor pool of
:class:`Replica` actors, each of which builds the pipeline's model once and decodes the
batches it is given. Ray restarts a replica that dies (``max_restarts``) and retries the batch
it was decoding (``max_task_retries``); the dataset keeps input order, so records come back in
the order of the prompts and are written as they arrive.

Install with ``pip install 'decodekit[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from decodekit.errors import MissingDependencyError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.pipeline import Pipeline
    from decodekit.scale import PromptItem

MAX_BLOCKS = 1024


def import_ray() -> Any:
    """The ``ray`` module with Ray Data.

    Raises
    ------
    MissingDependencyError
        When Ray (with its ``data`` extra) is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("ray", extra="ray", feature="the ray engine") from None
    return ray


class Replica:
    """One model replica: builds the pipeline (and loads its model) once, then decodes batches.

    Parameters
    ----------
    settings
        The pipeline's settings (:meth:`decodekit.pipeline.Pipeline.to_dict`); default: the
        class attribute ``settings`` (see :func:`replica_class`).
    """

    settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        from decodekit.pipeline import Pipeline

        self.pipeline = Pipeline.from_dict(self.settings if settings is None else settings)
        self.pipeline.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """Decode the prompt batches of ``batch["items"]``; one JSON record per prompt."""
        from decodekit.scale import PromptItem, decode_chunk

        records: list[str] = []
        for payload in batch["items"]:
            items = [PromptItem(**data) for data in json.loads(payload)]
            records += [json.dumps(r, ensure_ascii=False, default=str)
                        for r in decode_chunk(self.pipeline, items)]
        return {"record": records}


def replica_class(settings: dict[str, Any], base: type[Replica] = Replica) -> type[Replica]:
    """A subclass of ``base`` that carries ``settings``, so that Ray can restart its actors
    without constructor arguments held in the object store."""
    return type(base.__name__, (base,), {"settings": settings, "__module__": base.__module__})


def gpus_per_replica(pipeline: Pipeline) -> float:
    """1 when the pipeline's backend ``device`` option names a CUDA device, else 0."""
    device = str(pipeline.spec.backend.options.get("device", ""))
    return 1.0 if device.startswith("cuda") else 0.0


def _connect(ray: Any, address: str | None) -> bool:
    """Initialise Ray unless it already is; ``True`` when this call started it."""
    if ray.is_initialized():
        return False
    # replicas' own output stays in Ray's log files: it could interleave with records on stdout
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False}
    try:
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise UserError(f"cannot start or reach {where}: {' '.join(str(exc).split())}") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset progress lines
    return True


def ray_batches(pipeline: Pipeline, groups: Sequence[Sequence[PromptItem]], *, replicas: int = 1,
                address: str | None = None, num_gpus: float | None = None, num_cpus: float | None = None,
                max_restarts: int = 3, replica: type[Replica] = Replica) -> Iterator[list[dict[str, Any]]]:
    """Decode the prompt batches ``groups`` on ``replicas`` Ray actors; yields records in order.

    Parameters
    ----------
    pipeline
        The pipeline; each replica rebuilds it from its settings (a model path must exist on
        every node).
    groups
        Decoding batches, in input order (:func:`decodekit.scale.chunks`).
    replicas
        Size of the actor pool.
    address
        Ray cluster address; ``None`` starts a local Ray with this machine's cores (or uses the
        Ray already initialised in this process).
    num_gpus
        GPUs per replica (default: :func:`gpus_per_replica`).
    num_cpus
        CPUs per replica, which Ray also makes its thread count (default: 1 with a GPU, else
        the cluster's CPUs divided among the replicas, at most one node's).
    max_restarts
        Restarts of a dead replica; its batch is retried as many times.
    replica
        The actor class: :class:`Replica` or a subclass (e.g. one that adds per-batch work).

    Yields
    ------
    list of dict
        The records of each batch of prompts.
    """
    ray = import_ray()
    started = _connect(ray, address)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = bool(os.isatty(2))
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        gpus = gpus_per_replica(pipeline) if num_gpus is None else float(num_gpus)
        node_cpus = max([float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
                        or [total_cpus])
        cpus = max(1.0, min(total_cpus // replicas, node_cpus)) if gpus == 0 else 1.0
        cpus = cpus if num_cpus is None else float(num_cpus)
        rows = [{"items": json.dumps([item.to_json() for item in group])} for group in groups]
        # blocks are what replicas are handed: enough of them to balance, each written as it ends
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        with warnings.catch_warnings():  # restart options are passed as Ray remote arguments
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = dataset.map_batches(
                replica_class(pipeline.to_dict(), replica), batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=replicas), num_cpus=cpus, num_gpus=gpus,
                max_restarts=max_restarts, max_task_retries=max_restarts)
        for batch in decoded.iter_batches(batch_size=None, batch_format="numpy"):
            yield [json.loads(text) for text in batch["record"]]
    finally:
        if started:
            ray.shutdown()
