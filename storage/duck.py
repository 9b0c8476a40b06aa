"""DuckDB over a root's files: an in-memory connection that can read them (fsspec registered
for remote roots) and the `read_parquet` of a list of files. Shared by the catalog, the named
queries and the keyed commit's dedupe, so every reader opens files the same way."""

from __future__ import annotations

import duckdb

from storage.fs import Location


def connect(location: Location, path: str | None = None) -> duckdb.DuckDBPyConnection:
    """A connection (in memory, or the database file at `path`) that reads the root's files."""
    con = duckdb.connect(path) if path else duckdb.connect()
    if not location.is_local:
        con.register_filesystem(location.fs)
    return con


def read_parquet(location: Location, paths: list[str], columns: str = "*") -> str:
    """`SELECT columns FROM read_parquet([...])` over files of the root, with a `filename`
    column (the file's URL); only the named columns are read."""
    files = ", ".join(quote(location.url(path)) for path in paths)
    return (f"SELECT {columns} FROM read_parquet([{files}], union_by_name = true, "
            "filename = true)")


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
