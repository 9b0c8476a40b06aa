"""What every stage (ingest, caption, embed) shares around its worker: per-item retries before
quarantine, the one quarantine path, and the one shard writer.

A stage's worker turns a unit of work into rows and never raises for bad input; the driver
alone commits, through a `ShardWriter` (full shards as they fill, the rest at the end) and a
`Quarantine` (one commit at the end), so a killed run commits nothing partial.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TypeVar

import pyarrow as pa

from storage.shards import CommitInfo, ShardStore

Item = TypeVar("Item")
Row = TypeVar("Row")


def with_retries(items: Sequence[Item], work: Callable[[Sequence[Item]], list[Row]],
                 retries: int, failed: Callable[[Item, Exception], Row]) -> list[Row]:
    """`work(items)`, tried `retries + 1` times; then each item alone the same way, and only
    the items that still fail become `failed(item, error)`: one bad item costs no good one."""
    error: Exception | None = None
    for _ in range(retries + 1):
        try:
            return work(items)
        except Exception as exc:  # noqa: BLE001 - retried, then narrowed to the bad items
            error = exc
    if len(items) == 1:
        assert error is not None
        return [failed(items[0], error)]
    return [row for item in items for row in with_retries([item], work, retries, failed)]


class Quarantine:
    """A stage run's failed items: every failure counted by reason; recorded once per
    (item, reason) over all runs of the stage; committed in one write by `commit`.

    `by` names the item: "content_sha256" for stored images, "source" for ingest's files
    (a file that never decoded has no content hash).
    """

    def __init__(self, store: ShardStore, stage: str, by: str = "content_sha256") -> None:
        self.store, self.stage, self.by = store, stage, by
        self.rows: list[dict] = []
        self.reasons: dict[str, int] = {}
        self.seen = {(row[by], row["reason"]) for row in
                     store.read("quarantine", ["stage", by, "reason"]).to_pylist()
                     if row["stage"] == stage}

    @property
    def new(self) -> int:
        """Items quarantined by this run for the first time."""
        return len(self.rows)

    def add(self, source: str, content_sha256: str | None, reason: str, detail: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        key = (source if self.by == "source" else content_sha256, reason)
        if key in self.seen:  # already quarantined by a past run (or earlier in this one)
            return
        self.seen.add(key)
        self.rows.append({"stage": self.stage, "source": source, "content_sha256": content_sha256,
                          "reason": reason, "detail": detail,
                          "quarantined_at": dt.datetime.now(dt.UTC)})

    def commit(self, run_id: str) -> None:
        self.store.write("quarantine", pa.Table.from_pylist(self.rows), run_id=run_id)


class ShardWriter:
    """Commits a table's rows in shards of at least `shard_rows` as they arrive, the rest on
    `flush`; `committed` calls back with each shard and its commit (keyed tables may drop
    rows another writer stored first)."""

    def __init__(self, store: ShardStore, table: str, shard_rows: int, run_id: str,
                 metadata: dict[str, str] | None = None,
                 committed: Callable[[pa.Table, CommitInfo], None] | None = None) -> None:
        self.store, self.table, self.shard_rows = store, table, shard_rows
        self.run_id, self.metadata, self.committed = run_id, metadata, committed
        self.pending: list[pa.Table] = []
        self.pending_rows = self.rows = self.shards = 0

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self.pending.append(rows)
            self.pending_rows += rows.num_rows
        if self.pending_rows >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        shard = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        info = self.store.write(self.table, shard, run_id=self.run_id, metadata=self.metadata)
        if info is None:
            return
        self.rows += info.rows
        self.shards += 1 if info.rows else 0
        if self.committed is not None:
            self.committed(shard, info)
