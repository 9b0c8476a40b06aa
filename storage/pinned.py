"""The tables under a root as they were at recorded versions (Delta time travel).

A training run pins the version of every table it reads; reading through `PinnedStore` then
gives the same rows however much was committed since, so a run's data plan, its resume and
its evaluation see exactly what it trained on. Tables not pinned read their latest version,
and writes go to the tables as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from deltalake import DeltaTable

from storage.schemas import RUN_OUTPUT_TABLES, TABLES
from storage.shards import ShardStore

NO_COMMIT = -1  # a pinned table that had no commit yet: it reads as empty


class PinnedStore(ShardStore):
    """A `ShardStore` whose reads default to each pinned table's recorded version."""

    def __init__(self, store: ShardStore, versions: Mapping[str, int]):
        super().__init__(store.location, store.row_group_rows)
        self.versions = dict(versions)

    def snapshot(self, table: str, version: int | None = None) -> DeltaTable | None:
        if version is None and table in self.versions:
            version = self.versions[table]
            if version == NO_COMMIT:
                return None
        return super().snapshot(table, version)


def current_versions(store: ShardStore, tables: Iterable[str] | None = None) -> dict[str, int]:
    """The latest version of each table (default: every table a run reads)."""
    names = tables if tables is not None else input_tables()
    return {table: store.version(table) for table in names}


def input_tables() -> list[str]:
    """Every table a training run may read: all but what runs and orchestration write."""
    return sorted(set(TABLES) - set(RUN_OUTPUT_TABLES))
