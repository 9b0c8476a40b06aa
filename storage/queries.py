"""Named queries over the catalog views: what a stage has left to do, and one query per
"latest" question. The stages and `tamer stats` share these definitions.

"What is left" is one anti-join in DuckDB: images minus those done under the stage's key
minus those the stage quarantined as undecodable (ids are content hashes, so they never
will decode). Only the key columns are read, never the image bytes, and only the ids to do
come back to Python. Views cover the files of the store's version of each table, so a
`PinnedStore` (a training run's pins) answers as of those versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from storage import duck
from storage.catalog import create_view
from storage.schemas import schema_for
from storage.shards import ShardStore

# The newest caption of each image (a row with a composed caption; newest `created_at`):
# what training, text embedding, the index's metadata and `tamer stats` read.
LATEST_CAPTIONS = (
    "SELECT * EXCLUDE (filename) FROM captions WHERE composed_caption <> '' "
    "QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY created_at DESC) = 1")

# The newest vector of each image for one kind and model (newest `embedded_at`).
LATEST_EMBEDDINGS = (
    "SELECT * EXCLUDE (filename) FROM embeddings WHERE kind = $kind AND model_id = $model_id "
    "QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY embedded_at DESC) = 1")

# The rows of a snapshot table's (subject_groups, pairs) newest snapshot.
_LATEST_SNAPSHOT = ("SELECT * EXCLUDE (filename) FROM {0} WHERE snapshot = "
                    "(SELECT snapshot FROM {0} ORDER BY created_at DESC LIMIT 1)")

# The most recently built kNN index (newest `built_at`): what `tamer search` and the app query.
LATEST_INDEX = "SELECT * EXCLUDE (filename) FROM indexes ORDER BY built_at DESC LIMIT 1"

# Images a stage still has to do: not done under its key, not known undecodable to it.
_IMAGES_LEFT = (
    "SELECT filename, image_id FROM images i "
    "WHERE NOT EXISTS (SELECT 1 FROM ({done}) d WHERE d.image_id = i.image_id) "
    "AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.stage = $stage "
    "AND q.reason = 'undecodable' AND q.content_sha256 = i.image_id)")


@dataclass(frozen=True)
class Done:
    """The ids a stage has done under its key: a query over one table, with named parameters."""

    table: str
    sql: str


CAPTIONED = Done("captions", "SELECT image_id FROM captions WHERE captioner_id = $captioner_id "
                             "AND clip_id = $clip_id AND config_hash = $config_hash")
EMBEDDED = Done("embeddings", "SELECT image_id FROM embeddings WHERE kind = 'image' "
                              "AND config_hash = $config_hash")

# Latest captions whose text vector (hash from `text_hashes`) is not stored yet.
_TEXTS_LEFT = (
    f"SELECT l.image_id, l.composed_caption AS text, h.text_hash AS config_hash "
    f"FROM ({LATEST_CAPTIONS}) l JOIN text_hashes h ON l.config_hash = h.caption_hash "
    f"WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.kind = 'text' "
    f"AND e.image_id = l.image_id AND e.config_hash = h.text_hash) ORDER BY l.image_id")


@dataclass(frozen=True)
class ImagesLeft:
    """The images a stage has left: images file path -> its ids to do (files with none
    omitted, oldest file first), out of `total` committed images."""

    files: dict[str, list[str]]
    total: int

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.files.values())


def latest_snapshot_sql(table: str) -> str:
    """The query of `table`'s newest snapshot rows (a snapshot table: subject_groups, pairs)."""
    if "snapshot" not in schema_for(table).names:
        raise ValueError(f"{table} is not a snapshot table")
    return _LATEST_SNAPSHOT.format(table)


@contextmanager
def views(store: ShardStore, *tables: str) -> Iterator[tuple[duckdb.DuckDBPyConnection,
                                                             dict[str, list[str]]]]:
    """An in-memory connection with a view per named table (at the store's versions), and
    the files each view reads."""
    con = duck.connect(store.location)
    try:
        yield con, {table: create_view(con, store, table) for table in tables}
    finally:
        con.close()


def images_left(store: ShardStore, stage: str, done: Done, params: Mapping[str, str]
                ) -> ImagesLeft:
    """The images `stage` has left; `done` (CAPTIONED, EMBEDDED) takes `params`."""
    with views(store, "images", "quarantine", done.table) as (con, files):
        rows = con.execute(_IMAGES_LEFT.format(done=done.sql), {"stage": stage, **params}
                           ).fetchall()
        total = con.execute("SELECT count(*) FROM images").fetchone()[0]
    by_url: dict[str, list[str]] = {}
    for filename, image_id in rows:
        by_url.setdefault(filename, []).append(image_id)
    paths = files["images"]
    return ImagesLeft({path: sorted(by_url[url]) for path in paths
                       if (url := store.location.url(path)) in by_url}, total)


def texts_left(store: ShardStore, text_hash: Callable[[str], str]) -> list[dict]:
    """{image_id, text, config_hash} of each latest caption not yet embedded as text, by id;
    `text_hash(caption config hash)` is the text vector's config hash."""
    with views(store, "captions", "embeddings") as (con, _):
        caption_hashes = [h for (h,) in con.execute(
            "SELECT DISTINCT config_hash FROM captions").fetchall()]
        con.register("text_hashes", pa.table({
            "caption_hash": pa.array(caption_hashes, pa.string()),
            "text_hash": pa.array([text_hash(h) for h in caption_hashes], pa.string())}))
        return con.sql(_TEXTS_LEFT).to_arrow_table().to_pylist()


def latest_captions(store: ShardStore, columns: list[str]) -> pa.Table:
    """The `columns` of each image's newest caption (LATEST_CAPTIONS)."""
    return _select(store, "captions", LATEST_CAPTIONS, columns)


def latest_embeddings(store: ShardStore, kind: str, model_id: str,
                      columns: list[str]) -> pa.Table:
    """The `columns` of each image's newest `kind` vector from `model_id`, by image id."""
    return _select(store, "embeddings", LATEST_EMBEDDINGS, columns,
                   {"kind": kind, "model_id": model_id}, order="image_id")


def latest_index(store: ShardStore) -> dict | None:
    """The newest `indexes` row (LATEST_INDEX), None before the first build."""
    rows = _select(store, "indexes", LATEST_INDEX, schema_for("indexes").names).to_pylist()
    return rows[0] if rows else None


def latest_snapshot(store: ShardStore, table: str, columns: list[str] | None = None
                    ) -> list[dict]:
    """The rows (`columns`, default all) of `table`'s newest snapshot."""
    return _select(store, table, latest_snapshot_sql(table),
                   columns or schema_for(table).names).to_pylist()


def _select(store: ShardStore, table: str, query: str, columns: list[str],
            params: Mapping[str, str] | None = None, order: str | None = None) -> pa.Table:
    schema = pa.schema([schema_for(table).field(name) for name in columns])
    listed = ", ".join(f'"{name}"' for name in columns)
    sql = f"SELECT {listed} FROM ({query})" + (f" ORDER BY {order}" if order else "")
    with views(store, table) as (con, _):
        return con.sql(sql, params=dict(params or {})).to_arrow_table().cast(schema)

