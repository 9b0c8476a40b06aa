"""The app's read-only view of a dataset root: catalog queries, stats and stored images.

Gradio runs handlers on worker threads, and DuckDB refuses a second open of the catalog file
with another configuration while one is open, so every catalog access holds one lock.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from storage.catalog import connect
from storage.images import load_rgb
from storage.shards import ShardStore
from tamer import stats
from tamer.config import TamerConfig


@dataclass
class AppContext:
    """What every tab reads: the configuration, the root's store, a scratch folder for
    uploads and outputs (removed by `close`), and the kNN service URL tried first."""

    config: TamerConfig
    index_url: str | None = None
    store: ShardStore = field(init=False)
    work_dir: Path = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.store = ShardStore(self.config.root)
        self.work_dir = Path(tempfile.mkdtemp(prefix="tamer-app-"))

    def close(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        """Rows of one parameterized SELECT over the catalog views, as dicts."""
        with self._lock, connect(self.store, read_only=True) as con:
            cursor = con.execute(sql, list(params))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def stats(self) -> dict:
        """Exactly what `tamer stats --json` prints."""
        with self._lock, connect(self.store, read_only=True) as con:
            return stats.collect(self.store, con)

    def images(self, image_ids: list[str]) -> dict[str, Image.Image]:
        """The stored RGB images of these ids (missing ids are absent)."""
        if not image_ids:
            return {}
        found = self.rows("SELECT image_id, image FROM images WHERE image_id IN "
                          f"({', '.join('?' * len(image_ids))})", image_ids)
        return {row["image_id"]: load_rgb(row["image"]) for row in found}

    def image_bytes(self, image_id: str) -> bytes | None:
        """The stored (validated, RGB) bytes of one image."""
        found = self.rows("SELECT image FROM images WHERE image_id = ?", [image_id])
        return found[0]["image"] if found else None

