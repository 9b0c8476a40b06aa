"""Append-only Parquet shard tables with an atomic commit and a manifest.

Layout under the dataset root:
    <table>/part-<time>-<id>.parquet   committed shards (never rewritten)
    <table>/_staging/...               shards being written (invisible to readers)
    <table>/_manifest.json             the committed shards: the only thing readers trust

A commit writes the shard to `_staging`, renames it into place, then replaces the manifest
(itself written to a temporary name and renamed). A writer killed at any point leaves the
manifest naming only complete shards, so readers never see a partial one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import Location, open_location
from storage.schemas import DATASET_TABLES, SCHEMA_VERSION_KEY, schema_for

MANIFEST = "_manifest.json"
STAGING = "_staging"
DEFAULT_ROW_GROUP_ROWS = 1024


@dataclass(frozen=True)
class ShardInfo:
    """One committed shard, as recorded in its table's manifest."""

    name: str
    rows: int
    num_bytes: int
    sha256: str  # of the Parquet file's bytes
    committed_at: str
    run_id: str | None = None


class ShardStore:
    """Reads and appends the shard tables under one dataset root URI."""

    def __init__(self, root: str | Location, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS):
        self.location = root if isinstance(root, Location) else open_location(root)
        self.row_group_rows = row_group_rows

    @property
    def fs(self):
        return self.location.fs

    def table_dir(self, table: str) -> str:
        schema_for(table)  # fail early on a typo
        return self.location.join(table)

    # ---- reading -------------------------------------------------------------------
    def shards(self, table: str) -> list[ShardInfo]:
        path = self.location.join(table, MANIFEST)
        if not self.fs.exists(path):
            return []
        with self.fs.open(path, "rb") as handle:
            manifest = json.load(handle)
        return [ShardInfo(**entry) for entry in manifest["shards"]]

    def shard_paths(self, table: str) -> list[str]:
        return [self.location.join(table, info.name) for info in self.shards(table)]

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """All committed rows of a table (only the given columns, if any)."""
        schema = schema_for(table)
        if columns:
            schema = pa.schema([schema.field(name) for name in columns])
        parts = []
        for path in self.shard_paths(table):
            with self.fs.open(path, "rb") as handle:
                part = pq.read_table(handle, columns=columns)
            parts.append(part.select(schema.names).cast(schema))
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts)

    def row_count(self, table: str) -> int:
        return sum(info.rows for info in self.shards(table))

    def fingerprint(self, tables: tuple[str, ...] = DATASET_TABLES) -> str:
        """A stable hash of the committed manifests: the dataset version."""
        digest = hashlib.sha256()
        for table in sorted(tables):
            for info in sorted(self.shards(table), key=lambda item: item.name):
                digest.update(f"{table}/{info.name}:{info.rows}:{info.sha256}\n".encode())
        return digest.hexdigest()[:16]

    # ---- writing -------------------------------------------------------------------
    def write(
        self,
        table: str,
        data: pa.Table,
        *,
        run_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ShardInfo | None:
        """Commit `data` as one new shard of `table`; returns None for an empty table."""
        if data.num_rows == 0:
            return None
        schema = schema_for(table)
        data = data.select(schema.names).cast(schema)
        file_metadata = dict(schema.metadata or {})
        for key, value in (metadata or {}).items():
            file_metadata[f"tamer.{key}".encode()] = value.encode()
        if run_id:
            file_metadata[b"tamer.run_id"] = run_id.encode()
        payload = _parquet_bytes(data.replace_schema_metadata(file_metadata), self.row_group_rows)
        name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
        staged = self.location.join(table, STAGING, name)
        self.fs.makedirs(self.location.join(table, STAGING), exist_ok=True)
        with self.fs.open(staged, "wb") as handle:
            handle.write(payload)
        info = ShardInfo(
            name=name,
            rows=data.num_rows,
            num_bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            committed_at=dt.datetime.now(dt.UTC).isoformat(),
            run_id=run_id,
        )
        with self._table_lock(table):
            self.fs.mv(staged, self.location.join(table, name))
            self._write_manifest(table, [*self.shards(table), info])
        return info

    def sweep_staging(self, table: str, older_than_s: float = 3600.0) -> int:
        """Delete staged files left by killed writers; returns how many were removed."""
        staging = self.location.join(table, STAGING)
        if not self.fs.exists(staging):
            return 0
        removed = 0
        for path in self.fs.ls(staging, detail=False):
            modified = self.fs.modified(path).replace(tzinfo=dt.UTC).timestamp()
            if time.time() - modified > older_than_s:
                self.fs.rm(path)
                removed += 1
        return removed

    def _write_manifest(self, table: str, shards: list[ShardInfo]) -> None:
        manifest = {
            "table": table,
            "schema_version": (schema_for(table).metadata or {})
            .get(SCHEMA_VERSION_KEY, b"1")
            .decode(),
            "shards": [asdict(info) for info in shards],
        }
        final = self.location.join(table, MANIFEST)
        temporary = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(temporary, "w") as handle:
            json.dump(manifest, handle, indent=1)
        self.fs.mv(temporary, final)

    @contextlib.contextmanager
    def _table_lock(self, table: str) -> Iterator[None]:
        """Serialize manifest updates between processes (local roots; remote: best effort)."""
        if not self.location.is_local:
            yield
            return
        directory = self.location.join(table)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _parquet_bytes(data: pa.Table, row_group_rows: int) -> bytes:
    """zstd for every column except binary ones (encoded images: already compressed, so
    zstd and min/max statistics over them would only cost CPU)."""
    binary = {f.name for f in data.schema if pa.types.is_binary(f.type)}
    buffer = io.BytesIO()
    pq.write_table(data, buffer, row_group_size=row_group_rows,
                   compression={f.name: "none" if f.name in binary else "zstd"
                                for f in data.schema},
                   write_statistics=[f.name for f in data.schema if f.name not in binary])
    return buffer.getvalue()
