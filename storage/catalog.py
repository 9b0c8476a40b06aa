"""The DuckDB catalog: one view per shard table, over exactly the committed shards.

Local roots keep `catalog.duckdb` in the dataset root, so any DuckDB client can open it;
remote roots (s3://, memory://) get an in-memory catalog reading through fsspec. Views are
rebuilt whenever the manifests changed since the catalog was last written.
"""

from __future__ import annotations

import hashlib

import duckdb
import pyarrow as pa

from storage.schemas import TABLES
from storage.shards import ShardStore

CATALOG_FILE = "catalog.duckdb"
STATE_TABLE = "_tamer_catalog_state"


def connect(store: ShardStore, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection whose views cover every committed shard of every known table."""
    location = store.location
    state = _manifest_state(store)
    if location.is_local:
        path = location.join(CATALOG_FILE)
        location.fs.makedirs(location.root, exist_ok=True)
        try:
            con = duckdb.connect(path)
        except duckdb.IOException:
            # Another process holds the file (DuckDB allows one writer): work in memory.
            con = duckdb.connect()
    else:
        con = duckdb.connect()
        con.register_filesystem(location.fs)
    if _stored_state(con) != state:
        _rebuild_views(con, store, state)
    return con


def _manifest_state(store: ShardStore) -> str:
    digest = hashlib.sha256()
    for table in sorted(TABLES):
        for info in store.shards(table):
            digest.update(f"{table}/{info.name}\n".encode())
    return digest.hexdigest()


def _stored_state(con: duckdb.DuckDBPyConnection) -> str | None:
    try:
        row = con.execute(f"SELECT state FROM {STATE_TABLE}").fetchone()
    except duckdb.CatalogException:
        return None
    return row[0] if row else None


def _rebuild_views(con: duckdb.DuckDBPyConnection, store: ShardStore, state: str) -> None:
    for table, schema in TABLES.items():
        paths = [store.location.url(path) for path in store.shard_paths(table)]
        con.execute(f"DROP VIEW IF EXISTS {table}")
        con.execute(f"DROP TABLE IF EXISTS {table}")
        if paths:
            files = ", ".join(_quote(path) for path in paths)
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}], "
                "union_by_name = true, filename = true)"
            )
        else:
            con.execute(f"CREATE VIEW {table} AS {_empty_select(con, schema)}")
    con.execute(f"CREATE OR REPLACE TABLE {STATE_TABLE} (state VARCHAR)")
    con.execute(f"INSERT INTO {STATE_TABLE} VALUES (?)", [state])


def _empty_select(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> str:
    """A typed zero-row SELECT with the table's columns (plus `filename`, like the views)."""
    empty = schema.empty_table()  # noqa: F841 - read by DuckDB's replacement scan below
    columns = con.execute("DESCRIBE SELECT * FROM empty").fetchall()
    casts = [f"CAST(NULL AS {dtype}) AS {name}" for name, dtype, *_ in columns]
    casts.append("CAST(NULL AS VARCHAR) AS filename")
    return f"SELECT {', '.join(casts)} WHERE false"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
