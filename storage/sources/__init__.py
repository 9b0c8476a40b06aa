"""Where images come from: one reader class per source format, registered below (folder trees,
WebDataset tars, Parquet files; to add a format, one module with its `SourceReader` and one
line in READERS).

Listing is cheap and happens on the driver; it yields `SourceChunk`s, the picklable unit of
work a decoding worker reads. Reading a chunk yields `RawItem`s (bytes plus side data) or
`Rejected` entries for members that must never be read (unsafe tar paths, links that leave
the source root, directory links, FIFOs, sockets and devices, files over the byte limit):
every listed entry comes back as one or the other, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from storage.sources.base import RawItem, Rejected, SourceChunk, SourceReader, text_or_none
from storage.sources.folder import FolderReader
from storage.sources.parquet import ParquetReader
from storage.sources.webdataset import WebDatasetReader

# kind -> reader, in listing order (ingest keeps the first copy of duplicate bytes in it).
READERS: dict[str, type[SourceReader]] = {reader.kind: reader for reader in (
    FolderReader,
    WebDatasetReader,
    ParquetReader,
)}
CLASSES_FILE = "prompts_and_classes.txt"

__all__ = ["READERS", "RawItem", "Rejected", "SourceChunk", "SourceReader", "list_chunks", "read_chunk"]


def reader_of(path: str) -> type[SourceReader]:
    """The reader whose container format the file is, else the loose-file (folder) reader."""
    return next((r for r in READERS.values() if r.suffixes and r.claims(path)), FolderReader)


def list_chunks(root: str, files_per_chunk: int = 256) -> list[SourceChunk]:
    """Split a source (folder, or one file of a registered format) into chunks.

    The order is stable (each reader's files in READERS order, each sorted), and ingest keeps
    the first copy of duplicate bytes in this order.
    """
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"source {root!r} does not exist")
    classes = _read_classes(path if path.is_dir() else path.parent)
    if not path.is_dir():  # one file, or a FIFO/device the reader refuses
        return [SourceChunk(reader_of(str(path)).kind, str(path.parent), (str(path),), classes)]
    claimed: dict[str, list[str]] = {kind: [] for kind in READERS}
    for name, is_dir_link in _walk(str(path)):  # walked once, in sorted order
        reader = FolderReader if is_dir_link else reader_of(name)
        # Directory links go with the folder files, whose reader quarantines them unfollowed.
        if is_dir_link or reader.claims(name):
            claimed[reader.kind].append(name)
    return [chunk for kind, reader in READERS.items()
            for chunk in reader.chunks(str(path), claimed[kind], classes, files_per_chunk)]


def read_chunk(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
    """Yield every item of a chunk; never raises for bad members.

    No file, tar member or side file larger than `max_bytes` is read into memory.
    """
    classes = dict(chunk.classes)
    for item in READERS[chunk.kind].read(chunk, max_bytes):
        if isinstance(item, RawItem):  # side metadata is untrusted: strings only
            item.subject = text_or_none(item.meta.get("subject")) or item.subject
            item.class_name = text_or_none(item.meta.get("class_name")) or classes.get(
                item.subject or "", item.class_name
            )
        yield item


def _walk(root: str) -> Iterator[tuple[str, bool]]:
    """(path, is a directory link) for every non-hidden entry under root that is not a plain
    directory; directory links are listed, not followed (they could loop or leave root)."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        links = {d for d in subdirs if os.path.islink(os.path.join(directory, d))}
        for name in sorted(set(files) | links):
            if not name.startswith("."):
                yield os.path.join(directory, name), name in links


def _read_classes(directory: Path) -> tuple[tuple[str, str], ...]:
    """Subject -> class pairs from a DreamBench-style `prompts_and_classes.txt`."""
    path = directory / CLASSES_FILE
    if not path.is_file():
        return ()
    pairs = []
    for row in csv.reader(io.StringIO(path.read_text(errors="replace"))):
        if len(row) == 2 and row[0].strip() and row[0].strip() != "subject_name":
            pairs.append((row[0].strip(), row[1].strip()))
    return tuple(pairs)
