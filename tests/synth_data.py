"""Small real datasets for tests: synth renders ingested into a fresh store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from storage.shards import ShardStore
from tamer.config import IngestSettings
from tamer.synth import generate
from tasks.ingest import ingest_source

# The smallest evaluation a `tamer run` config can ask for (every method, a step or two each).
SMALL_EVAL_YAML = """
eval:
  subjects: 1
  prompts: 1
  seeds: 1
  steps: 2
  bootstrap: 10
  textual_inversion: {steps: 2}
  dreambooth_lora: {steps: 2}
  dreambooth: {steps: 2}
"""


def ingested_synth(base: Path, objects: int, views: int, size: int, seed: int) -> ShardStore:
    """`objects` x `views` renders under base/src, ingested (serially) into base/data."""
    generate(base / "src", n_objects=objects, views=views, size=size, seed=seed)
    store = ShardStore(str(base / "data"))
    ingest_source(str(base / "src"), store, IngestSettings(executor="local"))
    return store


UNDECODABLE_ID = "f" * 64


def add_undecodable_image(store: ShardStore) -> str:
    """Commit one images row whose bytes do not decode (as bit rot would leave it); its id."""
    good = store.read("images").slice(0, 1).to_pylist()[0]
    bad = {**good, "image_id": UNDECODABLE_ID, "source": "hand-written/bad.png", "mask": None,
           "image": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "ingested_at": dt.datetime.now(dt.UTC)}
    store.write("images", pa.Table.from_pylist([bad]))
    return UNDECODABLE_ID
