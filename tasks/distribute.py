"""The one distributor of every stage: a worker class mapped over a stage's inputs, serially in
this process or on Ray Data, behind one signature.

A stage hands over its worker (a picklable callable class, built once and then called on one
input at a time; it returns rows and never raises for bad input), its inputs listed for both
executors, and how Ray places the worker. Locally the worker is built once and mapped over
`Inputs.local()`. On Ray the same class runs either in an actor pool over `Inputs.ray()` (its
models loaded once per actor) or, when a stage lists no dataset, in one Ray Data read task per
local input: no actors, so Ray's warm worker processes start nothing per run, and each builds
the worker once from constructor arguments that travel as one object reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import ray.data as ray_data
from ray.data.block import BlockMetadata

from tamer.config import RaySettings

Executor = Literal["local", "ray"]


@dataclass(frozen=True)
class Inputs:
    """A stage's inputs for both executors: the same rows, as local batches (or chunks) and as
    a Ray dataset; `ray=None` runs one read task per local input instead of an actor pool."""

    local: Callable[[], Iterable[Any]]
    ray: Callable[[], ray_data.Dataset] | None = None


@dataclass(frozen=True)
class Placement:
    """Where and how the Ray path runs the worker (the local path ignores it)."""

    actors: int = 1  # actor-pool size (with `Inputs.ray`)
    num_cpus: float = 1  # per actor or read task
    num_gpus: float = 0  # per actor
    batch_size: int | None = None  # rows per actor call; None: whole blocks
    preserve_order: bool = False  # outputs in input order (deterministic first-copy-wins)
    batch_format: Literal["pyarrow", "numpy"] = "pyarrow"
    schema: pa.Schema | None = None  # pyarrow outputs are cast to it


def distribute(worker: type, args: tuple, inputs: Inputs, *, executor: Executor,
               placement: Placement = Placement(),
               ray_settings: RaySettings | None = None) -> Iterator[Any]:
    """`worker(*args)` applied to every input; yields its outputs batch by batch."""
    if executor == "local":
        outputs = _local(worker, args, inputs)
    elif executor == "ray":
        outputs = _ray(worker, args, inputs, placement, ray_settings or RaySettings())
    else:
        raise ValueError(f"executor {executor!r}: expected 'local' or 'ray'")
    for batch in outputs:
        yield _cast(batch, placement.schema)


def _local(worker: type, args: tuple, inputs: Inputs) -> Iterator[Any]:
    """The worker built once, mapped in order; a worker's `close()` (if any) ends the run."""
    work = worker(*args)
    try:
        for batch in inputs.local():
            yield work(batch)
    finally:
        if hasattr(work, "close"):
            work.close()


def _ray(worker: type, args: tuple, inputs: Inputs, placement: Placement,
         ray_settings: RaySettings) -> Iterator[Any]:
    import ray

    from tasks.ray_runtime import ensure_ray

    ensure_ray(ray_settings)
    context = ray.data.DataContext.get_current()
    preserve = context.execution_options.preserve_order
    # A dataset copies the context when it is created: set it before, restore it after.
    context.execution_options.preserve_order = placement.preserve_order
    try:
        if inputs.ray is None:
            items = list(inputs.local())
            dataset = ray.data.read_datasource(_WorkerDatasource(items, ray.put((worker, args)),
                                                                 placement.schema),
                                               override_num_blocks=max(1, len(items)),
                                               num_cpus=placement.num_cpus)
        else:
            dataset = inputs.ray().map_batches(
                worker, fn_constructor_args=args, batch_size=placement.batch_size,
                batch_format=placement.batch_format, max_restarts=0,
                compute=ray.data.ActorPoolStrategy(size=placement.actors),
                num_cpus=placement.num_cpus, num_gpus=placement.num_gpus or None)
        yield from dataset.iter_batches(batch_format=placement.batch_format, batch_size=None)
    finally:
        context.execution_options.preserve_order = preserve


def _cast(batch: Any, schema: pa.Schema | None) -> Any:
    """Ray Data may reorder columns and type all-null ones as null: give back the schema."""
    if schema is None or not isinstance(batch, pa.Table):
        return batch
    return batch.select(schema.names).cast(schema)


class _WorkerDatasource(ray_data.Datasource):
    """Ray Data source whose read tasks run the worker: one read task per input yields its
    rows, produced where the input is read, with no separate map stage."""

    def __init__(self, items: list[Any], worker_ref, schema: pa.Schema | None) -> None:
        self.items, self.worker_ref, self.schema = items, worker_ref, schema

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ray_data.ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ray_data.ReadTask(functools.partial(_run_one, item, self.worker_ref), metadata,
                                  schema=self.schema)
                for item in self.items]


def _run_one(item: Any, worker_ref) -> list[pa.Table]:
    """A read task's body: the process's worker (built on its first task) applied to one input."""
    return [_worker_in_process(worker_ref.hex(), worker_ref)(item)]


@functools.lru_cache(maxsize=1)
def _worker_in_process(ref_hex: str, worker_ref) -> Any:
    """One worker per Ray worker process and run (processes are reused across tasks)."""
    import ray

    worker, args = ray.get(worker_ref)
    return worker(*args)
