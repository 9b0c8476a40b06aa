"""Append-only tables under a dataset root, each one a Delta Lake table (see storage/delta.py).

Layout under the dataset root:
    <table>/_delta_log/...        the transaction log: the only thing readers trust
    <table>/part-*.parquet        data files (zstd), named by the log once committed

A write is one Delta commit, so a writer killed at any point leaves the table at its last
version; files it wrote without committing are never read (`tamer maintain` removes them).
The dataset version (`fingerprint`) is a function of the dataset tables' versions.
Roots written by the older `_manifest.json` store are refused until `tamer migrate` ran.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from storage import delta
from storage.fs import Location, open_location
from storage.keys import KeyIndex
from storage.schemas import DATASET_TABLES, SCHEMA_VERSION_KEY, schema_for

LEGACY_MANIFEST = "_manifest.json"
DEFAULT_ROW_GROUP_ROWS = 1024
UNIQUE_KEYS = {"images": "image_id"}  # an image id is stored once, whatever the concurrency


class LegacyRoot(RuntimeError):
    """A table still in the `_manifest.json` format of older tamer versions."""


class BrokenTable(RuntimeError):
    """A committed file that is missing or differs from what the log recorded."""


@dataclass(frozen=True)
class ShardInfo:
    """One committed data file, as recorded in its table's log."""

    name: str  # relative to the table folder
    rows: int
    num_bytes: int
    committed_at: str


@dataclass(frozen=True)
class CommitInfo:
    """What one `write` committed; `dropped` are keys skipped because the table had them."""

    rows: int
    dropped: tuple[str, ...] = ()


class ShardStore:
    """Reads and appends the tables under one dataset root URI."""

    def __init__(self, root: str | Location, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS):
        self.location = root if isinstance(root, Location) else open_location(root)
        self.row_group_rows = row_group_rows
        self._keys: dict[tuple[str, str], KeyIndex] = {}  # (table, key) -> its files' keys

    @property
    def fs(self):
        return self.location.fs

    def table_dir(self, table: str) -> str:
        schema_for(table)  # fail early on a typo
        return self.location.join(table)

    # ---- reading -------------------------------------------------------------------
    def snapshot(self, table: str, version: int | None = None) -> DeltaTable | None:
        """The table's Delta snapshot (latest, or `version`); None before its first commit."""
        snapshot = delta.open_table(self.location, table, version)
        if snapshot is None and self.fs.exists(self.location.join(table, LEGACY_MANIFEST)):
            raise LegacyRoot(f"{self.location.join(table)} is in the old _manifest.json format; "
                             f"run `tamer migrate --root {self.location.uri}` to convert it")
        return snapshot

    def version(self, table: str) -> int:
        """The table's current version; -1 before its first commit."""
        snapshot = self.snapshot(table)
        return -1 if snapshot is None else snapshot.version()

    def shards(self, table: str, version: int | None = None) -> list[ShardInfo]:
        """The table's data files at `version` (latest if None), oldest first."""
        schema_for(table)
        snapshot = self.snapshot(table, version)
        return [] if snapshot is None else files_of(snapshot)

    def shard_paths(self, table: str, version: int | None = None) -> list[str]:
        return [self.location.join(table, info.name) for info in self.shards(table, version)]

    def read(self, table: str, columns: list[str] | None = None,
             version: int | None = None) -> pa.Table:
        """All committed rows of a table (only the given columns, if any)."""
        schema = schema_for(table)
        if columns:
            schema = pa.schema([schema.field(name) for name in columns])
        parts = [self._read_file(table, info, schema) for info in self.shards(table, version)]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def _read_file(self, table: str, info: ShardInfo, schema: pa.Schema) -> pa.Table:
        """One committed file, checked against the log's row count; BrokenTable names it."""
        path = self.location.join(table, info.name)
        try:
            with self.fs.open(path, "rb") as handle:
                stored = set(pq.read_schema(handle).names)
                handle.seek(0)
                part = pq.read_table(handle, columns=[name for name in schema.names if name in stored])
        except (OSError, pa.ArrowException) as exc:
            raise BrokenTable(f"{self.location.url(path)}: unreadable committed file ({exc})"
                              ) from exc
        if part.num_rows != info.rows:
            raise BrokenTable(f"{self.location.url(path)}: {part.num_rows} rows, the log "
                              f"recorded {info.rows}")
        for field in schema:  # columns added to the schema after this file was written
            if field.name not in stored and field.nullable:
                part = part.append_column(field.name, pa.nulls(part.num_rows, field.type))
        return part.select(schema.names).cast(schema)

    def stored_keys(self, snapshot: DeltaTable, key: str, candidates: pa.Array) -> set[str]:
        """The `candidates` a snapshot already holds under `key` (storage/keys.py)."""
        table = _table_name(snapshot)
        index = self._keys.setdefault((table, key), KeyIndex(self.location, key))
        return index.stored([self.location.join(table, info.name) for info in files_of(snapshot)],
                            candidates)

    def row_count(self, table: str) -> int:
        return sum(info.rows for info in self.shards(table))

    def fingerprint(self, tables: tuple[str, ...] = DATASET_TABLES) -> str:
        """A stable hash of the dataset tables' versions: the dataset version."""
        digest = hashlib.sha256()
        for table in sorted(tables):
            digest.update(f"{table}:{self.version(table)}\n".encode())
        return digest.hexdigest()[:16]

    # ---- writing -------------------------------------------------------------------
    def write(
        self,
        table: str,
        data: pa.Table,
        *,
        run_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> CommitInfo | None:
        """Commit `data` to `table` as one version; None for an empty table.

        `run_id` and `metadata` go into the commit's info (`tamer.<key>`), with the schema
        version. Keyed tables (UNIQUE_KEYS) skip rows whose key is already stored.
        """
        if data.num_rows == 0:
            return None
        self.snapshot(table)  # refuses a legacy table before anything is written
        schema = schema_for(table)
        commit_metadata = {f"tamer.{key}": value for key, value in (metadata or {}).items()}
        commit_metadata[SCHEMA_VERSION_KEY.decode()] = (schema.metadata or {}).get(
            SCHEMA_VERSION_KEY, b"1").decode()
        if run_id:
            commit_metadata["tamer.run_id"] = run_id
        rows, dropped = delta.commit(
            self.location, table, _conform(data, schema), schema=schema,
            metadata=commit_metadata, row_group_rows=self.row_group_rows,
            key=UNIQUE_KEYS.get(table), stored_keys=self.stored_keys)
        return CommitInfo(rows=rows, dropped=tuple(dropped))


def files_of(snapshot: DeltaTable) -> list[ShardInfo]:
    """The data files of a snapshot from its log, oldest first."""
    actions = pa.table(snapshot.get_add_actions(flatten=True)).select(
        ["path", "size_bytes", "modification_time", "num_records"]).to_pylist()
    actions.sort(key=lambda action: (action["modification_time"], action["path"]))
    return [ShardInfo(name=action["path"], rows=action["num_records"],
                      num_bytes=action["size_bytes"],
                      committed_at=dt.datetime.fromtimestamp(
                          action["modification_time"] / 1000, dt.UTC).isoformat())
            for action in actions]


def _table_name(snapshot: DeltaTable) -> str:
    return snapshot.table_uri.rstrip("/").rsplit("/", 1)[-1]


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """`data` in the schema's column order and types; a nullable column it lacks (one added to
    the schema after its writer was written) is null, a required one is refused."""
    for field in schema:
        if field.name not in data.column_names:
            if not field.nullable:
                raise KeyError(f"rows lack the required column {field.name!r}")
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data.select(schema.names).cast(schema)
