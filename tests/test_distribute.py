"""The one distributor: the same worker class gives the same rows serially and on Ray (actor
pool or read tasks), and a worker's bad item is retried, quarantined with its reason, and
costs none of the other rows of its chunk."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest
from ray import cloudpickle

from storage.shards import ShardStore
from tasks.distribute import Inputs, Placement, distribute
from tasks.stage import Quarantine, with_retries

SCHEMA = pa.schema([pa.field("outcome", pa.string()), pa.field("source", pa.string()),
                    pa.field("square", pa.int64()), pa.field("reason", pa.string()),
                    pa.field("detail", pa.string())])
RETRIES = 2
BAD = 7  # the item every attempt fails on
# Ray workers cannot import a test module: ship its worker class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Squarer:
    """A small stage worker: squares each item's value, `BAD` raises on every attempt."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.attempts: dict[int, int] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.column("value").to_pylist()
        rows = with_retries(items, self._square, self.retries, self._failed)
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    def _square(self, items: list[int]) -> list[dict]:
        for value in items:
            self.attempts[value] = self.attempts.get(value, 0) + 1
            if value == BAD:
                raise ValueError(f"cannot square {value} (attempt {self.attempts[value]})")
        return [{"outcome": "done", "source": f"item-{v}", "square": v * v} for v in items]

    def _failed(self, value: int, error: Exception) -> dict:
        return {"outcome": "quarantined", "source": f"item-{value}", "reason": "square_failed",
                "detail": f"{type(error).__name__}: {error}"}


def chunks(values: list[int], size: int) -> list[pa.Table]:
    return [pa.table({"value": values[i:i + size]}) for i in range(0, len(values), size)]


def inputs(values: list[int], mode: str) -> Inputs:
    """`mode`: actors (a Ray dataset of the rows) or tasks (one read task per local chunk)."""
    local = chunks(values, 4)

    def dataset():
        import ray

        return ray.data.from_arrow(chunks(values, 5))  # other blocks than the local chunks

    return Inputs(lambda: local, dataset if mode == "actors" else None)


def run(values: list[int], executor: str, mode: str) -> list[dict]:
    placement = Placement(actors=2, num_cpus=0.5, batch_size=3, schema=SCHEMA)
    batches = distribute(Squarer, (RETRIES,), inputs(values, mode), executor=executor,
                         placement=placement)
    return [row for batch in batches for row in batch.to_pylist()]


@pytest.mark.parametrize("mode", ["actors", "tasks"])
def test_both_executors_give_the_same_rows(ray_local, mode):
    values = list(range(10))
    local, on_ray = run(values, "local", mode), run(values, "ray", mode)

    assert sorted(local, key=str) == sorted(on_ray, key=str)
    done = [row["square"] for row in local if row["outcome"] == "done"]
    assert sorted(done) == [v * v for v in values if v != BAD]
    assert [row["source"] for row in local] == [f"item-{v}" for v in values]  # local keeps order


def test_read_tasks_keep_input_order_when_asked(ray_local):
    values = list(range(12))
    placement = Placement(num_cpus=0.5, preserve_order=True, schema=SCHEMA)
    batches = distribute(Squarer, (RETRIES,), Inputs(lambda: chunks(values, 2)), executor="ray",
                         placement=placement)
    assert [row["source"] for b in batches for row in b.to_pylist()] == [
        f"item-{v}" for v in values]
    context = ray_local.data.DataContext.get_current()
    assert context.execution_options.preserve_order is False  # restored for other stages


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failing_item_is_retried_then_quarantined_and_its_chunk_survives(tmp_path, executor,
                                                                         request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    values = [5, 6, BAD, 8]  # the bad item mid-chunk, with good items before and after it
    rows = run(values, executor, "actors")
    store = ShardStore(str(tmp_path / "data"))
    quarantine = Quarantine(store, "square", by="source")
    for row in rows:
        if row["outcome"] == "quarantined":
            quarantine.add(row["source"], None, row["reason"], row["detail"])
    quarantine.commit("run-1")

    assert sorted(row["square"] for row in rows if row["outcome"] == "done") == [25, 36, 64]
    stored = store.read("quarantine").to_pylist()
    assert [(r["stage"], r["source"], r["reason"]) for r in stored] == [
        ("square", f"item-{BAD}", "square_failed")]
    # tried with its batch RETRIES + 1 times, then alone RETRIES + 1 times, then quarantined
    assert stored[0]["detail"] == f"ValueError: cannot square {BAD} (attempt {2 * (RETRIES + 1)})"


def test_worker_arguments_that_do_not_fit_fail_before_any_row():
    with pytest.raises(TypeError, match="retries"):
        list(distribute(Squarer, (), Inputs(lambda: chunks([1], 1)), executor="local"))


def test_an_unknown_executor_is_refused_before_any_work():
    with pytest.raises(ValueError, match="spark"):
        next(distribute(Squarer, (RETRIES,), Inputs(lambda: chunks([1], 1)), executor="spark"))
