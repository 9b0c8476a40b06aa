"""The keys of a keyed table's committed files, held in DuckDB: a keyed commit's dedupe.

A commit to `images` must drop the ids the version it lands on already holds. The key column
of each committed file is loaded once per process into an in-memory DuckDB table (never into
Python objects); each commit then semi-joins its candidates against the keys of exactly the
files of the version it commits on top of, and only the matches come back. Files never change
once committed, so a long ingest reads only the files committed since its previous commit.
Delta's per-file min/max statistics cannot skip files here: ids are sha256 hashes, so every
file's range spans nearly all of them.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from storage import duck
from storage.fs import Location


class KeyIndex:
    """The `key` values of the files of one table that this process has seen."""

    def __init__(self, location: Location, key: str):
        self.location, self.key = location, key
        self._files: dict[str, int] = {}  # file URL -> its number in the `keys` table
        self._con: duckdb.DuckDBPyConnection | None = None

    def __getstate__(self) -> dict:
        """Pickled (e.g. to a Ray worker) without the connection; the copy starts cold."""
        return {"location": self.location, "key": self.key, "_files": {}, "_con": None}

    def stored(self, paths: list[str], candidates: pa.Array) -> set[str]:
        """The `candidates` that the files at `paths` hold under the key."""
        if not paths:
            return set()
        con = self._connection()
        urls = [self.location.url(path) for path in paths]
        self._load([path for path, url in zip(paths, urls) if url not in self._files])
        con.register("version_files", pa.table({"file": [self._files[url] for url in urls]}))
        con.register("candidates", pa.table({"value": candidates}))
        try:
            found = con.execute("SELECT DISTINCT value FROM keys SEMI JOIN version_files "
                                "USING (file) SEMI JOIN candidates USING (value)").fetchall()
        finally:
            con.unregister("version_files")
            con.unregister("candidates")
        return {value for (value,) in found}

    def _load(self, paths: list[str]) -> None:
        """Add the key column of files not loaded yet, all in one query."""
        if not paths:
            return
        urls = [self.location.url(path) for path in paths]
        numbers = list(range(len(self._files), len(self._files) + len(paths)))
        con = self._connection()
        con.register("new_files", pa.table({"filename": urls, "file": numbers}))
        try:
            con.execute(f"INSERT INTO keys SELECT n.file, r.{self.key} FROM "
                        f"({duck.read_parquet(self.location, paths, f'{self.key}, filename')}) r "
                        "JOIN new_files n USING (filename)")
        finally:
            con.unregister("new_files")
        self._files.update(zip(urls, numbers))

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duck.connect(self.location)
            self._con.execute("CREATE TABLE keys (file INTEGER, value VARCHAR)")
        return self._con
