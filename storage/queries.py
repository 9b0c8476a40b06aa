"""Named queries over the catalog views: what a stage has left to do, and one query per
"latest" question. The stages and `tamer stats` share these definitions.

"What is left" is one anti-join in DuckDB: images minus those done under the stage's key
minus those the stage quarantined as undecodable (ids are content hashes, so they never
will decode). Only the key columns are read, never the image bytes, and only the ids to do
come back to Python. A stage run that finished everything records a mark (`stage_marks`:
the versions it read); the next run's anti-join reads only the files committed after them, so
its cost follows the new data, not the table size. A mark is ignored (full anti-join) when
`images` lost a file since (compaction rewrote it) or its version cannot be read any more. Views cover the files of the store's version of each table, so a
`PinnedStore` (a training run's pins) answers as of those versions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from deltalake.exceptions import DeltaError

from storage import duck
from storage.catalog import create_view
from storage.schemas import schema_for
from storage.shards import ShardStore, files_of

# The newest caption of each image (a row with a composed caption; newest `created_at`):
# what training, text embedding, the index's metadata and `tamer stats` read. A caption run
# captions an image once and stamps each batch as it commits, so (image_id, created_at) names one
# caption. Joined on the newest time rather than ranked with a window: the window carries every
# column (the attribute lists too) through its sort; at 1M captions the attributes stats query
# took 2.36 s that way and 0.84 s this way, the string-only length queries ~15% longer
# (`benchmarks/stats_queries.py`).
LATEST_CAPTIONS = (
    "SELECT c.* EXCLUDE (filename) FROM captions c JOIN (SELECT image_id, max(created_at) AS created_at "
    "FROM captions WHERE composed_caption <> '' GROUP BY image_id) newest USING (image_id, created_at) "
    "WHERE c.composed_caption <> ''")

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


# The newest mark of a stage under a key.
_LATEST_MARK = ("SELECT source_version, done_version, quarantine_version FROM stage_marks "
                "WHERE stage = $stage AND key = $key ORDER BY marked_at DESC LIMIT 1")


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


def mark_key(query: str, params: Mapping[str, str]) -> str:
    """What a stage's mark is recorded under: its done query with these parameters."""
    blob = json.dumps({"sql": query, "params": dict(sorted(params.items()))})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Mark:
    """The versions of the source table, the done table and quarantine (-1: not read) an answer
    was computed at."""

    source: int
    done: int
    quarantine: int = -1


@dataclass
class _Reading:
    """What one "what is left" query reads: each table's version and files (all of them, and
    those committed after the usable mark, if any)."""

    stage: str
    key: str  # mark_key of the stage's query and parameters
    at: Mark
    since: Mark | None  # the mark it used
    files: dict[str, list[str]]  # table -> every file name of its version
    new: dict[str, list[str]]  # table -> the names committed after the mark (all without one)
    rows: int  # the source table's row count
    snapshots: dict = field(repr=False)  # table -> the DeltaTable read (None before a commit)


@dataclass(frozen=True)
class ImagesLeft:
    """The images a stage has left: images file path -> its ids to do (files with none
    omitted, oldest file first), out of `total` committed images."""

    files: dict[str, list[str]]
    total: int
    reading: _Reading | None = field(default=None, compare=False)  # what it read, for `record_mark`

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.files.values())


@dataclass(frozen=True)
class TextsLeft:
    """{image_id, text, config_hash} of each latest caption without its text vector, by id."""

    rows: list[dict]
    reading: _Reading | None = field(default=None, compare=False)


