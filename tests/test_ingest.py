"""Ingest: DreamBench counts, hostile inputs on every executor, idempotence, kill safety."""

from __future__ import annotations

import collections
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from storage.catalog import connect
from storage.shards import ShardStore
from tamer.config import IngestSettings
from tasks.ingest import ingest_source
import hostile

REPO = Path(__file__).resolve().parents[1]


def table_counts(store: ShardStore) -> dict[str, int]:
    return {t: store.row_count(t) for t in ("images", "quarantine", "duplicates")}


def test_dreambench_counts_and_classes(dreambench, tmp_path, ray_local, prefect_server):
    from flows.ingest import ingest_flow

    report = ingest_flow(str(dreambench), root=str(tmp_path / "data"))
    store = ShardStore(str(tmp_path / "data"))
    expected = {d.name: len(list(d.glob("*.jpg"))) for d in dreambench.iterdir() if d.is_dir()}
    with connect(store) as con:
        rows = con.execute("SELECT subject, any_value(class_name), count(*) FROM images "
                           "GROUP BY 1").fetchall()
    assert len(expected) == 26
    assert {subject: count for subject, _, count in rows} == expected
    assert all(4 <= count <= 6 for count in expected.values())
    classes = {subject: cls for subject, cls, _ in rows}
    assert classes["bear_plushie"] == "stuffed animal" and classes["dog3"] == "dog"
    assert report["ingested"] == sum(expected.values()) and report["quarantined"] == 0


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_hostile_inputs_are_quarantined_with_reasons(tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    expect = hostile.build(tmp_path)
    store = ShardStore(str(tmp_path / "data"))
    settings = IngestSettings(executor=executor, files_per_chunk=4)
    report = ingest_source(str(tmp_path / "src"), store, settings)

    src = str(tmp_path / "src") + "/"
    images = {r["source"].replace(src, ""): r for r in store.read("images").to_pylist()}
    quarantine = {r["source"].replace(src, ""): r["reason"]
                  for r in store.read("quarantine").to_pylist()}
    duplicates = {r["source"].replace(src, "") for r in store.read("duplicates").to_pylist()}
    for name, want in expect.items():
        if want["outcome"] == "ingested":
            row = images[name]
            assert Image.open(io.BytesIO(row["image"])).mode == "RGB", name
            assert row["mode"] == want.get("mode", row["mode"])
            if "size" in want:
                assert (row["width"], row["height"]) == want["size"]
            if "flag" in want:
                assert want["flag"] in row["flags"]
            if want.get("text"):
                assert row["text"]
        elif want["outcome"] == "quarantined":
            assert quarantine.get(name) == want["reason"], (name, quarantine.get(name))
        else:
            assert name in duplicates
    # the parquet row pointing at subject_a/00.png holds the same bytes: a duplicate too
    assert duplicates == {"subject_b/copy_of_00.png", "table.parquet::1"}
    assert "README.md" not in quarantine
    assert report.quarantined == len(quarantine) and report.ingested == len(images)
    assert images["subject_a/00.png"]["subject"] == "subject_a"
    assert images["shard-000.tar::subject_t/000.png"]["subject"] == "subject_t"

    before = table_counts(store)
    again = ingest_source(str(tmp_path / "src"), store, settings)
    assert table_counts(store) == before
    assert again.ingested == 0 and again.quarantined == 0 and again.duplicates == 0


def test_added_files_land_in_new_shards_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(hostile.png_bytes(hostile.gradient(seed=i)))
    store = ShardStore(str(tmp_path / "data"))
    settings = IngestSettings(executor="local")
    first = ingest_source(str(src), store, settings)
    shards_before = [s.name for s in store.shards("images")]
    (src / "new.png").write_bytes(hostile.png_bytes(hostile.gradient(seed=50)))
    second = ingest_source(str(src), store, settings)
    assert (first.ingested, second.ingested, second.unchanged) == (3, 1, 3)
    assert [s.name for s in store.shards("images")][:1] == shards_before
    assert len(store.shards("images")) == 2
    assert first.fingerprint != second.fingerprint


KILL_SCRIPT = """
import sys
from storage.shards import ShardStore
from tamer.config import IngestSettings
from tasks.ingest import ingest_source
ingest_source(sys.argv[1], ShardStore(sys.argv[2]),
              IngestSettings(executor="local", shard_rows=10, files_per_chunk=10))
"""


def test_sigkilled_writer_leaves_catalog_readable_and_rerun_completes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    total = 400
    for i in range(total):
        (src / f"{i:04d}.png").write_bytes(hostile.png_bytes(hostile.noise(64, seed=i)))
    root = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(root)], env=env)
    manifest = root / "images" / "_manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and writer.poll() is None:
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.02)
    assert writer.poll() is None, "writer finished before it could be killed; use more files"
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    store = ShardStore(str(root))
    committed = store.row_count("images")
    assert 0 < committed < total
    with connect(store) as con:  # readable, and exactly the committed rows
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == committed

    ingest_source(str(src), store, IngestSettings(executor="local", shard_rows=50))
    ids = store.read("images", columns=["image_id", "source"]).to_pylist()
    assert len(ids) == total
    assert len({row["image_id"] for row in ids}) == total
    assert collections.Counter(row["source"] for row in ids).most_common(1)[0][1] == 1
