"""Where images come from: folder trees, WebDataset tars and Parquet files.

Listing is cheap and happens on the driver; it yields `SourceChunk`s, the picklable unit of
work a decoding worker reads. Reading a chunk yields `RawItem`s (bytes plus side data) or
`Rejected` entries for members that must never be read (unsafe tar paths, links that leave
the source root).
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
    if path.is_file():
        return [SourceChunk(_kind_of(path), str(path.parent), (str(path),), classes)]
    files = list(_walk(str(path)))  # walked once, in sorted order
    tars = [f for f in files if f.endswith(".tar")]
    parquets = [f for f in files if f.endswith(".parquet")]
    images = [f for f in files if _is_image_candidate(f)]
    chunks = []
    for start in range(0, len(images), files_per_chunk):
        batch = tuple(images[start : start + files_per_chunk])
        chunks.append(SourceChunk("folder", str(path), batch, classes))
    chunks += [SourceChunk("tar", str(path), (p,), classes) for p in tars]
    chunks += [SourceChunk("parquet", str(path), (p,), classes) for p in parquets]
    return chunks


def read_chunk(chunk: SourceChunk) -> Iterator[RawItem | Rejected]:
    """Yield every item of a chunk; never raises for bad members."""
    classes = dict(chunk.classes)
    readers = {"folder": _read_folder_files, "tar": _read_tar, "parquet": _read_parquet}
    for item in readers[chunk.kind](chunk):
        if isinstance(item, RawItem):
            item.subject = item.meta.get("subject", item.subject)
            item.class_name = item.meta.get("class_name") or classes.get(
                item.subject or "", item.class_name
            )
        yield item


def _kind_of(path: Path) -> str:
    if path.suffix == ".tar":
        return "tar"
    if path.suffix == ".parquet":
        return "parquet"
    return "folder"


def _walk(root: str) -> Iterator[str]:
    """Every file under root, not following directory links, skipping hidden entries."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(directory, name)


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
def _read_folder_files(chunk: SourceChunk) -> Iterator[RawItem | Rejected]:
    root = os.path.realpath(chunk.root)
    listings: dict[str, set[str]] = {}  # one directory listing instead of a stat per side file
    for name in chunk.paths:
        if os.path.islink(name) and not _inside(root, name):
            yield Rejected(name, "link_outside_root", f"link points to {os.path.realpath(name)}")
            continue
        try:
            with open(name, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            yield Rejected(name, "unreadable", f"{type(exc).__name__}: {exc}")
            continue
        directory, filename = os.path.split(name)
        parts = os.path.relpath(name, chunk.root).split(os.sep)
        if directory not in listings:
            listings[directory] = set(os.listdir(directory))
        siblings = _Siblings(root, directory, os.path.splitext(filename)[0], listings[directory])
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

    def read(self, suffix: str) -> bytes | None:
        name = self.stem + suffix
        if name not in self.names:
            return None
        path = os.path.join(self.directory, name)
        if (os.path.islink(path) and not _inside(self.root, path)) or not os.path.isfile(path):
            return None
        with open(path, "rb") as handle:
            return handle.read()


def _json_or_empty(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- WebDataset tars -------------------------------------------------------------------
def _read_tar(chunk: SourceChunk) -> Iterator[RawItem | Rejected]:
    (tar_path,) = chunk.paths
    try:
        archive = tarfile.open(tar_path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        yield Rejected(tar_path, "bad_tar", f"{type(exc).__name__}: {exc}")
        return
    samples: dict[str, dict[str, bytes]] = {}
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield Rejected(tar_path, "bad_tar", f"{type(exc).__name__}: {exc}")
            return
        for member in members:
            where = f"{tar_path}::{member.name}"
            problem = _unsafe_member(member)
            if problem:
                yield Rejected(where, "unsafe_tar_member", problem)
                continue
            if not member.isfile():
                continue
            key, extension = _split_key(member.name)
            handle = archive.extractfile(member)
            samples.setdefault(key, {})[extension] = handle.read() if handle else b""
    for key, files in samples.items():
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
    extension = image_exts[0]
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


def _read_parquet(chunk: SourceChunk) -> Iterator[RawItem | Rejected]:
    (parquet_path,) = chunk.paths
    try:
        table = pq.read_table(parquet_path)
    except Exception as exc:  # noqa: BLE001 - any parse failure rejects this one file
        yield Rejected(parquet_path, "bad_parquet", f"{type(exc).__name__}: {exc}")
        return
    names = set(table.column_names)
    bytes_column = next((c for c in PARQUET_BYTES_COLUMNS if c in names), None)
    path_column = next((c for c in PARQUET_PATH_COLUMNS if c in names), None)
    if bytes_column is None and path_column is None:
        yield Rejected(parquet_path, "bad_parquet", f"no image column in {sorted(names)}")
        return
    base = Path(parquet_path).parent.resolve()
    for index, row in enumerate(table.to_pylist()):
        where = f"{parquet_path}::{index}"
        data = row.get(bytes_column) if bytes_column else None
        if isinstance(data, dict):  # HF datasets store {"bytes": ..., "path": ...}
            data = data.get("bytes")
        if data is None and path_column and row.get(path_column):
            target = (base / str(row[path_column])).resolve()
            if not target.is_relative_to(Path(chunk.root).resolve()):
                yield Rejected(where, "path_outside_root", f"{row[path_column]!r}")
                continue
            try:
                data = target.read_bytes()
            except OSError as exc:
                yield Rejected(where, "unreadable", f"{type(exc).__name__}: {exc}")
                continue
        if data is None:
            yield Rejected(where, "empty", "row has no image bytes or path")
            continue
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        yield RawItem(
            source=where,
            data=bytes(data),
            subject=row.get("subject"),
            class_name=row.get("class_name"),
            mask=row.get("mask"),
            text=row.get("caption") or row.get("text"),
            meta=meta or _json_or_empty((row.get("meta") or "").encode()),
        )
