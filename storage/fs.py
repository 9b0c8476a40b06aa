"""Storage URIs through fsspec, so local paths, `memory://` and `s3://` share one code path."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

@dataclass(frozen=True)
class Location:
    """A filesystem plus a root path on it; `join` builds paths under the root."""

    fs: fsspec.AbstractFileSystem
    root: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, path: str) -> str:
        """A URI another process (DuckDB, Ray) can open for a path on this filesystem."""
        if self.is_local:
            return path
        return self.fs.unstrip_protocol(path)

def open_location(uri: str) -> Location:
    """Resolve a dataset root URI; relative local paths become absolute."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        path = fs._strip_protocol(path)
    return Location(fs=fs, root=path.rstrip("/") or "/", uri=uri)
