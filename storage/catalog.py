"""The DuckDB catalog: one view per table, over exactly the files of its current version.

Local roots keep `catalog.duckdb` in the dataset root, so any DuckDB client can open it;
remote roots (s3://) get an in-memory catalog reading through fsspec. A table's view is rebuilt
whenever its version or the root's location changed since the catalog was last written.
With `versions` ({table: version}, e.g. a training run's pins) the views cover those versions'
files instead, in an in-memory catalog: the shared file keeps describing the current tables.

`read_only_query` serves ad-hoc SQL (`tamer sql`) without letting it write anything: only
SELECT (and EXPLAIN of a SELECT) runs, on a catalog opened read-only, with DuckDB's file access
limited to the dataset root and its configuration locked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import duckdb
import pyarrow as pa

from storage import duck
from storage.pinned import PinnedStore
from storage.schemas import TABLES
from storage.shards import ShardStore

CATALOG_FILE = "catalog.duckdb"
STATE_TABLE = "_tamer_catalog_state"
READING = {duckdb.StatementType.SELECT}  # SHOW, DESCRIBE, SUMMARIZE and FROM-first parse as SELECT
EXPLAIN = re.compile(r"\s*EXPLAIN(\s+ANALYZE)?\s+(?P<inner>.*)", re.IGNORECASE | re.DOTALL)


class WriteRefused(ValueError):
    """A statement in `read_only_query` that could change the catalog, a file or a setting."""


def read_only_query(store: ShardStore, sql: str,
                    versions: Mapping[str, int] | None = None) -> tuple[list[str], list[tuple]]:
    """Run SELECT statements over the catalog views (at `versions`, if given); (column names,
    rows) of the last one.

    Raises WriteRefused before anything runs if any statement is not a read.
    """
    _refuse_writes(sql)
    with connect(store, read_only=True, versions=versions) as con:
        cursor = con.execute(sql)
        return [column[0] for column in cursor.description or []], cursor.fetchall()


def _refuse_writes(sql: str) -> None:
    """DuckDB's own parser classifies each statement; only reads pass."""
    for statement in duckdb.extract_statements(sql):
        kind = _kind(statement)
        if kind not in READING:
            name = f"{kind.name} statements" if kind else "statements it does not recognize"
            raise WriteRefused(f"refused: tamer sql only reads; {name} are not allowed")


def _kind(statement: duckdb.Statement) -> duckdb.StatementType | None:
    """The statement's type, where EXPLAIN ANALYZE X counts as X (it runs X); None if unknown."""
    try:
        kind = statement.type
    except ValueError:  # a type DuckDB's Python enum lacks, e.g. UPDATE EXTENSIONS
        return None
    explained = EXPLAIN.match(statement.query) if kind == duckdb.StatementType.EXPLAIN else None
    if explained:
        inner = duckdb.extract_statements(explained["inner"])
        return _kind(inner[0]) if len(inner) == 1 else None
    return kind


def connect(store: ShardStore, *, read_only: bool = False,
            versions: Mapping[str, int] | None = None) -> duckdb.DuckDBPyConnection:
    """A connection whose views cover every committed shard of every known table (at
    `versions` for the tables it names, the latest for the others).

    read_only: the views are brought up to date first, then the catalog file is reopened
    read-only, DuckDB may touch only files under the root, and its settings are locked.
    """
    con = _connect_current(store if versions is None else PinnedStore(store, versions))
    if not read_only:
        return con
    if _is_file_backed(con):
        con.close()
        con = duckdb.connect(store.location.join(CATALOG_FILE), read_only=True)
    _confine(con, store)
    return con


def _connect_current(store: ShardStore) -> duckdb.DuckDBPyConnection:
    """The catalog file of a local root; in memory for remote roots and pinned versions."""
    location = store.location
    state = _tables_state(store)
    if location.is_local and not isinstance(store, PinnedStore):
        path = location.join(CATALOG_FILE)
        location.fs.makedirs(location.root, exist_ok=True)
        try:
            con = duck.connect(location, path)
        except duckdb.IOException:
            # Another process holds the file (DuckDB allows one writer): work in memory.
            con = duck.connect(location)
    else:
        con = duck.connect(location)
    stored = _stored_state(con)
    if stored != state:
        _rebuild_views(con, store, state, stored)
    return con


def _is_file_backed(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                       ).fetchone()[0] is not None


def _confine(con: duckdb.DuckDBPyConnection, store: ShardStore) -> None:
    """File access only under the root (the views read its shards), then no way back."""
    root = store.location.url(store.location.root).rstrip("/") + "/"
    con.execute("SET allowed_directories = ?", [[root]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _tables_state(store: ShardStore) -> dict[str, str]:
    """Per table, the root in use and its version: a view is rebuilt when either changed, so a
    copied or moved root (catalog file included) reads its own files, never the original's,
    and a stage that committed to two tables rebuilds those two views, not all of them."""
    root = store.location.url(store.location.root)
    return {table: f"{root}@{store.version(table)}" for table in sorted(TABLES)}


def _stored_state(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """What the views were built for; empty for a new catalog or one written before views
    were tracked per table (all its views are rebuilt)."""
    try:
        return dict(con.execute(f"SELECT table_name, state FROM {STATE_TABLE}").fetchall())
    except (duckdb.CatalogException, duckdb.BinderException):
        return {}


def _rebuild_views(con: duckdb.DuckDBPyConnection, store: ShardStore, state: dict[str, str],
                   stored: dict[str, str]) -> None:
    for table in TABLES:
        if stored.get(table) != state[table]:
            create_view(con, store, table)
    con.execute(f"CREATE OR REPLACE TABLE {STATE_TABLE} (table_name VARCHAR, state VARCHAR)")
    con.executemany(f"INSERT INTO {STATE_TABLE} VALUES (?, ?)", list(state.items()))


def create_view(con: duckdb.DuckDBPyConnection, store: ShardStore, table: str,
                paths: list[str] | None = None, temporary: bool = False) -> list[str]:
    """(Re)create the view `table` over the files of the store's version of it, or over `paths`
    (a typed empty view over none); the `filename` column names each row's file. Returns the
    files' paths, oldest first. `temporary`: the connection's own view (on a shared database)."""
    paths = store.shard_paths(table) if paths is None else paths
    con.execute(f"DROP VIEW IF EXISTS {table}")
    con.execute(f"DROP TABLE IF EXISTS {table}")
    schema = TABLES[table]
    if paths:
        files = duck.read_parquet(store.location, paths)
        stored = {name for name, *_ in con.execute(f"DESCRIBE {files}").fetchall()}
        added = [name for name in schema.names if name not in stored]
        # columns the schemas module added after every one of these files was written
        select = f"SELECT *, {', '.join(_typed_nulls(con, schema, added))} FROM ({files})" if added else files
    else:
        select = f"SELECT {', '.join(_typed_nulls(con, schema, schema.names))}, " \
                 "CAST(NULL AS VARCHAR) AS filename WHERE false"
    con.execute(f"CREATE {'TEMP ' if temporary else ''}VIEW {table} AS {select}")
    return paths


def _typed_nulls(con: duckdb.DuckDBPyConnection, schema: pa.Schema, names: list[str]) -> list[str]:
    """`CAST(NULL AS <type>) AS <name>` for the schema's columns `names`, typed as DuckDB reads them."""
    empty = schema.empty_table()  # noqa: F841 - read by DuckDB's replacement scan below
    types = {name: dtype for name, dtype, *_ in con.execute("DESCRIBE SELECT * FROM empty").fetchall()}
    return [f"CAST(NULL AS {types[name]}) AS {name}" for name in names]
