"""Small real datasets for tests: synth renders ingested into a fresh store."""

from __future__ import annotations

from pathlib import Path

from storage.shards import ShardStore
from tamer.config import IngestSettings
from tamer.synth import generate
from tasks.ingest import ingest_source


def ingested_synth(base: Path, objects: int, views: int, size: int, seed: int) -> ShardStore:
    """`objects` x `views` renders under base/src, ingested (serially) into base/data."""
    generate(base / "src", n_objects=objects, views=views, size=size, seed=seed)
    store = ShardStore(str(base / "data"))
    ingest_source(str(base / "src"), store, IngestSettings(executor="local"))
    return store
