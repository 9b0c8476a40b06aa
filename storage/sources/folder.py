"""Folder trees: loose image files, each with optional side files beside it ("<stem>.txt"
caption, "<stem>.json" metadata, "<stem>.mask.png" foreground mask); the first folder level
under the root names the subject."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from storage.local_files import Refused, read_regular
from storage.sources.base import RawItem, Rejected, SourceChunk, SourceReader, inside, json_or_empty

# Files that describe a dataset rather than hold an image; never treated as images.
SIDE_EXTENSIONS = frozenset({".txt", ".json", ".md", ".csv", ".yaml", ".yml", ".html"})
MASK_SUFFIX = ".mask"  # "<key>.mask.png" beside "<key>.<ext>" is a foreground mask


class FolderReader(SourceReader):
    kind = "folder"

    @classmethod
    def claims(cls, path: str) -> bool:
        """Any file that is neither a side file nor a mask: the decoder judges the rest."""
        stem, suffix = os.path.splitext(path)
        return suffix.lower() not in SIDE_EXTENSIONS and os.path.splitext(stem)[1] != MASK_SUFFIX

    @classmethod
    def chunks(cls, root: str, paths: list[str], classes: tuple[tuple[str, str], ...],
               files_per_chunk: int) -> list[SourceChunk]:
        return [SourceChunk(cls.kind, root, tuple(paths[start : start + files_per_chunk]), classes)
                for start in range(0, len(paths), files_per_chunk)]

    @staticmethod
    def read(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
        root = os.path.realpath(chunk.root)
        listings: dict[str, set[str]] = {}  # one directory listing instead of a stat per side file
        for name in chunk.paths:
            if os.path.islink(name) and not inside(root, name):
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
                meta=json_or_empty(siblings.read(".json")),
            )


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
        if os.path.islink(path) and not inside(self.root, path):
            return None
        try:
            return read_regular(path, self.max_bytes)
        except Refused:
            return None
