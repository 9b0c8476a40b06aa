"""What every source reader shares: the picklable chunk of work, what reading yields, the reader
interface, and the helpers that keep untrusted side data and links in bounds."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class SourceChunk:
    """A unit of decoding work: some files of a folder, one tar, or one Parquet file."""

    kind: str  # the reader's kind: folder | tar | parquet
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


class SourceReader:
    """One source format. A reader of container files (`suffixes`) gets one chunk per file; the
    folder reader takes the loose image files nobody else claims, in batches."""

    kind: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()  # files of this format; () = loose files

    @classmethod
    def claims(cls, path: str) -> bool:
        return path.endswith(cls.suffixes) if cls.suffixes else False

    @classmethod
    def chunks(cls, root: str, paths: list[str], classes: tuple[tuple[str, str], ...],
               files_per_chunk: int) -> list[SourceChunk]:
        return [SourceChunk(cls.kind, root, (path,), classes) for path in paths]

    @staticmethod
    def read(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
        """Every entry of the chunk as an item or a rejection; never raises for bad members,
        and reads nothing larger than `max_bytes` into memory."""
        raise NotImplementedError


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def json_or_empty(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def inside(root: str, path: str) -> bool:
    """Whether a path, links resolved, stays under the (resolved) root."""
    return os.path.commonpath([root, os.path.realpath(path)]) == root
