"""Where images come from: folder trees, WebDataset tars and Parquet files.

Listing is cheap and happens on the driver; it yields `SourceChunk`s, the picklable unit of
work a decoding worker reads. Reading a chunk yields `RawItem`s (bytes plus side data) or
`Rejected` entries for members that must never be read (unsafe tar paths, links that leave
the source root, directory links, FIFOs, sockets and devices, files over the byte limit):
every listed entry comes back as one or the other, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from storage.local_files import Refused, check_regular, read_regular

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
     ".pbm", ".pnm", ".mpo", ".ico", ".svg", ".heic", ".avif", ".jfif", ".eps", ".psd"}
)
# Files that describe a dataset rather than hold an image; never treated as images.
SIDE_EXTENSIONS = frozenset({".txt", ".json", ".md", ".csv", ".yaml", ".yml", ".html"})
CLASSES_FILE = "prompts_and_classes.txt"
MASK_SUFFIX = ".mask"  # "<key>.mask.png" beside "<key>.<ext>" is a foreground mask


@dataclass(frozen=True)
class SourceChunk:
    """A unit of decoding work: some files of a folder, one tar, or one Parquet file."""

    kind: str  # folder | tar | parquet
    root: str  # the source root the user named
    paths: tuple[str, ...]  # files under root (folder) or the single tar/parquet path
    classes: tuple[tuple[str, str], ...] = ()  # subject -> class noun pairs


@dataclass
class RawItem:
    source: str
    data: bytes
    subject: str | None = None
    class_name: str | None = None
    mask: bytes | None = None
    text: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str
    detail: str


def list_chunks(root: str, files_per_chunk: int = 256) -> list[SourceChunk]:
    """Split a source (folder, .tar file or folder of tars, .parquet file) into chunks.

    The order is stable (folder files, then tars, then Parquet files, each sorted), and
    ingest keeps the first copy of duplicate bytes in this order.
    """
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"source {root!r} does not exist")
    classes = _read_classes(path if path.is_dir() else path.parent)
    if not path.is_dir():  # one file, or a FIFO/device the reader refuses
        return [SourceChunk(_kind_of(path), str(path.parent), (str(path),), classes)]
    entries = list(_walk(str(path)))  # walked once, in sorted order
    files = [name for name, is_dir_link in entries if not is_dir_link]
    tars = [f for f in files if f.endswith(".tar")]
    parquets = [f for f in files if f.endswith(".parquet")]
    # Directory links go with the folder files, whose reader quarantines them unfollowed.
    images = [name for name, is_dir_link in entries if is_dir_link or _is_image_candidate(name)]
    chunks = []
    for start in range(0, len(images), files_per_chunk):
        batch = tuple(images[start : start + files_per_chunk])
        chunks.append(SourceChunk("folder", str(path), batch, classes))
    chunks += [SourceChunk("tar", str(path), (p,), classes) for p in tars]
    chunks += [SourceChunk("parquet", str(path), (p,), classes) for p in parquets]
    return chunks


def read_chunk(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
    """Yield every item of a chunk; never raises for bad members.

    No file, tar member or side file larger than `max_bytes` is read into memory.
    """
    classes = dict(chunk.classes)
    readers = {"folder": _read_folder_files, "tar": _read_tar, "parquet": _read_parquet}
    for item in readers[chunk.kind](chunk, max_bytes):
        if isinstance(item, RawItem):  # side metadata is untrusted: strings only
            item.subject = _text(item.meta.get("subject")) or item.subject
            item.class_name = _text(item.meta.get("class_name")) or classes.get(
                item.subject or "", item.class_name
            )
        yield item


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _kind_of(path: Path) -> str:
    if path.suffix == ".tar":
        return "tar"
    if path.suffix == ".parquet":
        return "parquet"
    return "folder"


def _walk(root: str) -> Iterator[tuple[str, bool]]:
    """(path, is a directory link) for every non-hidden entry under root that is not a plain
    directory; directory links are listed, not followed (they could loop or leave root)."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        links = {d for d in subdirs if os.path.islink(os.path.join(directory, d))}
        for name in sorted(set(files) | links):
            if not name.startswith("."):
                yield os.path.join(directory, name), name in links


def _is_image_candidate(path: str) -> bool:
    stem, suffix = os.path.splitext(path)
    if suffix.lower() in SIDE_EXTENSIONS or suffix in {".tar", ".parquet"}:
        return False
    return os.path.splitext(stem)[1] != MASK_SUFFIX


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


