"""Parquet files: one image per row, as bytes (an `image`/`jpg`/`png`/`image_bytes`/`bytes`
column, or Hugging Face's {"bytes", "path"} struct) or as a path relative to the file that must
stay under the source root; `subject`, `class_name`, `caption`/`text`, `mask`, `meta` columns
are optional. Every value is untrusted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from storage.local_files import Refused, check_regular, read_regular
from storage.sources.base import RawItem, Rejected, SourceChunk, SourceReader, json_or_empty, text_or_none


PARQUET_BYTES_COLUMNS = ("image", "jpg", "png", "image_bytes", "bytes")
PARQUET_PATH_COLUMNS = ("image_path", "path", "file")
PARQUET_BATCH_ROWS = 64


class ParquetReader(SourceReader):
    kind, suffixes = "parquet", (".parquet",)

    @staticmethod
    def read(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
        """Rows in small batches (memory holds one batch); every value is untrusted."""
        (parquet_path,) = chunk.paths
        index = 0
        try:
            check_regular(os.stat(parquet_path))  # a FIFO named .parquet would block the open
            parquet = pq.ParquetFile(parquet_path)
            names = set(parquet.schema_arrow.names)
            bytes_column = next((c for c in PARQUET_BYTES_COLUMNS if c in names), None)
            path_column = next((c for c in PARQUET_PATH_COLUMNS if c in names), None)
            if bytes_column is None and path_column is None:
                yield Rejected(parquet_path, "bad_parquet", f"no image column in {sorted(names)}")
                return
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    yield _parquet_row(chunk, f"{parquet_path}::{index}", row, bytes_column,
                                       path_column, max_bytes)
                    index += 1
        except Refused as refused:
            yield Rejected(parquet_path, refused.reason, refused.detail)
        except Exception as exc:  # noqa: BLE001 - any parse failure rejects the rest of this file
            where = f"rows from {index} on" if index else "whole file"
            yield Rejected(parquet_path, "bad_parquet", f"{where}: {type(exc).__name__}: {exc}")


def _parquet_row(chunk: SourceChunk, where: str, row: dict, bytes_column: str | None,
                 path_column: str | None, max_bytes: int) -> RawItem | Rejected:
    data = row.get(bytes_column) if bytes_column else None
    if isinstance(data, dict):  # HF datasets store {"bytes": ..., "path": ...}
        data = data.get("bytes")
    path = row.get(path_column) if path_column else None
    if data is None and isinstance(path, str) and path:
        try:
            target = (Path(chunk.paths[0]).parent / path).resolve()
        except (OSError, ValueError) as exc:  # a NUL byte, a link loop
            return Rejected(where, "bad_row", f"path {path!r}: {exc}")
        if not target.is_relative_to(Path(chunk.root).resolve()):
            return Rejected(where, "path_outside_root", f"{path!r}")
        try:
            data = read_regular(str(target), max_bytes)
        except Refused as refused:
            return Rejected(where, refused.reason, refused.detail)
    if data is None:
        return Rejected(where, "empty", "row has no image bytes or path")
    if not isinstance(data, bytes):
        return Rejected(where, "bad_row", f"image cell holds {type(data).__name__}, not bytes")
    meta = row.get("meta")
    mask = row.get("mask")
    return RawItem(
        source=where,
        data=data,
        subject=text_or_none(row.get("subject")),
        class_name=text_or_none(row.get("class_name")),
        mask=mask if isinstance(mask, bytes) else None,
        text=text_or_none(row.get("caption")) or text_or_none(row.get("text")),
        meta=meta if isinstance(meta, dict) else json_or_empty(
            meta.encode() if isinstance(meta, str) else None),
    )
