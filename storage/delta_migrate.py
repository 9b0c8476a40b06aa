"""`tamer migrate`: convert tables of the older `_manifest.json` store into Delta tables.

Each table is rewritten as one Delta commit creating the table (version 0), so a migration
killed part-way leaves either the old table or the new one, never half of each; only then are
the old shards and the manifest removed (a re-run finishes that cleanup). Images the old
store held twice (overlapping ingests could do that) keep their first copy; the others are
recorded in `duplicates`, so no row vanishes without a trace.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

from storage import delta
from storage.schemas import TABLES, schema_for
from storage.shards import LEGACY_MANIFEST, UNIQUE_KEYS, ShardStore

LEGACY_LEFTOVERS = ("_staging", ".lock")


def legacy_tables(store: ShardStore) -> list[str]:
    """Tables under the root still holding an old manifest."""
    return [table for table in TABLES
            if store.fs.exists(store.location.join(table, LEGACY_MANIFEST))]


def migrate(store: ShardStore) -> dict[str, int]:
    """Convert every legacy table; table -> rows now in its Delta table.

    Keyed tables go last: their repeated rows are written to `duplicates`, converted first.
    """
    migrated = {}
    for table in sorted(legacy_tables(store), key=lambda name: name in UNIQUE_KEYS):
        names = _manifest_names(store, table)
        if delta.open_table(store.location, table) is None:
            migrated[table] = _convert(store, table, names)
        else:  # converted by an earlier run that was stopped before its cleanup
            migrated[table] = store.row_count(table)
        _remove_legacy_files(store, table, names)
    return migrated


def _manifest_names(store: ShardStore, table: str) -> list[str]:
    with store.fs.open(store.location.join(table, LEGACY_MANIFEST), "rb") as handle:
        return [entry["name"] for entry in json.load(handle)["shards"]]


def _convert(store: ShardStore, table: str, names: list[str]) -> int:
    schema = schema_for(table)
    parts = []
    for name in names:
        with store.fs.open(store.location.join(table, name), "rb") as handle:
            parts.append(pq.read_table(handle).select(schema.names).cast(schema))
    data = pa.concat_tables(parts) if parts else schema.empty_table()
    if table in UNIQUE_KEYS:
        data = _keep_first_copies(store, data, UNIQUE_KEYS[table])
    location = store.location
    write_deltalake(delta.table_uri(location, table), data, mode="error",
                    storage_options=delta.storage_options(location),
                    writer_properties=delta.writer_properties(schema, store.row_group_rows),
                    target_file_size=delta.TARGET_FILE_BYTES)
    return data.num_rows


def _keep_first_copies(store: ShardStore, data: pa.Table, key: str) -> pa.Table:
    """The first row per key; the later copies go to `duplicates` (images only)."""
    first: dict[str, str] = {}
    keep, repeats = [], []
    for image_id, source in zip(data.column(key).to_pylist(), data.column("source").to_pylist()):
        keep.append(image_id not in first)
        if image_id in first:
            repeats.append({"image_id": image_id, "source": source,
                            "kept_source": first[image_id], "seen_at": dt.datetime.now(dt.UTC)})
        first.setdefault(image_id, source)
    if repeats:
        store.write("duplicates", pa.Table.from_pylist(repeats, schema=schema_for("duplicates")),
                    run_id="migrate")
    return data.filter(pa.array(keep)) if repeats else data


def _remove_legacy_files(store: ShardStore, table: str, names: list[str]) -> None:
    """Old shards and leftovers, then the manifest last (it marks the table as legacy)."""
    fs = store.fs
    for path in [store.location.join(table, name) for name in names] + [
            store.location.join(table, leftover) for leftover in LEGACY_LEFTOVERS]:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    fs.rm(store.location.join(table, LEGACY_MANIFEST))

