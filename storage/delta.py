"""Delta Lake (delta-rs) tables under a dataset root: where they live and how a commit lands.

Each table is `<root>/<table>/` with its transaction log in `_delta_log/`; a version is one
commit. Appends are optimistic transactions: delta-rs itself rebases a blind append onto
commits that won the race; anything it cannot rebase raises `CommitFailedError`, and
`commit` then starts the attempt over from the new version, so nothing is ever dropped.

A keyed append (a table whose rows are unique by a column) dedupes against the version it
commits on top of and carries an application transaction (`txn`) per table: two keyed writers
racing on one table conflict in delta-rs's conflict checker, and the loser re-dedupes against
the winner's version before trying again.

`memory://` roots cannot hold tables: delta-rs's in-memory store lives only as long as one
Python `DeltaTable` object, so a second call would find nothing. They are refused by name.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (ColumnProperties, CommitProperties, DeltaTable, Transaction,
                       WriterProperties, write_deltalake)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from storage.fs import Location

MAX_ATTEMPTS = 200  # conflicts only ever come from a writer that made progress
TARGET_FILE_BYTES = 128 * 2**20


class TablesUnsupported(ValueError):
    """A root whose filesystem delta-rs cannot keep tables on."""


def table_uri(location: Location, table: str) -> str:
    """The URI delta-rs opens for a table under the root."""
    if "memory" in _protocols(location):
        raise TablesUnsupported(
            f"{location.uri}: memory:// roots cannot hold Delta tables (delta-rs keeps no "
            "in-memory store between calls); use a local path or s3://")
    return location.url(location.join(table))


def _protocols(location: Location) -> tuple[str, ...]:
    protocol = location.fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def storage_options(location: Location) -> dict[str, str]:
    """delta-rs options equivalent to the root's fsspec filesystem (s3fs endpoint and keys).

    Environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) are read by both sides
    already; what s3fs got from arguments or fsspec's configuration is passed on here.
    """
    if "s3" not in _protocols(location):
        return {}
    fs = location.fs
    client = getattr(fs, "client_kwargs", None) or {}
    endpoint = (getattr(fs, "endpoint_url", None) or client.get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL"))
    options = {"AWS_CONDITIONAL_PUT": "etag"}  # atomic put-if-absent for the log's commits
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    for attribute, option in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                              ("token", "AWS_SESSION_TOKEN")):
        if getattr(fs, attribute, None):
            options[option] = getattr(fs, attribute)
    region = client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    return options


def open_table(location: Location, table: str, version: int | None = None) -> DeltaTable | None:
    """The table at `version` (latest if None), or None if it has no commit yet."""
    try:
        return DeltaTable(table_uri(location, table), version=version,
                          storage_options=storage_options(location))
    except TableNotFoundError:
        return None


def ensure_table(location: Location, table: str, schema: pa.Schema) -> None:
    """Create the table (version 0, no rows) unless it exists; a racing creator is fine."""
    if open_table(location, table) is not None:
        return
    try:
        DeltaTable.create(table_uri(location, table), schema=schema, mode="ignore",
                          storage_options=storage_options(location))
    except DeltaError:
        if open_table(location, table) is None:
            raise
        # else another writer created it between our check and our commit: just as good


def commit(
    location: Location,
    table: str,
    data: pa.Table,
    *,
    schema: pa.Schema,
    metadata: dict[str, str],
    row_group_rows: int,
    key: str | None = None,
    stored_keys: Callable[[DeltaTable, str, pa.Array], set[str]] | None = None,
) -> tuple[int, list[str]]:
    """Append `data` as one commit; (rows committed, keys dropped as already there).

    With `key`, rows whose key the table (at the version committed on top of) already holds
    are dropped and named in the result; `data` itself must not repeat a key.
    `stored_keys(snapshot, key, candidates)` names the candidates the snapshot holds.
    """
    ensure_table(location, table, schema)
    if key:
        _check_unique(data, key)
    for attempt in range(MAX_ATTEMPTS):
        snapshot = open_table(location, table)
        rows, dropped = data, []
        properties = CommitProperties(custom_metadata=metadata)
        if key:
            existing = stored_keys(snapshot, key, data.column(key).combine_chunks())
            present = pc.is_in(data.column(key), value_set=pa.array(sorted(existing), pa.string()))
            dropped = data.filter(present).column(key).to_pylist()
            rows = data.filter(pc.invert(present))
            properties = CommitProperties(custom_metadata=metadata, app_transactions=[
                Transaction(f"tamer.unique.{table}", snapshot.version() + 1)])
        if rows.num_rows == 0:
            return 0, dropped
        try:
            write_deltalake(snapshot, rows, mode="append", commit_properties=properties,
                            writer_properties=writer_properties(schema, row_group_rows),
                            target_file_size=TARGET_FILE_BYTES, schema_mode=_schema_mode(snapshot, schema))
        except CommitFailedError:
            time.sleep(random.uniform(0.01, 0.05) * min(attempt + 1, 20))  # spread the racers
            continue
        return rows.num_rows, dropped
    raise CommitFailedError(f"{table}: gave up after {MAX_ATTEMPTS} conflicting commits")


def _schema_mode(snapshot: DeltaTable, schema: pa.Schema) -> str | None:
    """"merge" when the schemas module added (nullable) columns the table does not have yet:
    the commit widens the table; older files read those columns as nulls."""
    stored = {field.name for field in snapshot.schema().fields}
    return "merge" if set(schema.names) - stored else None


def _check_unique(data: pa.Table, key: str) -> None:
    """A keyed batch must not repeat a key: which copy to keep is the caller's decision."""
    if pc.count_distinct(data.column(key)).as_py() != data.num_rows:
        raise ValueError(f"rows to commit repeat a {key}; each must appear once")


def writer_properties(schema: pa.Schema, row_group_rows: int) -> WriterProperties:
    """zstd; no min/max statistics over encoded-image columns (never filtered on)."""
    binary = {field.name: ColumnProperties(statistics_enabled="NONE")
              for field in schema if pa.types.is_binary(field.type)}
    return WriterProperties(compression="ZSTD", max_row_group_size=row_group_rows,
                            column_properties=binary or None)