def _reading(store: ShardStore, stage: str, key: str, source: str, done: str, quarantine: bool) -> _Reading:
    # the done table and quarantine are read before the source: a row done for a source row
    # committed after this source version is committed after these versions (`record_mark`)
    tables = [done, *(["quarantine"] if quarantine else []), source]
    snapshots = {table: store.snapshot(table) for table in tables}
    infos = {table: files_of(snapshot) if snapshot is not None else [] for table, snapshot in snapshots.items()}
    files = {table: [info.name for info in found] for table, found in infos.items()}
    at = Mark(_version(snapshots[source]), _version(snapshots[done]),
              _version(snapshots["quarantine"]) if quarantine else -1)
    since, covered = _usable_mark(store, stage, key, source, at, files[source])
    new = dict(files)
    if since is not None:
        for table, version in ((done, since.done), ("quarantine", since.quarantine)):
            if table in files:
                before = set(_names(store, table, version))
                new[table] = [name for name in files[table] if name not in before]
        new[source] = [name for name in files[source] if name not in covered]
    return _Reading(stage, key, at, since, files, new, sum(info.rows for info in infos[source]), snapshots)


def _usable_mark(store: ShardStore, stage: str, key: str, source: str, at: Mark, files: list[str]
                 ) -> tuple[Mark | None, set[str]]:
    """The newest mark under `key` and the source files it covered, if all of them are still
    there (not rewritten by compaction) and no version it names is past `at` (a pinned store)."""
    rows = _select(store, "stage_marks", _LATEST_MARK, ["source_version", "done_version", "quarantine_version"],
                   {"stage": stage, "key": key}).to_pylist()
    if not rows:
        return None, set()
    mark = Mark(rows[0]["source_version"], rows[0]["done_version"], rows[0]["quarantine_version"])
    if mark.source > at.source or mark.done > at.done or mark.quarantine > at.quarantine:
        return None, set()
    try:
        covered = set(_names(store, source, mark.source))
    except (DeltaError, OSError):  # a version vacuumed away, or unreadable: answer in full
        return None, set()
    return (mark, covered) if covered <= set(files) else (None, set())


def _names(store: ShardStore, table: str, version: int) -> list[str]:
    """The data files of `table` at `version` (none at -1, before its first commit)."""
    snapshot = store.snapshot(table, version) if version >= 0 else None
    return [info.name for info in files_of(snapshot)] if snapshot is not None else []


def _version(snapshot) -> int:
    return -1 if snapshot is None else snapshot.version()


def record_mark(store: ShardStore, left: ImagesLeft | TextsLeft, run_id: str) -> None:
    """Record that everything `left` was computed over is now done by its stage (or quarantined
    by it as undecodable): call only when the run finished all of `left`. Nothing is written
    when the mark would not move (a no-op run over an unchanged root)."""
    reading = left.reading
    if reading is None or reading.at.source < 0 or reading.at == reading.since:
        return
    at = reading.at
    store.write("stage_marks", pa.Table.from_pylist([{
        "stage": reading.stage, "key": reading.key, "source_version": at.source, "done_version": at.done,
        "quarantine_version": at.quarantine, "run_id": run_id, "marked_at": dt.datetime.now(dt.UTC)}],
        schema=schema_for("stage_marks")), run_id=run_id)


def latest_snapshot_sql(table: str) -> str:
    """The query of `table`'s newest snapshot rows (a snapshot table: subject_groups, pairs)."""
    if "snapshot" not in schema_for(table).names:
        raise ValueError(f"{table} is not a snapshot table")
    return _LATEST_SNAPSHOT.format(table)


@contextmanager
def views(store: ShardStore, *tables: str, files: Mapping[str, list[str]] | None = None
          ) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, list[str]]]]:
    """A cursor on the process's in-memory database with a (temporary) view per named table (at
    the store's versions, or over the file names in `files`), and the paths each view reads."""
    con = duck.cursor(store.location)
    try:
        yield con, {table: create_view(con, store, table, None if files is None else
                                       [store.location.join(table, name) for name in files[table]],
                                       temporary=True)
                    for table in tables}
    finally:
        con.close()


