"""Local files read safely: regular files only, never more than a byte limit.

Sources are untrusted folders: a FIFO blocks `open` until a writer comes (forever), a device
may act when opened, and a huge file would be read whole into memory before any size check.
"""

from __future__ import annotations

import os
import stat


class Refused(Exception):
    """A file that must not be read; `reason` is a quarantine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_regular(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; raises Refused otherwise.

    Type and size come from stat before any open: opening a FIFO blocks until a writer
    comes (forever), and opening a device may act on it. The open is non-blocking and the
    opened file is checked again, and at most max_bytes + 1 bytes are read, so a path
    swapped or grown after the stat is still refused.
    """
    try:
        check_regular(os.stat(path), max_bytes)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as handle:
            check_regular(os.fstat(descriptor), max_bytes)
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise Refused("unreadable", f"{type(exc).__name__}: {exc}") from None
    if len(data) > max_bytes:
        raise Refused("too_large", f"more than max_bytes {max_bytes} bytes")
    return data


FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
              (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"))


def check_regular(info: os.stat_result, max_bytes: int | None = None) -> None:
    """Raise Refused unless stat says: a regular file, of at most max_bytes (when given)."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "not a file")
        raise Refused("not_regular_file", kind)
    if max_bytes is not None and info.st_size > max_bytes:
        raise Refused("too_large", f"{info.st_size} bytes > max_bytes {max_bytes}")
