"""`tamer ingest` and `tamer caption` at the same time on one root, as two real processes:
both succeed, every image is stored once, no caption names an image the table lacks, and a
second `tamer caption` captions exactly the images the first one missed."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from storage.shards import ShardStore
from tamer.config import IngestSettings
from tamer.synth import generate
from tasks.ingest import ingest_source

REPO = Path(__file__).resolve().parents[1]


def test_ingest_and_caption_at_once_lose_nothing_and_caption_nothing_twice(tmp_path,
                                                                           prefect_server):
    from prefect.settings import get_current_settings

    from tamer.cli import app

    generate(tmp_path / "first", n_objects=3, views=3, size=32, seed=11)
    generate(tmp_path / "second", n_objects=1, views=3, size=32, seed=12)
    root = str(tmp_path / "data")
    store = ShardStore(root)
    ingest_source(str(tmp_path / "first"), store, IngestSettings(executor="local"))
    # One commit per image and per caption, and captions slow enough (long generations) that
    # the ingest, started once captioning has begun, commits while it runs.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "ingest": {"executor": "local", "shard_rows": 1, "files_per_chunk": 1},
        "caption": {"executor": "local", "max_new_tokens": 24, "batch_size": 1, "shard_rows": 1}}))
    env = {**os.environ, "PREFECT_API_URL": get_current_settings().api.url,
           "PYTHONPATH": str(REPO)}
    common = [sys.executable, "-m", "tamer.cli", "--root", root, "--config", str(config)]
    caption = subprocess.Popen(common + ["caption"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while store.version("captions") < 1 and caption.poll() is None:  # captioning has begun
        assert time.monotonic() < deadline, "caption never committed"
        time.sleep(0.1)
    ingest = subprocess.Popen(common + ["ingest", str(tmp_path / "second")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for command in (caption, ingest):
        out, err = command.communicate(timeout=300)
        assert command.returncode == 0, (out + err)[-3000:]

    files = {str(p) for folder in ("first", "second") for p in (tmp_path / folder).rglob("*")
             if p.suffix == ".png" and not p.name.endswith(".mask.png")}
    images = store.read("images", ["image_id", "source"]).to_pylist()
    duplicates = store.read("duplicates", ["source"]).to_pylist()
    ids = collections.Counter(row["image_id"] for row in images)
    assert max(ids.values()) == 1, "an image stored twice"
    landed = collections.Counter(row["source"] for row in images + duplicates)
    assert set(landed) == files and max(landed.values()) == 1, "a file lost or stored twice"
    captioned = collections.Counter(store.read("captions", ["image_id"]).column(0).to_pylist())
    assert captioned and set(captioned) <= set(ids), "a caption names an image absent from images"
    assert max(captioned.values()) == 1

    again = CliRunner().invoke(app, ["--root", root, "--config", str(config), "caption",
                                     "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    missed = set(ids) - set(captioned)
    assert json.loads(again.stdout)["captioned"] == len(missed)
    rows = store.read("captions", ["image_id"]).column(0).to_pylist()
    assert len(rows) == len(set(rows)), "an image captioned twice"
    assert set(rows) == set(ids), "an image never captioned"
    assert set(rows) - set(captioned) == missed
