"""Every shard table's pyarrow schema, in one place, versioned.

A table's version is bumped whenever its columns change meaning or type; readers use
`union_by_name`, so adding a nullable column is backwards compatible.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION_KEY = b"tamer.schema_version"

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # sha256 of the original bytes
        pa.field("subject", pa.string()),  # identity group from the layout, if any
        pa.field("class_name", pa.string()),  # class noun ("backpack"), if known
        pa.field("source", pa.string(), nullable=False),  # where the bytes came from
        pa.field("source_kind", pa.string(), nullable=False),  # folder | tar | parquet
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # original format (JPEG, PNG, ...)
        pa.field("mode", pa.string(), nullable=False),  # original PIL mode before RGB conversion
        pa.field("num_bytes", pa.int64(), nullable=False),  # size of the original bytes
        pa.field("flags", pa.list_(pa.string())),  # soft warnings, e.g. "tiny"
        pa.field("image", pa.binary(), nullable=False),  # RGB image bytes (original or PNG)
        pa.field("mask", pa.binary()),  # optional foreground mask (PNG, L mode)
        pa.field("text", pa.string()),  # caption shipped with the source, if any
        pa.field("meta", pa.string()),  # JSON side data (e.g. synth ground truth)
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

QUARANTINE = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # ingest | caption | embed ...
        pa.field("source", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string()),  # null when the bytes could not be read
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable code
        pa.field("detail", pa.string()),  # human-readable message
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

DUPLICATES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the skipped copy
        pa.field("kept_source", pa.string(), nullable=False),  # the copy already in `images`
        pa.field("seen_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

INGEST_RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("seen", pa.int64(), nullable=False),
        pa.field("ingested", pa.int64(), nullable=False),
        pa.field("unchanged", pa.int64(), nullable=False),  # same source already ingested
        pa.field("duplicates", pa.int64(), nullable=False),  # same bytes under another source
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),  # dataset version after the run
    ],
    metadata={SCHEMA_VERSION_KEY: b"1"},
)

# Table name -> schema. Later stages register their tables here too.
TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "quarantine": QUARANTINE,
    "duplicates": DUPLICATES,
    "ingest_runs": INGEST_RUNS,
}

# Tables whose content defines the dataset version (fingerprint).
DATASET_TABLES: tuple[str, ...] = ("images",)


def schema_for(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known: {sorted(TABLES)}") from None


def empty(table: str) -> pa.Table:
    return schema_for(table).empty_table()