def images_left(store: ShardStore, stage: str, done: Done, params: Mapping[str, str]) -> ImagesLeft:
    """The images `stage` has left; `done` (CAPTIONED, EMBEDDED) takes `params`. With a usable
    mark under this key, only the files committed after it are read."""
    reading = _reading(store, stage, mark_key(done.sql, params), "images", done.table, quarantine=True)
    with views(store, "images", "quarantine", done.table, files=reading.new) as (con, paths):
        rows = con.execute(_IMAGES_LEFT.format(done=done.sql), {"stage": stage, **params}).fetchall()
    by_url: dict[str, list[str]] = {}
    for filename, image_id in rows:
        by_url.setdefault(filename, []).append(image_id)
    return ImagesLeft({path: sorted(by_url[url]) for path in paths["images"]
                       if (url := store.location.url(path)) in by_url}, reading.rows, reading)


def texts_left(store: ShardStore, text_hash: Callable[[str], str], model_id: str = "") -> TextsLeft:
    """Each latest caption not yet embedded as text, by id; `text_hash(caption config hash)` is
    the text vector's config hash for the embedding model `model_id` (the mark's key). With a usable mark, only images whose latest caption (taken over every file, so it is
    exact) was committed after it are candidates, and only vectors committed after it are read:
    a vector for a caption committed later is committed later."""
    key = mark_key(_TEXTS_LEFT, {"model_id": model_id})
    reading = _reading(store, "embed-text", key, "captions", "embeddings", quarantine=False)
    if reading.since is not None and not reading.new["captions"]:
        return TextsLeft([], reading)  # no caption since the mark: every latest one has its vector
    captions = reading.files["captions"] if reading.since is None else _could_be_older(reading)
    with views(store, "captions", "embeddings", files={"captions": captions, "embeddings": reading.new["embeddings"]}
               ) as (con, _):
        if reading.since is not None:
            _narrow_to_recaptioned(con, store, reading.new["captions"])
        caption_hashes = [h for (h,) in con.execute(
            "SELECT DISTINCT config_hash FROM captions").fetchall()]
        con.register("text_hashes", pa.table({
            "caption_hash": pa.array(caption_hashes, pa.string()),
            "text_hash": pa.array([text_hash(h) for h in caption_hashes], pa.string())}))
        return TextsLeft(con.sql(_TEXTS_LEFT).to_arrow_table().to_pylist(), reading)


def _could_be_older(reading: _Reading) -> list[str]:
    """The captions files that may hold a caption newer than one committed since the mark:
    those new files, and older files whose newest `created_at` (the log's statistics) is not
    before the oldest new caption. Without concurrent captioners that is the new files only."""
    actions = pa.table(reading.snapshots["captions"].get_add_actions(flatten=True)).to_pylist()
    new = set(reading.new["captions"])
    oldest_new = min((a["min.created_at"] for a in actions if a["path"] in new and a.get("min.created_at")),
                     default=None)
    return [a["path"] for a in actions if a["path"] in new or oldest_new is None
            or a.get("max.created_at") is None or a["max.created_at"] >= oldest_new]


def _narrow_to_recaptioned(con: duckdb.DuckDBPyConnection, store: ShardStore, names: list[str]) -> None:
    """Narrow the `captions` view to the images whose latest caption (over every file) is in
    the files `names`: the others' latest caption was there at the mark, so it has its vector."""
    con.execute("ALTER VIEW captions RENAME TO every_caption")
    paths = [store.location.join("captions", name) for name in names]
    new = (duck.read_parquet(store.location, paths, "image_id, filename") if paths
           else "SELECT CAST(NULL AS VARCHAR) AS image_id, CAST(NULL AS VARCHAR) AS filename WHERE false")
    newest = ("SELECT image_id, filename FROM every_caption "
              f"WHERE composed_caption <> '' AND image_id IN (SELECT image_id FROM ({new})) "
              "QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY created_at DESC) = 1")
    con.execute("CREATE TEMP VIEW captions AS SELECT * FROM every_caption WHERE image_id IN ("
                f"SELECT image_id FROM ({newest}) WHERE filename IN (SELECT filename FROM ({new})))")


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

