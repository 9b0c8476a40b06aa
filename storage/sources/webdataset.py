"""WebDataset tars: samples grouped by key (the member path up to the first dot of its
basename), one image per sample with optional .txt caption, .json metadata and .mask.png; the
first folder level inside the tar names the subject. Unsafe members (absolute or escaping paths,
links, devices) and oversized ones are rejected before anything is read."""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path

from storage.local_files import Refused, check_regular
from storage.sources.base import RawItem, Rejected, SourceChunk, SourceReader, json_or_empty

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
     ".pbm", ".pnm", ".mpo", ".ico", ".svg", ".heic", ".avif", ".jfif", ".eps", ".psd"}
)


class WebDatasetReader(SourceReader):
    kind, suffixes = "tar", (".tar",)

    @staticmethod
    def read(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
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
        meta=json_or_empty(files.get("json")),
    )