# ---- folders ---------------------------------------------------------------------------
def _read_folder_files(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
    root = os.path.realpath(chunk.root)
    listings: dict[str, set[str]] = {}  # one directory listing instead of a stat per side file
    for name in chunk.paths:
        if os.path.islink(name) and not _inside(root, name):
            yield Rejected(name, "link_outside_root", f"link points to {os.path.realpath(name)}")
            continue
        try:
            data = read_regular(name, max_bytes)
        except Refused as refused:
            yield Rejected(name, refused.reason, refused.detail)
            continue
        directory, filename = os.path.split(name)
        parts = os.path.relpath(name, chunk.root).split(os.sep)
        if directory not in listings:
            listings[directory] = set(os.listdir(directory))
        siblings = _Siblings(root, directory, os.path.splitext(filename)[0], listings[directory],
                             max_bytes)
        text = siblings.read(".txt")
        yield RawItem(
            source=name,
            data=data,
            subject=parts[0] if len(parts) > 1 else None,
            mask=siblings.read(f"{MASK_SUFFIX}.png"),
            text=text.decode("utf-8", errors="replace").strip() if text is not None else None,
            meta=_json_or_empty(siblings.read(".json")),
        )


def _inside(root: str, path: str) -> bool:
    """Whether a path, links resolved, stays under the (resolved) root."""
    return os.path.commonpath([root, os.path.realpath(path)]) == root


@dataclass(frozen=True)
class _Siblings:
    """Side files of one image ("<stem><suffix>"), never followed outside the root."""

    root: str
    directory: str
    stem: str
    names: set[str]
    max_bytes: int

    def read(self, suffix: str) -> bytes | None:
        """The side file's bytes; None when absent or refused (the image stands without it)."""
        name = self.stem + suffix
        if name not in self.names:
            return None
        path = os.path.join(self.directory, name)
        if os.path.islink(path) and not _inside(self.root, path):
            return None
        try:
            return read_regular(path, self.max_bytes)
        except Refused:
            return None


def _json_or_empty(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- WebDataset tars -------------------------------------------------------------------
def _read_tar(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
    """Samples one at a time: headers are listed first, then each sample's members read, so
    memory holds one sample, and a member's size is checked before its bytes are."""
    (tar_path,) = chunk.paths
    try:
        check_regular(os.stat(tar_path))  # a FIFO named .tar would block the open
        archive = tarfile.open(tar_path, mode="r:*")
    except Refused as refused:
        yield Rejected(tar_path, refused.reason, refused.detail)
        return
    except (tarfile.TarError, OSError) as exc:
        yield Rejected(tar_path, "bad_tar", f"{type(exc).__name__}: {exc}")
        return
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield Rejected(tar_path, "bad_tar", f"{type(exc).__name__}: {exc}")
            return
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in members:
            where = f"{tar_path}::{member.name}"
            problem = _unsafe_member(member)
            if problem:
                yield Rejected(where, "unsafe_tar_member", problem)
            elif member.isfile() and member.size > max_bytes:
                yield Rejected(where, "too_large", f"{member.size} bytes > max_bytes {max_bytes}")
            elif member.isfile():
                key, extension = _split_key(member.name)
                samples.setdefault(key, {})[extension] = member
        for key, sample in samples.items():
            try:
                files = {ext: archive.extractfile(info).read() for ext, info in sample.items()}
            except (tarfile.TarError, OSError, EOFError) as exc:
                yield Rejected(f"{tar_path}::{key}", "bad_tar", f"{type(exc).__name__}: {exc}")
                continue
            yield from _tar_sample(tar_path, key, files)


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"absolute path {name!r}"
    if ".." in Path(name).parts:
        return f"path escapes the archive: {name!r}"
    if member.issym() or member.islnk():
        return f"link member {name!r} -> {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return f"special member {name!r}"
    return None


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename."""
    directory, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(directory, stem), extension.lower()


def _tar_sample(tar_path: str, key: str, files: dict[str, bytes]) -> Iterator[RawItem | Rejected]:
    image_exts = [ext for ext in files if f".{ext}" in IMAGE_EXTENSIONS]
    if not image_exts:
        if not set(files) <= {"txt", "json", "cls", "mask.png"}:
            yield Rejected(f"{tar_path}::{key}", "no_image", f"sample has only {sorted(files)}")
        return
    extension, *extras = image_exts
    for extra in extras:  # one image per sample; the others are recorded, not dropped
        yield Rejected(f"{tar_path}::{key}.{extra}", "extra_image", f"sample keeps .{extension}")
    text = files.get("txt")
    directory = posixpath.dirname(key)
    yield RawItem(
        source=f"{tar_path}::{key}.{extension}",
        data=files[extension],
        subject=directory.split("/")[0] if directory else None,
        mask=files.get("mask.png"),
        text=text.decode("utf-8", errors="replace").strip() if text else None,
        meta=_json_or_empty(files.get("json")),
    )


# ---- Parquet ---------------------------------------------------------------------------
PARQUET_BYTES_COLUMNS = ("image", "jpg", "png", "image_bytes", "bytes")
PARQUET_PATH_COLUMNS = ("image_path", "path", "file")
PARQUET_BATCH_ROWS = 64


def _read_parquet(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
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
        subject=_text(row.get("subject")),
        class_name=_text(row.get("class_name")),
        mask=mask if isinstance(mask, bytes) else None,
        text=_text(row.get("caption")) or _text(row.get("text")),
        meta=meta if isinstance(meta, dict) else _json_or_empty(
            meta.encode() if isinstance(meta, str) else None),
    )
